"""``archsearch report``: a real tiny study with pruned, failed and running trials, reported from
the config, the output directory and the CSV alone; the HTML rendered in headless Chromium."""

from __future__ import annotations

import json
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
from archsearch.records import CELL_ATTR
from archsearch.report.build import build_report
from archsearch.search.overview import export

pytestmark = pytest.mark.slow

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


def test_report_from_the_config_of_a_running_study(experiment, tmp_path):
    out = run_cli("report", str(experiment.config))
    assert out.returncode == 0, out.stderr
    report_dir = experiment.out_dir / "report"
    printed = [Path(line) for line in out.stdout.splitlines()]
    assert {p.name for p in printed} == PNGS | {"report.md", "report.html"}
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
    assert "8K h1 (fANOVA): " in md and "8K h3: none (0 complete trials" in md
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


def test_report_from_the_output_directory_reads_its_storage(experiment, tmp_path):
    data, paths = build_report(experiment.out_dir, formats=("md",), output=tmp_path / "r")
    assert {p.name for p in paths} == PNGS | {"report.md"}, "md writes the PNGs it links to, not the HTML"
    assert data.from_storage and [c.label for c in data.cells] == ["8K h1", "8K h2", "8K h3"]
    rows = read_csv(experiment.out_dir / "experiment_results.csv")
    rows_md = table((tmp_path / "r" / "report.md").read_text())
    for h in (1, 2):
        done = [float(r["val_loss"]) for r in rows if r["horizon"] == str(h) and r["state"] == "COMPLETE"]
        assert rows_md[f"8K h{h}"]["best val loss"] == f"{min(done):.5f}"
    assert data.partial_notice().startswith("Partial results: 1 trial running/waiting")
    assert_pngs(tmp_path / "r")


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
    assert "finished trials only" in md and "(Spearman ρ)" in md
    assert (only_csv / "report" / "report.html").is_file()
    assert_pngs(only_csv / "report")


def test_an_output_directory_without_results_is_a_clear_error(tmp_path):
    out = run_cli("report", str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{tmp_path / 'experiment_results.csv'} does not exist" in out.stderr
    with pytest.raises(ArchsearchError, match=f"{tmp_path / 'nowhere'} does not exist"):
        build_report(tmp_path / "nowhere")
    with pytest.raises(ArchsearchError, match="nothing to report yet"):
        build_report(write_config(tmp_path))
    assert not (tmp_path / "out" / "archsearch.db").exists(), "reporting creates no empty storage"
