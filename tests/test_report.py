"""``archsearch report``: a real tiny study with pruned, failed and running trials, reported from
the config, the output directory and the CSV alone; the HTML rendered in headless Chromium."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from engine_helpers import read_csv, run_cli, write_config

from archsearch.config import load_config
from archsearch.errors import ArchsearchError
from archsearch.records import CELL_ATTR, STUDY_ATTR
from archsearch.report.build import build_report
from archsearch.search.overview import export

PNGS = {"scaling.png", "architecture_8K.png", "history_8K.png", "importance_8K.png"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """2 horizons x 6 trials with a median pruner; then, as a study still running would look: a
    failed trial in h1 and a cell h3 whose first trial is running; ``export`` puts the failed
    trial into the CSV."""
    tmp = tmp_path_factory.mktemp("report")
    config = write_config(
        tmp,
        n_trials=6,
        horizons=[1, 2],
        confirm=None,  # a search alone: the report's "not confirmed" side (confirmed cells: below)
        pruner={"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}},
        training_search_space={
            "learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-1},
            "epochs": {"type": "categorical", "choices": [2, 3]},
            "batch_size": {"type": "categorical", "choices": [32, 64]},
        },
    )
    out = run_cli("run", str(config), "--no-progress")
    assert out.returncode == 0, out.stderr
    out_dir = tmp / "out"
    url = f"sqlite:///{out_dir / 'archsearch.db'}"
    h1 = optuna.load_study(study_name="tiny_8K_h1", storage=url)
    model = h1.trials[0]
    h1.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params=model.params,
            distributions=model.distributions,
            user_attrs={**model.user_attrs, "fail_reason": "loss became NaN at epoch 1"},
        )
    )
    h3 = optuna.create_study(study_name="tiny_8K_h3", storage=url)
    h3.set_user_attr(CELL_ATTR, {"experiment": "tiny", "budget": 8000, "horizon": 3})
    h3.ask()  # RUNNING
    export(load_config(config))  # the CSV and best JSON files again, the failed trial included
    counts = {}
    for h in (1, 2, 3):
        study = optuna.load_study(study_name=f"tiny_8K_h{h}", storage=url)
        counts[h] = {s: sum(t.state.name == s for t in study.trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    assert counts[1]["FAIL"] == 1 and counts[3] == {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    best = {h: json.loads((out_dir / f"tiny_8K_h{h}_best.json").read_text()) for h in (1, 2)}
    return SimpleNamespace(config=config, out_dir=out_dir, url=url, counts=counts, best=best, tmp=tmp)


def table(markdown: str) -> dict[str, dict[str, str]]:
    """The best-per-cell table of report.md, by cell."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = [
        dict(zip(header, (v.strip() for v in line.strip("|").split("|")), strict=True)) for line in lines[2:]
    ]
    return {r["cell"]: r for r in rows}


def assert_pngs(directory: Path) -> None:
    import matplotlib.image

    for name in PNGS:
        data = (directory / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        image = matplotlib.image.imread(directory / name)
        assert image.shape[0] > 200 and image.shape[1] > 400, (name, image.shape)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium) to render report.html")


def render(html_file: Path, profile: Path) -> str:
    """The DOM of ``html_file`` after load, in headless Chromium without network."""
    out = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            html_file.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
