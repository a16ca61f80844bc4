"""The tracking sinks (``mlflow``, ``tensorboard``) against a real MLflow store and real
TensorBoard event files, read back with their own readers; and what every sink now hears (the
per-epoch event, records with the study, trial number and masked storage URL)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from engine_helpers import REPO, read_csv, tiny_config

from archsearch.config import structure
from archsearch.errors import ConfigError
from archsearch.records import ALL_COLUMNS, is_recorded, trial_record
from archsearch.registry import EpochEvent, SinkPlugin
from archsearch.search.engine import Engine
from archsearch.search.listeners import Listeners, SinkListener

EPOCHS = 3


def tracked_config(tmp_path: Path, sinks: list[str], n_trials: int = 3):
    """Two cells (horizons 1 and 2), three epochs a trial, no pruner: every trial runs its epochs."""
    return structure(tracked_raw(tmp_path, n_trials=n_trials, sinks=sinks))


def tracked_raw(tmp_path: Path, **overrides) -> dict:
    raw = tiny_config(tmp_path, horizons=[1, 2], training={"epochs": EPOCHS}, **overrides)
    raw["training_search_space"] = {"learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 1e-2}}
    return raw


def stored_trials(config) -> dict[str, list[optuna.trial.FrozenTrial]]:
    out = {}
    for horizon in config.horizons:
        name = config.study_name(8000, horizon)
        trials = optuna.load_study(study_name=name, storage=config.storage_url).get_trials()
        out[name] = [t for t in trials if is_recorded(t)]  # not the coverage trials still queued
    return out


# -- what every sink hears ----------------------------------------------------------------------
SINK_MODULE = """
from archsearch import hookimpl
from archsearch.registry import SinkPlugin

EVENTS, RECORDS, OLD_TRIALS = [], [], []


class Recorder:
    def __init__(self, output_dir, config): ...
    def epoch_finished(self, event): EVENTS.append(event)
    def trial_finished(self, record, cell): RECORDS.append(dict(record))
    def cell_finished(self, cell): ...
    def close(self): ...


class OldSink:  # written before the epoch event: no epoch_finished
    def __init__(self, output_dir, config): ...
    def trial_finished(self, record, cell): OLD_TRIALS.append(record["trial"])
    def cell_finished(self, cell): ...
    def close(self): ...


@hookimpl
def archsearch_register_sinks():
    return [SinkPlugin("recorder", Recorder), SinkPlugin("old", OldSink)]
