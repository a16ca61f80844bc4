"""The search engine end to end: the real CLI on real and synthetic data at small sizes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from engine_helpers import REPO, read_csv, run_cli, tiny_config, write_config
from hypothesis import given
from hypothesis import strategies as st

from archsearch.config import structure
from archsearch.errors import ArchsearchError
from archsearch.records import COLUMNS
from archsearch.search import queueing
from archsearch.search.engine import Engine
from archsearch.search.matrix import coverage_order
from archsearch.search.study import enqueue_coverage, sampler_seed
from archsearch.storage import make_storage

pytestmark = pytest.mark.slow


def test_seed_integration_three_trials_on_spy_2m_h1(tmp_path, spy_csv):
    """The plan's Task 8: 3 trials, 2M budget, h1, real SPY data, few epochs."""
    config = {
        "experiment": "spy",
        "budgets": ["2M"],
        "horizons": [1],
        "data": {"source": str(spy_csv), "derived_features": True},
        "task": {"kind": "threshold", "threshold": 0.01},
        "split": {"method": "rows", "train_rows": [0, 700], "val_rows": [700, 900], "test_rows": [900, 1100]},
        "training": {"device": "cpu", "epochs": 1, "batch_size": 128},
        "training_search_space": {"learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-3}},
        "n_trials": 3,
        "confirm": None,
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "spy.yaml"
    path.write_text(yaml.safe_dump(config))
    out = run_cli("run", str(path), "--no-progress")
    assert out.returncode == 0, out.stderr
    rows = read_csv(tmp_path / "out" / "experiment_results.csv")
    assert list(rows[0])[: len(COLUMNS)] == list(COLUMNS)
    assert len(rows) == 3 and {r["state"] for r in rows} == {"COMPLETE"}
    archs = {(r["d_model"], r["n_layers"], r["d_ff"]) for r in rows}
    assert len(archs) == 3, "coverage starts with the extremes: three different architectures"
    for r in rows:
        assert 1_500_000 <= int(r["param_count"]) <= 2_500_000
        assert float(r["val_loss"]) > 0 and r["budget"] == "2M" and r["horizon"] == "1"
    best = json.loads((tmp_path / "out" / "spy_2M_best.json").read_text())
    for key in (
        "experiment",
        "budget",
        "best_params",
        "best_value",
        "n_trials_completed",
        "n_trials_pruned",
        "timestamp",
        "study_name",
        "optuna_version",
        "architecture",
    ):
        assert key in best
    assert best["n_trials_completed"] == 3 and best["study_name"] == "spy_2M_h1"
    assert best["best_value"] == min(float(r["val_loss"]) for r in rows)
    assert set(best["architecture"]) == {"d_model", "n_layers", "n_heads", "d_ff", "param_count"}
    assert best["timestamp"].endswith("Z")
    # One log line per trial with the architecture and training parameters.
    lines = [line for line in out.stderr.splitlines() if " trial " in line and "COMPLETE" in line]
    assert len(lines) == 3 and all("d_model=" in line and "lr=" in line for line in lines)
    assert "best val_loss" in out.stdout and "results in" in out.stdout


def trial_params(storage_url: str, study: str) -> list[tuple]:
    s = optuna.load_study(study_name=study, storage=storage_url)
    return [(t.number, t.state.name, tuple(sorted(t.params.items())), t.value) for t in s.trials]


def test_seeded_runs_repeat_exactly(tmp_path):
    results = []
    for name in ("a", "b"):
        path = write_config(tmp_path, f"{name}.yaml", output_dir=str(tmp_path / name))
        out = run_cli("run", str(path), "--no-progress")
        assert out.returncode == 0, out.stderr
        results.append(trial_params(f"sqlite:///{tmp_path / name / 'archsearch.db'}", "tiny_8K_h2"))
    assert results[0] == results[1]
    assert len({p for _, _, p, _ in results[0]}) == 7


def learning_rates(storage_url: str, study: str = "tiny_8K_h2") -> list[float]:
    s = optuna.load_study(study_name=study, storage=storage_url)
    return [t.params["learning_rate"] for t in s.trials if t.state.name == "COMPLETE"]


def test_a_resumed_seeded_run_draws_new_parameters(tmp_path):
    """The resumed session's sampler must not replay the first session's random draws."""
    path = write_config(tmp_path, n_trials=3, allocation={"strategy": "none"})
    for n in ("3", "6"):
        out = run_cli("run", str(path), "--no-progress", "--n-trials", n)
        assert out.returncode == 0, out.stderr
    rates = learning_rates(f"sqlite:///{tmp_path / 'out' / 'archsearch.db'}")
    assert len(rates) == 6 and len(set(rates)) == 6, rates


@given(seed=st.integers(0, 2**32 - 1), nonce=st.integers(0, 2**63 - 1), first=st.booleans())
def test_sampler_seed_is_stable_and_distinct(seed, nonce, first):
    derived = sampler_seed(seed, first, nonce)
    assert derived == sampler_seed(seed, first, nonce)
    assert 0 <= derived < 2**32  # what numpy's RandomState (Optuna's samplers) takes
    if first:
        assert derived == seed
    else:
        assert derived != sampler_seed(seed, False, nonce + 1)
    assert sampler_seed(None, first, nonce) is None


def test_coverage_tries_every_architecture_first(tmp_path):
    config = structure(tiny_config(tmp_path, n_trials=6))
    result = Engine(config).run()
    study = optuna.load_study(study_name="tiny_8K_h2", storage=config.storage_url)
    archs = [
        "d{d_model}-L{n_layers}-h{n_heads}-ff{d_ff}".format(**t.user_attrs["setup"]) for t in study.trials
    ]
    assert len(set(archs[:5])) == 5, "the 5 architectures of the band come first"
    # smallest d_model, largest d_model, most layers (the first by count of each), then the rest
    assert archs[:3] == ["d16-L1-h2-ff32", "d24-L1-h2-ff48", "d16-L3-h2-ff32"]
    assert all(t.user_attrs["coverage"] for t in study.trials[:5])
    assert result.cells[0].n_complete == 6


def coverage_setup(tmp_path):
    config = structure(tiny_config(tmp_path, n_trials=6))
    engine = Engine(config)
    (cell,) = engine.cells()
    study, encoding = engine.open_study(cell, make_storage(config))
    optuna.create_study(study_name=f"{study.study_name}:coverage", storage=study._storage)  # a winner
    order = coverage_order(cell.architectures, 1)
    return config, cell, study, encoding, order


def queued_architectures(study) -> list[tuple]:
    return [tuple(sorted(t.system_attrs["fixed_params"].items())) for t in study.trials]


def test_coverage_waits_for_a_slow_winner_and_completes_a_dead_ones(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(queueing, "STALL_S", 1.0)
    config, cell, study, encoding, order = coverage_setup(tmp_path)

    def slow_winner():  # 0.4 s a trial, 2 s in all: longer than the stall limit, never stalled
        for arch in order:
            study.enqueue_trial(encoding.params(arch), user_attrs={"coverage": True})
            time.sleep(0.4)
        study.set_user_attr("coverage_enqueued", len(order))

    winner = threading.Thread(target=slow_winner)
    winner.start()
    assert enqueue_coverage(study, config, cell, encoding) == 0
    winner.join()
    assert len(study.trials) == 5 and len(set(queued_architectures(study))) == 5

    config, cell, study, encoding, order = coverage_setup(tmp_path / "dead")
    for arch in order[:2]:  # the winner died after two
        study.enqueue_trial(encoding.params(arch), user_attrs={"coverage": True})
    started = time.monotonic()
    assert enqueue_coverage(study, config, cell, encoding) == 5
    assert 1.0 <= time.monotonic() - started < 5
    assert len(study.trials) == 5 and len(set(queued_architectures(study))) == 5


def test_resume_after_kill_9_loses_nothing(tmp_path):
    path = write_config(
        tmp_path,
        n_trials=8,
        data={"synthetic_rows": 1500},
        training_search_space={"epochs": {"type": "categorical", "choices": [6]}},
    )
    db = tmp_path / "out" / "archsearch.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "archsearch", "run", str(path), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    killed_after = None
    while time.time() < deadline:
        time.sleep(0.2)
        if not db.exists():
            continue
        try:
            trials = optuna.load_study(study_name="tiny_8K_h2", storage=f"sqlite:///{db}").trials
        except Exception:  # noqa: BLE001 - the study may not exist yet
            continue
        states = [t.state.name for t in trials]
        if states.count("COMPLETE") >= 2 and "RUNNING" in states:
            proc.send_signal(signal.SIGKILL)
            killed_after = {t.number: t.value for t in trials if t.state.name == "COMPLETE"}
            break
    proc.wait(timeout=30)
    assert killed_after, "the run finished before it could be killed mid-trial"
    out = run_cli("run", str(path), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "died mid-trial" in out.stderr or "failed and queued again" in out.stderr
    study = optuna.load_study(study_name="tiny_8K_h2", storage=f"sqlite:///{db}")
    complete = {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}
    assert len(complete) == 8
    assert all(complete[n] == v for n, v in killed_after.items()), "completed trials are kept unchanged"
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retried) == 1 and retried[0].params == failed[0].params
    rows = read_csv(tmp_path / "out" / "experiment_results.csv")
    keys = [(r["study_name"], r["trial"]) for r in rows]
    assert len(keys) == len(set(keys)) == 9  # 8 complete + the killed one, recorded as failed
    assert sum(r["state"] == "COMPLETE" for r in rows) == 8


def test_changed_space_on_resume_is_a_clear_error(tmp_path):
    path = write_config(tmp_path, n_trials=2)
    assert run_cli("run", str(path), "--no-progress").returncode == 0
    path = write_config(
        tmp_path,
        n_trials=3,
        training_search_space={"learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-2}},
        architecture={"d_model": [8, 16]},
    )
    out = run_cli("run", str(path), "--no-progress")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "study 'tiny_8K_h2' in the storage was created with another search" in out.stderr
    assert "the architecture list changed (5 -> 3" in out.stderr and "removed ['d24-L1-h2-ff48'" in out.stderr
    assert "training_search_space.learning_rate" in out.stderr


SINK_PLUGINS = """
from pathlib import Path
from archsearch import hookimpl
from archsearch.plugin.registry import SinkPlugin


class Broken:
    def trial_finished(self, record, cell):
        raise RuntimeError("disk on fire")

    def cell_finished(self, cell):
        pass

    def close(self):
        pass


class StopAfterTwo:
    def __init__(self, output_dir, config):
        self.output_dir = Path(output_dir)

    def trial_finished(self, record, cell):
        if cell.n_complete % 2 == 0 and not record.get("replayed"):
            (self.output_dir / "STOP").write_text("")

    def cell_finished(self, cell):
        pass

    def close(self):
        pass


@hookimpl
def archsearch_register_sinks():
    return [
        SinkPlugin("broken", lambda output_dir, config: Broken()),
        SinkPlugin("stop-after-two", StopAfterTwo),
    ]
"""


def test_a_raising_sink_is_disabled_and_the_study_goes_on(tmp_path):
    (tmp_path / "my_sinks.py").write_text(SINK_PLUGINS)
    path = write_config(tmp_path, n_trials=3, sinks=["broken", "csv", "json"], plugins=["my_sinks"])
    out = run_cli("run", str(path), "--no-progress", env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("sink 'broken' failed (RuntimeError: disk on fire)") == 1
    assert len(read_csv(tmp_path / "out" / "experiment_results.csv")) == 3


def test_stop_file_finishes_the_trial_and_prints_the_resume_command(tmp_path):
    (tmp_path / "my_sinks.py").write_text(SINK_PLUGINS)
    path = write_config(tmp_path, n_trials=6, sinks=["csv", "stop-after-two"], plugins=["my_sinks"])
    out = run_cli("run", str(path), "--no-progress", env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 3, out.stderr  # stopped, not finished
    assert "Resume with:" in out.stdout and f"python -m archsearch run {path} --no-progress" in out.stdout
    assert len(read_csv(tmp_path / "out" / "experiment_results.csv")) == 2
    assert not (tmp_path / "out" / "STOP").exists()
    out = run_cli("run", str(path), "--no-progress", env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 3
    # The resumed run goes on until the plugin drops STOP again, at 4 complete trials.
    assert len(read_csv(tmp_path / "out" / "experiment_results.csv")) == 4


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_current_trial_and_exits_with_the_stopped_status(tmp_path, sig):
    path = write_config(
        tmp_path,
        n_trials=50,
        data={"synthetic_rows": 1500},
        training_search_space={"epochs": {"type": "categorical", "choices": [3]}},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "archsearch", "run", str(path), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    csv_path = tmp_path / "out" / "experiment_results.csv"
    deadline = time.time() + 60
    while time.time() < deadline and not (csv_path.exists() and len(read_csv(csv_path)) >= 1):
        time.sleep(0.1)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr  # stopped: `run && report` does not take it for finished
    assert f"{signal.Signals(sig).name} received" in stderr and "Resume with:" in stdout
    rows = read_csv(csv_path)
    assert 1 <= len(rows) < 50 and {r["state"] for r in rows} == {"COMPLETE"}


def test_old_csv_is_migrated_in_place(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    old = "experiment,trial,budget,horizon,learning_rate,val_loss\nold,0,2M,1,0.001,0.69\nold,1,2M,1,0.0005,0.68\n"
    (out_dir / "experiment_results.csv").write_text(old)
    path = write_config(tmp_path, n_trials=2)
    assert run_cli("run", str(path), "--no-progress").returncode == 0
    rows = read_csv(out_dir / "experiment_results.csv")
    assert list(rows[0])[: len(COLUMNS)] == list(COLUMNS)
    assert [(r["experiment"], r["val_loss"], r["d_model"]) for r in rows[:2]] == [
        ("old", "0.69", ""),
        ("old", "0.68", ""),
    ]
    assert len(rows) == 4 and rows[2]["d_model"] != ""


def test_unknown_plugin_names_are_config_errors_with_their_keys(tmp_path):
    path = write_config(
        tmp_path, sampler={"name": "annealing"}, model={"variant": "lstm"}, sinks=["csv", "jsonn"]
    )
    for command in ("run", "plan"):
        out = run_cli(command, str(path))
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"{path}: 3 problems in the configuration" in out.stderr
        assert (
            "sampler.name: unknown sampler 'annealing'; available: cmaes, gp, qmc, random, skopt, tpe"
            in out.stderr
        )
        assert "model.variant: unknown variant 'lstm'; available: patchtst, patchtst-ci" in out.stderr
        assert "sinks[1]: unknown sink 'jsonn'; available: csv, json" in out.stderr
    assert not (tmp_path / "out").exists(), "nothing is started before the names are checked"


@pytest.mark.parametrize(
    "sampler",
    [{"name": "skopt", "options": {"base_estimator": "ET", "n_initial_points": 3}}, {"name": "random"}],
)
def test_other_samplers_drive_a_study(tmp_path, sampler):
    config = structure(tiny_config(tmp_path, n_trials=6, sampler=sampler))
    result = Engine(config).run()
    assert result.cells[0].n_complete == 6


def test_pruned_trials_are_counted_and_written(tmp_path):
    path = write_config(
        tmp_path,
        n_trials=10,
        pruner={"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}},
        allocation={"strategy": "none"},
        training_search_space={
            "epochs": {"type": "categorical", "choices": [4]},
            "learning_rate": {"type": "log_uniform", "low": 1e-5, "high": 1e-1},
        },
    )
    assert run_cli("run", str(path), "--no-progress").returncode == 0
    rows = read_csv(tmp_path / "out" / "experiment_results.csv")
    pruned = sum(r["state"] == "PRUNED" for r in rows)
    best = json.loads((tmp_path / "out" / "tiny_8K_best.json").read_text())
    assert best["n_trials_pruned"] == pruned >= 1
    assert best["n_trials_completed"] + pruned == 10


def test_plan_status_and_export(tmp_path):
    path = write_config(tmp_path, n_trials=3, horizons=[1, 2])
    out = run_cli("plan", str(path))
    assert out.returncode == 0, out.stderr
    assert "tiny_8K_h1" in out.stdout and "tiny_8K_h2" in out.stdout and "2 cells, 6 search trials + 0 confirmation trials" in out.stdout
    assert run_cli("run", str(path), "--no-progress").returncode == 0
    status = run_cli("status", str(path)).stdout
    assert "tiny_8K_h1" in status and "    3      0      0" in status
    csv_path = tmp_path / "out" / "experiment_results.csv"
    before = read_csv(csv_path)
    csv_path.unlink()
    (tmp_path / "out" / "tiny_8K_h1_best.json").unlink()
    out = run_cli("export", str(path))
    assert out.returncode == 0, out.stderr
    after = read_csv(csv_path)
    key = lambda r: (r["study_name"], int(r["trial"]))  # noqa: E731
    assert sorted(map(key, after)) == sorted(map(key, before))
    assert {key(r): r["val_loss"] for r in after} == {key(r): r["val_loss"] for r in before}
    assert json.loads((tmp_path / "out" / "tiny_8K_h1_best.json").read_text())["n_trials_completed"] == 3


def test_shipped_quickstart_and_phase6a_plan():
    out = run_cli("plan", str(REPO / "configs" / "phase6a.yaml"), cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "12 cells, 600 search trials + 108 confirmation trials" in out.stdout
    assert "phase6a_2B_h5" in out.stdout


def test_engine_errors_for_horizon_too_large(tmp_path):
    config = structure(tiny_config(tmp_path, horizons=[400]))
    with pytest.raises(ArchsearchError, match="horizons: horizon 400"):
        Engine(config).run()


def test_example_sampler_package_runs_by_name(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO / "examples" / "archsearch-example-sampler"),
        ],
        check=True,
    )
    env = {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    listing = run_cli("plugins", env=env)
    assert "perturb-best" in listing.stdout
    assert (
        "entry point archsearch_example_sampler, from distribution archsearch-example-sampler 0.1.0"
        in listing.stdout
    )
    path = write_config(
        tmp_path,
        n_trials=8,
        sampler={"name": "perturb-best", "seed": 1, "options": {"n_startup_trials": 2, "scale": 0.2}},
    )
    out = run_cli("run", str(path), "--no-progress", env=env)
    assert out.returncode == 0, out.stderr
    assert len(read_csv(tmp_path / "out" / "experiment_results.csv")) == 8


def test_a_horizon_slice_writes_the_full_runs_files_and_status_shows_the_slice(tmp_path):
    path = write_config(tmp_path, horizons=[2, 4], n_trials=2)
    out = run_cli("run", str(path), "--no-progress", "--horizon", "2")
    assert out.returncode == 0, out.stderr
    files = {p.name for p in (tmp_path / "out").glob("*_best.json")}
    assert files == {"tiny_8K_h2_best.json"}, "the config has two horizons: per-horizon names"
    shown = run_cli("status", str(path), "--horizon", "4")
    assert shown.returncode == 0 and "tiny_8K_h2" not in shown.stdout
    assert "tiny_8K_h2" in run_cli("status", str(path)).stdout


def test_output_piped_into_a_closed_reader_ends_quietly(tmp_path):
    path = write_config(tmp_path)
    done = subprocess.run(
        f"{sys.executable} -m archsearch plugins --format json | true",  # the reader is gone at once
        shell=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
    assert path.exists()


def test_progress_bar_counts_epochs_from_one(tmp_path, monkeypatch):
    """The bar reads `epoch 1/2`, `epoch 2/2` for a two-epoch trial, never `epoch 3/2`."""
    import tqdm

    from archsearch.search.progress import Progress

    postfixes: list[str] = []

    class FakeBar:
        def __init__(self, **kwargs: object) -> None:
            pass

        def set_postfix_str(self, text: str, refresh: bool = True) -> None:
            postfixes.append(text)

        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(tqdm, "tqdm", FakeBar)
    raw = tiny_config(tmp_path, n_trials=1)
    raw["training_search_space"]["epochs"] = {"type": "categorical", "choices": [2]}
    Engine(structure(raw), progress=Progress()).run()
    epochs = [m.group(0) for p in postfixes if (m := re.search(r"epoch \d+/\d+", p))]
    assert epochs == ["epoch 1/2", "epoch 2/2"], postfixes