def test_report_from_the_config_of_a_running_study(experiment, tmp_path):
    out = run_cli("report", str(experiment.config))
    assert out.returncode == 0, out.stderr
    report_dir = experiment.out_dir / "report"
    printed = [Path(line) for line in out.stdout.splitlines()]
    assert {p.name for p in printed} == PNGS | {"report.md", "report.html", "scaling.json"}
    assert all(p.parent == report_dir and p.is_file() for p in printed)
    assert "Partial results: 1 trial running/waiting (1 running, 0 waiting" in out.stderr

    md = (report_dir / "report.md").read_text()
    assert "> **Partial results: 1 trial running/waiting" in md
    rows = table(md)
    assert list(rows) == ["8K h1", "8K h2", "8K h3"]
    for h in (1, 2):
        row, best, counts = rows[f"8K h{h}"], experiment.best[h], experiment.counts[h]
        assert row["best val loss"] == f"{best['best_value']:.5f}"
        assert row["trial"] == str(best["trial"])
        assert row["d_model"] == str(best["architecture"]["d_model"])
        assert row["n_layers"] == str(best["architecture"]["n_layers"])
        assert row["params"] == f"{best['architecture']['param_count']:,}"
        assert row["lr"] == f"{best['training']['learning_rate']:.2e}"
        assert (row["complete"], row["pruned"], row["failed"]) == tuple(
            str(counts[s]) for s in ("COMPLETE", "PRUNED", "FAIL")
        )
    assert rows["8K h1"]["failed"] == "1"
    assert rows["8K h3"]["best val loss"] == "no complete trial" and rows["8K h3"]["running"] == "1"
    for name in PNGS:
        assert f"]({name})" in md
    assert re.search(r"8K h1: none \(too few trials \(\d complete; importance needs 20\)\)", md)
    assert "8K h3: none (too few trials (0 complete; importance needs 20))" in md
    assert "8K h1: not confirmed (single best trial): d" in md and "not used for selection" not in md
    assert_pngs(report_dir)

    page = (report_dir / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and page.count("data:image/png;base64,") == 4
    dom = render(report_dir / "report.html", tmp_path / "chromium-profile")
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(1))
    total = re.search(r'data-images-total="(\d+)"', body.group(1))
    assert loaded and total, body.group(0)
    assert loaded.group(1) == total.group(1) == "4"
    tbody = re.search(r'<table id="best-per-cell">.*?<tbody>(.*?)</tbody>', dom, re.S)
    assert tbody and tbody.group(1).count("<tr") == 3
    assert 'id="partial"' in dom and "Partial results" in dom


@pytest.mark.slow
def test_report_from_the_output_directory_reads_its_storage(experiment, tmp_path):
    data, paths = build_report(experiment.out_dir, formats=("md",), output=tmp_path / "r")
    assert {p.name for p in paths} == PNGS | {"report.md", "scaling.json"}, (
        "md writes the PNGs it links to, not the HTML"
    )
    assert data.from_storage and [c.label for c in data.cells] == ["8K h1", "8K h2", "8K h3"]
    rows = read_csv(experiment.out_dir / "experiment_results.csv")
    rows_md = table((tmp_path / "r" / "report.md").read_text())
    for h in (1, 2):
        done = [float(r["val_loss"]) for r in rows if r["horizon"] == str(h) and r["state"] == "COMPLETE"]
        assert rows_md[f"8K h{h}"]["best val loss"] == f"{min(done):.5f}"
    assert data.partial_notice().startswith("Partial results: 1 trial running/waiting")
    assert_pngs(tmp_path / "r")


@pytest.mark.slow
def test_report_from_the_csv_alone(experiment, tmp_path):
    only_csv = tmp_path / "copy"
    only_csv.mkdir()
    shutil.copy(experiment.out_dir / "experiment_results.csv", only_csv)
    data, _ = build_report(only_csv, formats=("md", "html"))
    assert not data.from_storage
    md = (only_csv / "report" / "report.md").read_text()
    rows = table(md)
    assert list(rows) == ["8K h1", "8K h2"], "the CSV knows finished trials only"
    csv_rows = read_csv(only_csv / "experiment_results.csv")
    for h in (1, 2):
        mine = [r for r in csv_rows if r["horizon"] == str(h)]
        done = [float(r["val_loss"]) for r in mine if r["state"] == "COMPLETE"]
        assert rows[f"8K h{h}"]["best val loss"] == f"{min(done):.5f}"
        assert rows[f"8K h{h}"]["failed"] == str(sum(r["state"] == "FAIL" for r in mine))
    assert rows["8K h1"]["failed"] == "1"
    assert "running" not in rows["8K h1"] and "Partial results" not in md
    assert "finished trials only" in md and "too few trials (" in md
    assert (only_csv / "report" / "report.html").is_file()
    assert_pngs(only_csv / "report")