"""


def test_sinks_hear_each_epoch_and_records_carry_study_trial_and_storage(tmp_path, monkeypatch):
    (tmp_path / "recording_sinks.py").write_text(SINK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import recording_sinks as sinks

    raw = tracked_raw(tmp_path, n_trials=2, sinks=["recorder", "old", "csv"], plugins=["recording_sinks"])
    config = structure(raw)
    Engine(config).run()

    trials = stored_trials(config)
    assert sorted(sinks.OLD_TRIALS) == [0, 0, 1, 1]  # the old sink hears every trial; nothing broke
    assert {(r["study_name"], r["trial"]) for r in sinks.RECORDS} == {
        (s, t.number) for s, ts in trials.items() for t in ts
    }
    assert {r["storage"] for r in sinks.RECORDS} == {config.storage_url}  # SQLite: nothing to mask
    for study, ts in trials.items():
        for t in ts:
            mine = [e for e in sinks.EVENTS if (e.study_name, e.trial) == (study, t.number)]
            assert [e.epoch for e in mine] == [1, 2, 3] and {e.epochs for e in mine} == {EPOCHS}
            assert [e.val_loss for e in mine] == [t.intermediate_values[e] for e in (1, 2, 3)]
            assert all(isinstance(e.train_loss, float) for e in mine)
            assert {e.cell for e in mine} == {study.removeprefix("tiny_")}
    header = Path(config.output_path / "experiment_results.csv").read_text().splitlines()[0]
    assert header == ",".join(ALL_COLUMNS) and "storage" not in ALL_COLUMNS


def test_a_record_masks_the_storage_password():
    trial = optuna.trial.create_trial(value=0.5, params={}, distributions={})
    record = trial_record(trial, "s", storage="postgresql://me:hunter22@db.example/archsearch")
    assert record["storage"] == "postgresql://me:***@db.example/archsearch"
    assert "hunter22" not in str(record)


def test_a_sink_without_epoch_finished_is_not_told_epochs():
    class Old:
        def trial_finished(self, record, cell): ...

    class New(Old):
        def __init__(self) -> None:
            self.events: list[EpochEvent] = []

        def epoch_finished(self, event: EpochEvent) -> None:
            self.events.append(event)

    new = New()
    listeners = Listeners({"old": SinkListener(Old()), "new": SinkListener(new)})
    event = EpochEvent("s", 0, 1, 2, 0.5, 0.6)
    listeners.epoch(event)
    assert set(listeners.named) == {"old", "new"}  # neither was switched off
    assert new.events == [event]


# -- a missing optional package -------------------------------------------------------------------
def test_a_missing_tracker_package_stops_the_run_before_it_starts(tmp_path):
    config_path = tmp_path / "config.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(tiny_config(tmp_path, sinks=["csv", "mlflow", "tensorboard"])))
    hide = "import sys; sys.modules['mlflow'] = sys.modules['tensorboard'] = None; "
    run = "from archsearch.cli import main; sys.exit(main(['run', sys.argv[1], '--no-progress']))"
    out = subprocess.run(
        [sys.executable, "-c", hide + run, str(config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert (
        "sinks[1]: sink 'mlflow' needs the Python package 'mlflow', which is not installed; "
        'install it with: pip install "archsearch[mlflow]"' in out.stderr
    )
    assert "sinks[2]: sink 'tensorboard' needs the Python package 'tensorboard'" in out.stderr
    assert 'pip install "archsearch[tensorboard]"' in out.stderr
    assert not (tmp_path / "out").exists()  # nothing ran: no storage, no CSV


def test_missing_names_each_absent_module(monkeypatch):
    import importlib.util

    plugin = SinkPlugin("x", lambda out, cfg: None, requires=("json", "no_such_module_here"), install="pip X")
    assert plugin.missing() == (
        "sink 'x' needs the Python package 'no_such_module_here', which is not installed; install it with: pip X"
    )
    assert SinkPlugin("y", lambda out, cfg: None, requires=("json",)).missing() is None
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    config = structure(tiny_config(Path("/nonexistent"), sinks=["mlflow"]))
    with pytest.raises(ConfigError, match=r"archsearch\[mlflow\]"):
        Engine(config)


# -- MLflow -----------------------------------------------------------------------------------------
def _mlflow_runs(client, experiment_id: str, kind: str) -> list:
    return client.search_runs([experiment_id], f"tags.archsearch_kind = '{kind}'", max_results=1000)


def test_mlflow_nests_trials_under_cells_with_curves_and_resumes_without_duplicates(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # artifacts go beside the store, not into ./mlruns
    config = tracked_config(tmp_path, ["csv", "mlflow"], n_trials=3)
    report = config.output_path / "report" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html>an old report</html>")  # older than every trial: not attached
    old = time.time() - 3600
    os.utime(report, (old, old))
    Engine(config).run()

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")
    cells = {
        r.data.tags["archsearch_study"]: r for r in _mlflow_runs(client, experiment.experiment_id, "cell")
    }
    assert sorted(cells) == ["tiny_8K_h1", "tiny_8K_h2"]
    rows = {
        (r["study_name"], int(r["trial"])): r for r in read_csv(config.output_path / "experiment_results.csv")
    }
    trials = stored_trials(config)
    children = first = _mlflow_runs(client, experiment.experiment_id, "trial")
    assert len(children) == 6
    for child in children:
        tags, data = child.data.tags, child.data
        study, number = tags["archsearch_study"], int(tags["archsearch_trial"])
        assert tags["mlflow.parentRunId"] == cells[study].info.run_id
        assert child.info.status == "FINISHED" and tags["archsearch_state"] == "COMPLETE"
        row = rows[(study, number)]
        for key in ("d_model", "n_layers", "n_heads", "d_ff", "param_count", "batch_size", "epochs"):
            assert data.params[key] == row[key]
        assert data.params["arch"] == "d{d_model}-L{n_layers}-h{n_heads}-ff{d_ff}".format(**row)
        assert float(data.params["learning_rate"]) == pytest.approx(float(row["learning_rate"]))
        assert data.metrics["val_loss"] == pytest.approx(float(row["val_loss"]))
        assert data.metrics["test_loss"] == pytest.approx(float(row["test_loss"]))
        history = client.get_metric_history(child.info.run_id, "epoch/val_loss")
        frozen = next(t for t in trials[study] if t.number == number)
        assert [(m.step, m.value) for m in history] == sorted(frozen.intermediate_values.items())
        assert len(history) == EPOCHS
        assert len(client.get_metric_history(child.info.run_id, "epoch/train_loss")) == EPOCHS
    for study, cell in cells.items():
        assert cell.info.status == "FINISHED" and cell.data.tags["archsearch_storage"] == config.storage_url
        best = min(t.value for t in trials[study])
        assert cell.data.metrics["best_val_loss"] == pytest.approx(best)
        assert {a.path for a in client.list_artifacts(cell.info.run_id)} == {"best.json"}

    # Resume: one trial's run lost from MLflow, two more trials per cell.
    lost = next(c for c in children if c.data.tags["archsearch_trial"] == "1")
    client.delete_run(lost.info.run_id)
    Engine(tracked_config(tmp_path, ["csv", "mlflow"], n_trials=5)).run()
    children = _mlflow_runs(client, experiment.experiment_id, "trial")
    keys = sorted((c.data.tags["archsearch_study"], int(c.data.tags["archsearch_trial"])) for c in children)
    assert keys == sorted((s, n) for s in cells for n in range(5))  # none twice
    for child in children:  # nor a replayed trial's results logged again into its run
        assert len(client.get_metric_history(child.info.run_id, "val_loss")) == 1
    (back,) = [
        c
        for c in children
        if c.info.run_id not in {x.info.run_id for x in first} and int(c.data.tags["archsearch_trial"]) == 1
    ]
    assert back.data.tags["archsearch_study"] == lost.data.tags["archsearch_study"]
    assert back.data.tags.get("archsearch_backfilled") == "true" and "val_loss" in back.data.metrics
    assert client.get_metric_history(back.info.run_id, "epoch/val_loss") == []  # no curve: not live
    assert len(_mlflow_runs(client, experiment.experiment_id, "cell")) == 2
    for cell in cells.values():  # the old report predates the new trials
        assert client.list_artifacts(cell.info.run_id, "report") == []

    # The report, written after every trial; the run again: nothing trains, the report is attached.
    time.sleep(1.1)  # record timestamps have whole seconds
    report.write_text("<html>the report of every trial</html>")
    Engine(tracked_config(tmp_path, ["csv", "mlflow"], n_trials=5)).run()
    assert len(_mlflow_runs(client, experiment.experiment_id, "trial")) == 10
    for cell in cells.values():
        paths = {a.path for a in client.list_artifacts(cell.info.run_id, "report")}
        assert paths == {"report/report.html"}
        assert client.get_run(cell.info.run_id).info.status == "FINISHED"
    assert experiment.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()
    assert list((tmp_path / "cwd").iterdir()) == []


def test_mlflow_defaults_to_a_store_in_the_output_directory(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from archsearch.plugins.tracking_mlflow import default_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "my-scaling-study")
    config = structure(tiny_config(tmp_path, n_trials=1, sinks=["mlflow"]))
    Engine(config).run()
    assert (config.output_path / "mlflow.db").exists()
    client = mlflow.MlflowClient(default_uri(config.output_path))
    experiment = client.get_experiment_by_name("my-scaling-study")
    assert experiment.artifact_location == (config.output_path / "mlartifacts").resolve().as_uri()
    (child,) = _mlflow_runs(client, experiment.experiment_id, "trial")
    assert child.data.params["d_model"] and "val_loss" in child.data.metrics


# -- TensorBoard ------------------------------------------------------------------------------------
def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(s.step, s.value) for s in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def test_tensorboard_writes_trial_and_epoch_scalars_once(tmp_path):
    pytest.importorskip("tensorboard")
    config = tracked_config(tmp_path, ["csv", "tensorboard"], n_trials=3)
    Engine(config).run()
    root = config.output_path / "tensorboard"
    for study, ts in stored_trials(config).items():
        got = _scalars(root / study, "trial/val_loss")
        assert [s for s, _ in got] == [t.number for t in ts]
        assert [v for _, v in got] == pytest.approx([t.value for t in ts], rel=1e-5)
        best = _scalars(root / study, "trial/best_val_loss")
        running = [min(t.value for t in ts[: i + 1]) for i in range(len(ts))]
        assert [v for _, v in best] == pytest.approx(running, rel=1e-5)
        for t in ts:
            curve = _scalars(root / study / f"trial_{t.number:04d}", "epoch/val_loss")
            assert [step for step, _ in curve] == sorted(t.intermediate_values) == [1, 2, 3]
            assert [v for _, v in curve] == pytest.approx(
                [t.intermediate_values[e] for e in (1, 2, 3)], rel=1e-5
            )
            assert len(_scalars(root / study / f"trial_{t.number:04d}", "epoch/train_loss")) == EPOCHS

    Engine(tracked_config(tmp_path, ["csv", "tensorboard"], n_trials=4)).run()  # resume: one more each
    for study in stored_trials(config):
        got = _scalars(root / study, "trial/val_loss")
        # The replayed three not written again. Two runs wrote two event files, which
        # EventAccumulator may read in either order: the steps, not their order, are the point.
        assert sorted(s for s, _ in got) == [0, 1, 2, 3]
        assert (root / study / "logged.txt").read_text().split() == ["0", "1", "2", "3"]


def test_report_freshness_compares_utc_times(tmp_path):
    pytest.importorskip("mlflow")
    from archsearch.plugins.tracking_mlflow import MlflowSink

    sink = MlflowSink.__new__(MlflowSink)
    sink.newest = {}
    sink._note_time("s", "2030-01-01T00:00:00Z")
    report = tmp_path / "report.html"
    report.write_text("")
    assert not sink._report_is_current("s", report)  # written before the newest trial
    sink.newest["s"] = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    assert sink._report_is_current("s", report)
    assert not sink._report_is_current("other", report)  # no trial heard of: nothing to vouch for