@pytest.mark.slow
def test_an_output_directory_without_results_is_a_clear_error(tmp_path):
    out = run_cli("report", str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{tmp_path / 'experiment_results.csv'} does not exist" in out.stderr
    with pytest.raises(ArchsearchError, match=f"{tmp_path / 'nowhere'} does not exist"):
        build_report(tmp_path / "nowhere")
    with pytest.raises(ArchsearchError, match="nothing to report yet"):
        build_report(write_config(tmp_path))
    assert not (tmp_path / "out" / "archsearch.db").exists(), "reporting creates no empty storage"


# -- the confirmed answer and how far to trust it: hand-built studies (no engine run) ---------------
WIDTHS = (16, 24, 32, 48)
DEPTHS = (1, 2, 4, 8)
DISTRIBUTIONS = {
    "arch_width": optuna.distributions.IntDistribution(0, len(WIDTHS) - 1),
    "arch_depth": optuna.distributions.IntDistribution(0, len(DEPTHS) - 1),
    "learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
}


def n_params(d: int, layers: int) -> int:
    return 12 * d * d * layers + 400 * d


def add_search(study, d, layers, lr, loss, state="COMPLETE", coverage=False):
    """A search trial as the engine stores it (setup, result; the structured encoding's params)."""
    budget, horizon = study.user_attrs[CELL_ATTR]["budget"], study.user_attrs[CELL_ATTR]["horizon"]
    setup = {
        **{"experiment": "hand", "budget": budget, "horizon": horizon, "d_model": d, "n_layers": layers},
        **{"n_heads": 1, "d_ff": 4 * d, "param_count": n_params(d, layers), "baseline_loss": 0.7},
        **{"training": {"learning_rate": lr, "weight_decay": 1e-4}, "baseline_test_loss": 0.628},
    }
    state = getattr(optuna.trial.TrialState, state)
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=loss if state == optuna.trial.TrialState.COMPLETE else None,
            params={"arch_width": WIDTHS.index(d), "arch_depth": DEPTHS.index(layers), "learning_rate": lr},
            distributions=DISTRIBUTIONS,
            user_attrs={"setup": setup, "result": {"test_loss": loss + 0.01}, "coverage": coverage},
            intermediate_values={0: loss} if state == optuna.trial.TrialState.PRUNED else None,
        )
    )
    return study.trials[-1]


def add_confirm(study, source, seed, loss, test_loss):
    """A confirmation trial repeating ``source``'s configuration (archsearch.search.confirm)."""
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE,
            value=loss,
            params=source.params,
            distributions=source.distributions,
            user_attrs={
                "setup": source.user_attrs["setup"],
                "result": {"test_loss": test_loss},
                **{"stage": "confirm", "confirm_of": source.number, "confirm_seed": seed},
            },
        )
    )


def cell_study(
    url, budget, winner, runner, mean, n_search=22, spread=0.002, gap=0.01, confirm=True, horizon=3
):
    """A cell of WIDTHS x DEPTHS (its fingerprint's list) whose confirmed winner is ``winner``
    (d_model, n_layers), mean ``mean`` over 3 seeds +-``spread``, and runner-up ``runner``, ``gap``
    worse; ``n_search`` more search trials, their loss driven by the learning rate."""
    study = optuna.create_study(study_name=f"hand_{budget}_h{horizon}", storage=url)
    study.set_user_attr(CELL_ATTR, {"experiment": "hand", "budget": budget, "horizon": horizon})
    keys = [f"d{d}-L{n}-h1-ff{4 * d}" for d in WIDTHS for n in DEPTHS]
    study.set_user_attr(STUDY_ATTR, {"encoding": {"name": "structured", "architectures": keys}})
    source_w = add_search(study, *winner, 3e-3, mean + 0.003)
    source_r = add_search(study, *runner, 2e-3, mean + 0.004)
    for i in range(n_search):
        lr = 1e-4 * 10 ** (2 * ((i * 0.37) % 1))
        add_search(
            study, WIDTHS[i % 4], DEPTHS[(i // 4) % 4], lr, mean + 0.02 + 0.05 * abs(math.log10(lr) + 2.5)
        )
    if confirm:
        for seed, delta in enumerate((-spread, 0.0, spread)):
            add_confirm(study, source_w, seed, mean + delta, 0.642)
            add_confirm(study, source_r, seed, mean + gap + delta, 0.65)
    return study


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Three budgets of one horizon, each confirmed; winners' losses on 4 * N^-0.3 exactly (over
    seeds), the 25K winner on two edges (smallest d_model, most layers), the 100K one inside."""
    tmp = tmp_path_factory.mktemp("confirmed")
    url = f"sqlite:///{tmp / 'archsearch.db'}"
    winners = {25_000: ((16, 8), (24, 4)), 100_000: ((32, 4), (24, 2)), 400_000: ((48, 2), (48, 4))}
    for budget, (w, r) in winners.items():
        cell_study(
            url, budget, w, r, mean=4.0 * n_params(*w) ** -0.3, gap=0.001 if budget == 100_000 else 0.01
        )
    data, paths = build_report(tmp)
    report = tmp / "report"
    return SimpleNamespace(
        tmp=tmp,
        url=url,
        data=data,
        paths=paths,
        md=(report / "report.md").read_text(),
        page=(report / "report.html").read_text(),
        scaling=json.loads((report / "scaling.json").read_text()),
    )


def first_screen_md(md: str) -> list[str]:
    start = md.index("## The answer per budget and horizon")
    return [
        line for line in md[start : md.index("## The search's best")].splitlines() if line.startswith("- ")
    ]


def test_the_first_screen_gives_each_budgets_confirmed_answer_interval_and_runner_up(confirmed):
    lines = first_screen_md(confirmed.md)
    k25 = next(
        line for line in lines if line.startswith("- 25K h3: confirmed d16 L8 h1 ff64 (30,976 parameters)")
    )
    mean = 4.0 * n_params(16, 8) ** -0.3
    half = 4.302653 * 0.002 / math.sqrt(3)  # t(0.975, 2) x std / sqrt(3)
    assert f"val loss {mean:.5f} ± {half:.5f} (mean ± 95% t-interval over 3 seeds)" in k25
    assert "Runner-up d24 L4 h1 ff96" in k25 and "separated from the winner" in k25
    k100 = next(line for line in lines if line.startswith("- 100K h3: confirmed d32 L4"))
    assert "not separated: the intervals overlap" in k100
    test_line = "Test loss 0.64200, worse than the constant predictor's 0.62800 (not used for selection)."
    assert test_line in k25
    assert sum("Test loss" in line for line in lines) == 3, "the winner's test loss only, once per cell"
    assert confirmed.md.index("## The answer per budget and horizon") < confirmed.md.index("| cell |")


def test_the_first_screen_warns_of_an_edge_of_the_space_with_the_key_to_widen(confirmed):
    warnings = [line for line in first_screen_md(confirmed.md) if "Edge of the space" in line]
    assert len(warnings) == 2, warnings  # 25K (d16, L8) and 400K (d48); 100K's d32 L4 is inside
    w25, w400 = warnings
    assert "25K h3: the confirmed winner (d16 L8 h1 ff64) lies on an edge of the space" in w25
    assert "the smallest d_model (16) and the most layers (8) of the cell's 16 architectures" in w25
    assert "Widen architecture.d_model (values below 16) and architecture.n_layers (values above 8)" in w25
    assert "the largest d_model (48)" in w400 and "layers" not in w400.split("Widen")[1]


def test_the_first_screen_gives_the_fitted_exponent_and_scaling_json(confirmed):
    line = next(line for line in first_screen_md(confirmed.md) if line.startswith("- h3 scaling: "))
    assert "alpha = 0.300 (95% interval " in line and "pure power law" in line and "over 3 budgets" in line
    assert "predicted val loss at 4M parameters: " in line
    (fit,) = confirmed.scaling["fits"]
    assert fit["form"] == "pure power law" and fit["n_points"] == 3 and fit["reason"] is None
    assert fit["alpha"] == pytest.approx(0.3, abs=1e-6)
    assert fit["alpha_low"] < 0.3 < fit["alpha_high"]
    assert [p["n_params"] for p in fit["points"]] == [n_params(16, 8), n_params(32, 4), n_params(48, 2)]
    assert fit["next_budget"] == 4_000_000 and fit["predicted"] == pytest.approx(4.0 * 4e6**-0.3, rel=1e-6)
    assert confirmed.tmp / "report" / "scaling.json" in confirmed.paths


def test_the_html_first_screen_matches_the_markdown(confirmed):
    page = confirmed.page
    answer = re.search(r'<ul class="answer" id="answer">(.*?)</ul>', page, re.S)
    assert answer and page.index('id="answer"') < page.index('id="best-per-cell"')
    items = re.findall(r'<li class="(\w+)">(.*?)</li>', answer.group(1))
    assert [k for k, _ in items].count("warning") == 2 and [k for k, _ in items].count("scaling") == 1
    assert "confirmed d16 L8 h1 ff64" in items[0][1] and "not used for selection" in items[0][1]


def test_the_storage_is_shown_by_its_absolute_path(confirmed, tmp_path, monkeypatch):
    monkeypatch.chdir(confirmed.tmp)
    data, _ = build_report(confirmed.tmp, formats=("md",), output=tmp_path, storage="sqlite:///archsearch.db")
    assert data.source == f"storage {confirmed.tmp.resolve() / 'archsearch.db'} (SQLite)"


def test_a_study_without_confirmation_falls_back_to_its_best_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'archsearch.db'}"
    cell_study(url, 25_000, (24, 2), (24, 4), mean=0.6, confirm=False)
    build_report(tmp_path, formats=("md",))
    md = (tmp_path / "report" / "report.md").read_text()
    (line,) = [line for line in first_screen_md(md) if line.startswith("- 25K h3")]
    assert line.startswith("- 25K h3: not confirmed (single best trial): d24 L2 h1 ff96")
    assert "one seed: no interval" in line and "not used for selection" not in md
    assert "h3 scaling: not fitted: 1 budget with a result; a fit needs at least 2." in md
    cell_study(url, 100_000, (32, 4), (24, 2), mean=0.5, confirm=False)
    build_report(tmp_path, formats=("md",))
    md = (tmp_path / "report" / "report.md").read_text()
    assert "(2 of 2 points a single best trial, not confirmed)" in md
    assert "No interval: no budget has more than one seed to resample." in md


def test_importance_needs_20_trials_names_its_evaluator_and_readable_parameters(tmp_path):
    url = f"sqlite:///{tmp_path / 'archsearch.db'}"
    cell_study(url, 25_000, (24, 2), (24, 4), mean=0.6, n_search=22)  # 24 search trials
    cell_study(url, 100_000, (24, 2), (24, 4), mean=0.5, n_search=5)  # 7
    data, _ = build_report(tmp_path, formats=("md",))
    many, few = data.cells
    assert many.importance_method == "fANOVA (optuna.importance.FanovaImportanceEvaluator)"
    assert set(many.importance) == {"d_model", "n_layers", "learning_rate"}
    assert next(iter(many.importance)) == "learning_rate", "the loss is driven by the learning rate"
    assert many.importance_note == "over 24 complete search trials", "the 6 confirmation trials are left out"
    assert not few.importance and few.importance_note == "too few trials (7 complete; importance needs 20)"
    md = (tmp_path / "report" / "report.md").read_text()
    assert (
        "25K h3, fANOVA (optuna.importance.FanovaImportanceEvaluator) over 24 complete search trials: " in md
    )
    assert "arch_width" not in md and "arch_depth" not in md


def test_every_parameter_an_encoding_suggests_has_a_readable_name():
    from archsearch.architecture import Architecture
    from archsearch.report.importance import PARAM_LABELS
    from archsearch.space.encodings import IndexEncoding, StructuredEncoding

    names: list[str] = []

    class Recorder:
        def suggest_int(self, name, low, high):
            names.append(name)
            return low

        def suggest_categorical(self, name, choices):
            names.append(name)
            return choices[0]

    archs = [Architecture(d, n, h, r * d) for d in (16, 32) for n in (1, 2) for h in (1, 2) for r in (2, 4)]
    for encoding in (StructuredEncoding(archs), IndexEncoding(archs)):
        encoding.suggest(Recorder())
    assert set(names) == set(PARAM_LABELS), "every encoded name, and only those"
    assert PARAM_LABELS["arch_width"] == "d_model" and PARAM_LABELS["arch_ratio"] == "d_ff ratio"


def test_the_edge_keys_are_keys_of_the_config():
    import attrs

    from archsearch.config.schema import Config
    from archsearch.report.trust import EDGE_KEYS

    for key in EDGE_KEYS.values():
        section, field = key.split(".")
        default = attrs.fields_dict(Config)[section].default
        assert field in attrs.fields_dict(type(default.factory())), key


@pytest.mark.parametrize(
    ("winner", "where"),
    [
        ((16, 2), ["the smallest d_model (16)"]),
        ((48, 2), ["the largest d_model (48)"]),
        ((24, 1), []),  # one layer is the floor: nothing to widen below it
        ((32, 8), ["the most layers (8)"]),
        ((24, 2), []),
    ],
)
def test_the_edge_warning_names_each_edge(winner, where):
    from archsearch.report.cells import CellReport
    from archsearch.report.trust import edge_warning

    cell = CellReport("x", 25_000, 3, "x_25K_h3", architectures=[(d, n) for d in WIDTHS for n in DEPTHS])
    cell.best = {"d_model": winner[0], "n_layers": winner[1], "n_heads": 1, "d_ff": 4 * winner[0]}
    warning = edge_warning(cell)
    if not where:
        assert warning is None
    else:
        assert (
            warning.startswith(f"25K h3: the best trial (d{winner[0]} L{winner[1]} h1 ff")
            and where[0] in warning
        )
    deeper = CellReport("x", 25_000, 3, "x", architectures=[(d, n) for d in WIDTHS for n in (2, 4, 8)])
    deeper.best = {"d_model": 24, "n_layers": 2}
    assert "the fewest layers (2)" in edge_warning(
        deeper
    ) and "architecture.n_layers (values below 2)" in edge_warning(deeper)
    one_width = CellReport("x", 25_000, 3, "x", architectures=[(16, n) for n in DEPTHS])
    one_width.best = {"d_model": 16, "n_layers": 2}
    assert edge_warning(one_width) is None, "an axis with one value has no edge"


def test_legends_show_only_what_is_drawn_and_fit_inside_the_figures(tmp_path):
    from archsearch.report.figures import draw_history, draw_scaling
    from archsearch.report.loading import load
    from archsearch.report.plot import legends_inside
    from archsearch.report.trust import scaling_fits

    url = f"sqlite:///{tmp_path / 'archsearch.db'}"
    study = cell_study(url, 25_000, (24, 2), (24, 4), mean=0.6, n_search=3)
    add_search(study, 16, 1, 1e-3, 0.7, coverage=True)
    add_search(study, 16, 2, 1e-3, 0.8, state="PRUNED")
    data = load(tmp_path)
    data.scaling = scaling_fits(data)
    history = draw_history(data, 25_000)  # one panel: the narrowest figure
    (legend,) = history.legends
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == [
        "complete, coverage trial",
        "complete, sampler's pick",
        "pruned (loss when stopped)",
        "best so far",
    ]
    assert legends_inside(history)
    scaling = draw_scaling(data)
    assert legends_inside(scaling)
    labels = [t.get_text() for t in scaling.axes[0].get_legend().get_texts()]
    assert labels == ["h3: constant predictor", "h3: confirmed winner (mean, 95% interval)"], (
        "no fit: none drawn"
    )
    cell_study(url, 100_000, (32, 4), (24, 2), mean=0.5, confirm=False)
    data = load(tmp_path)
    data.scaling = scaling_fits(data)
    history = draw_history(data, 100_000)
    assert [t.get_text() for t in history.legends[0].get_texts()] == [
        "complete, sampler's pick",
        "best so far",
    ]
    labels = [t.get_text() for t in draw_scaling(data).axes[0].get_legend().get_texts()]
    assert "h3: best single trial (not confirmed)" in labels and any(
        "pure power law, alpha" in t for t in labels
    )


def test_each_kind_of_extreme_is_named_once_per_panel(confirmed):
    from archsearch.report.architecture import _lr_norm, architecture_figure

    calls = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.annotate

    def spy(self, text, *args, **kwargs):
        calls.append((id(self), text))
        return original(self, text, *args, **kwargs)

    matplotlib.axes.Axes.annotate = spy
    try:
        architecture_figure(confirmed.data, 25_000, _lr_norm(confirmed.data))
    finally:
        matplotlib.axes.Axes.annotate = original
    panels: dict[int, list[str]] = {}
    for panel, text in calls:
        panels.setdefault(panel, []).extend(text.split(", "))
    assert len(panels) == 3
    for names in panels.values():
        assert sorted(names) == ["max d_model", "max layers", "min d_model", "min layers"], names


def test_confirmation_rows_of_a_csv_are_left_out_with_a_note(confirmed, tmp_path):
    import csv

    from archsearch.records import ALL_COLUMNS, trial_record

    study = optuna.load_study(study_name="hand_25000_h3", storage=confirmed.url)
    rows = [trial_record(t, study.study_name) for t in study.trials]
    with (tmp_path / "experiment_results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ALL_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    data, _ = build_report(tmp_path / "experiment_results.csv", formats=("md",))
    (cell,) = data.cells
    assert cell.n_complete == 24 and cell.n_confirm == 6 and cell.confirmation is None
    assert cell.confirm_note.startswith(
        "not confirmed here (single best trial): the CSV holds 6 confirmation rows"
    )
    assert cell.importance_method.startswith("Spearman") and "d_model" in cell.importance
