"""What Optuna's own tools (optuna-dashboard, the ``optuna`` CLI) see of an archsearch storage.

The engine runs for real at a tiny size; the storage is then read with Optuna's public API only:
one study per cell and nothing else, the architecture as flat trial attributes, the objective
named after the task's loss. Also: the retry election leaves no marker study even when workers
race for one stuck trial, a journal file is given as a plain path as Optuna's tools take it, and
TPE's constant liar is on exactly when several workers share a study.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from engine_helpers import tiny_config
from optuna.trial import TrialState

from archsearch.config import structure
from archsearch.errors import ArchsearchError
from archsearch.storage import open_storage

FLAT = ("d_model", "n_layers", "n_heads", "d_ff", "param_count")


def run_tiny(tmp_path: Path, storage: str, **overrides) -> list[str]:
    """A tiny two-cell run (horizons 2 and 3, 6 trials each); the cells' study names."""
    from archsearch.bench.overhead import NullResult
    from archsearch.search.engine import Engine

    def train(model, data, config, on_epoch=None):
        return NullResult(best_val_loss=config.learning_rate)

    raw = tiny_config(tmp_path, horizons=[2, 3], n_trials=6, storage=storage, **overrides)
    result = Engine(structure(raw), train_fn=train, build_fn=lambda arch, spec: None).run()
    return [c.study_name for c in result.cells]


@pytest.mark.parametrize("form", ["sqlite", "journal path"])
def test_optuna_sees_one_study_per_cell_with_readable_trials(tmp_path, form):
    url = f"sqlite:///{tmp_path / 'a.db'}" if form == "sqlite" else str(tmp_path / "a.journal")
    cells = run_tiny(tmp_path, url)
    storage = open_storage(url)  # what optuna-dashboard opens for this URL: the same class and file
    summaries = optuna.get_all_study_summaries(storage)
    assert sorted(s.study_name for s in summaries) == sorted(cells) == ["tiny_8K_h2", "tiny_8K_h3"]
    for name in cells:
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.metric_names == ["val_bce_loss"]  # the threshold task's BCE, not "Objective 0"
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(complete) == 6
        for t in complete:
            setup = t.user_attrs["setup"]
            assert {k: t.user_attrs[k] for k in FLAT} == {k: setup[k] for k in FLAT}
            assert t.user_attrs["arch"] == (
                f"d{setup['d_model']}-L{setup['n_layers']}-h{setup['n_heads']}-ff{setup['d_ff']}"
            )


def test_flat_attributes_add_no_csv_column_and_keep_the_rows(tmp_path):
    from engine_helpers import read_csv

    from archsearch.records import ALL_COLUMNS

    run_tiny(tmp_path, f"sqlite:///{tmp_path / 'a.db'}")
    rows = read_csv(tmp_path / "out" / "experiment_results.csv")
    assert len(rows) == 12 and tuple(rows[0]) == ALL_COLUMNS
    assert all(r["d_model"] and r["param_count"] for r in rows)


def test_the_forecast_task_names_its_objective_mse(tmp_path):
    (name, _) = run_tiny(tmp_path, f"sqlite:///{tmp_path / 'f.db'}", task={"kind": "forecast"})
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'f.db'}")
    assert study.metric_names == ["val_mse_loss"]


# --- the retry election: once, and no marker left --------------------------------------------


def stuck_study(url: str):
    """Two complete trials and a RUNNING one whose worker is gone."""
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    for x in (0.1, 0.2):
        t = study.ask()
        t.suggest_float("x", 0, 1)
        study.tell(t, x)
    stuck = study.ask()
    stuck.suggest_float("x", 0, 1)
    return study, study._storage.get_trial(stuck._trial_id)


def storages(tmp_path: Path) -> dict[str, str]:
    return {"sqlite": f"sqlite:///{tmp_path / 'r.db'}", "journal": f"journal:{tmp_path / 'r.journal'}"}


def fresh_postgres() -> str:
    url = os.environ.get("ARCHSEARCH_TEST_POSTGRES")
    if not url:
        pytest.skip("set ARCHSEARCH_TEST_POSTGRES (bash .ci/postgres.sh starts a server)")
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}"


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_workers_racing_on_a_stuck_trial_retry_it_once_and_leave_no_marker(tmp_path, kind):
    from archsearch.search.coordination import fail_and_retry

    url = fresh_postgres() if kind == "postgresql" else storages(tmp_path)[kind]
    _, stuck = stuck_study(url)
    n = 6
    barrier, won = threading.Barrier(n), []

    def watcher() -> None:
        study = optuna.load_study(study_name="s", storage=open_storage(url))  # a process of its own
        barrier.wait()
        won.append(fail_and_retry(study, stuck, "no heartbeat"))  # all with the snapshot: RUNNING

    threads = [threading.Thread(target=watcher) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    assert won.count(True) == 1 and len(won) == n
    assert optuna.get_all_study_names(study._storage) == ["s"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in waiting] == [stuck.number]
    assert [t.state for t in study.trials[:3]] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]
    assert not any(t.user_attrs.get("surplus") for t in study.trials), "nothing queued and taken back"


def test_a_watcher_with_an_old_snapshot_after_the_marker_is_gone_does_nothing(tmp_path):
    """The marker is deleted once the trial is failed; a later watcher that still saw the trial
    RUNNING wins a new marker, reads the trial failed, and neither queues nor withdraws."""
    from archsearch.search.coordination import fail_and_retry

    study, stuck = stuck_study(storages(tmp_path)["sqlite"])
    assert fail_and_retry(study, stuck, "no heartbeat")
    assert not fail_and_retry(study, stuck, "no heartbeat")
    assert [(t.state.name, t.user_attrs.get("surplus", False)) for t in study.trials] == [
        ("COMPLETE", False),
        ("COMPLETE", False),
        ("FAIL", False),
        ("WAITING", False),
    ]
    assert optuna.get_all_study_names(study._storage) == ["s"]


def test_a_withdrawn_retry_leaves_the_trials_own_retry_queued(tmp_path):
    """The stuck trial's own worker failed it after an error and queued its retry while a
    watcher queued one too: the watcher takes back one, not both."""
    from archsearch.search import coordination

    study, stuck = stuck_study(storages(tmp_path)["sqlite"])
    requeue = coordination.requeue

    def requeue_while_the_owner_fails_it(s, trial):
        requeue(s, trial)  # the watcher's
        requeue(s, trial)  # the owner's (loop.run_trial on an error), then it fails the trial
        s.tell(trial.number, state=TrialState.FAIL)

    coordination.requeue = requeue_while_the_owner_fails_it
    try:
        assert not coordination.fail_and_retry(study, stuck, "no heartbeat")
    finally:
        coordination.requeue = requeue
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    assert optuna.get_all_study_names(study._storage) == ["s"]


# --- storage URLs in the form Optuna's tools take ---------------------------------------------


def test_a_journal_file_is_a_plain_path_the_optuna_cli_reads_too(tmp_path):
    path = tmp_path / "runs" / "study.log"
    path.parent.mkdir()
    optuna.create_study(study_name="plain", storage=open_storage(str(path)))
    assert optuna.get_all_study_names(open_storage(f"journal:{path}")) == ["plain"]
    cli = shutil.which("optuna", path=str(Path(sys.executable).parent)) or "optuna"
    out = subprocess.run([cli, "study-names", "--storage", str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["plain"], out.stderr[-500:]


def test_a_sqlite_file_given_as_a_path_says_how_to_write_it(tmp_path):
    db = tmp_path / "a.db"
    optuna.create_study(study_name="x", storage=f"sqlite:///{db}")
    with pytest.raises(ArchsearchError, match=f"give it as sqlite:///{db}"):
        open_storage(str(db))


def test_optuna_dashboard_opens_the_journal_path_it_is_given(tmp_path):
    dashboard = pytest.importorskip("optuna_dashboard._storage_url")
    path = str(tmp_path / "d.journal")
    optuna.create_study(study_name="d", storage=open_storage(path))
    assert optuna.get_all_study_names(dashboard.get_storage(path)) == ["d"]


# --- TPE's constant liar ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "shared", "expected"),
    [("auto", False, False), ("auto", True, True), (False, True, False), (True, False, True)],
)
def test_tpe_lies_constantly_when_workers_share_the_study(tmp_path, setting, shared, expected):
    from archsearch.search.engine import Engine

    config = structure(tiny_config(tmp_path, sampler={"name": "tpe", "seed": 1, "constant_liar": setting}))
    assert Engine(config, shared=shared).sampler().inner._constant_liar is expected


@pytest.fixture
def logger_kept():
    """The archsearch logger as it was (a worker's entry point and the CLI set it up)."""
    logger = logging.getLogger("archsearch")
    handlers, propagate, level = logger.handlers[:], logger.propagate, logger.level
    yield
    logger.handlers[:], logger.propagate = handlers, propagate
    logger.setLevel(level)


def test_local_workers_and_the_worker_command_share_their_studies(tmp_path, monkeypatch, logger_kept):
    from archsearch import cli
    from archsearch.search import engine

    seen = []

    class Recorder:
        def __init__(self, config, progress=None, worker=0, shared=False, **_):
            seen.append(shared)

        def run(self):
            raise SystemExit(0)

    monkeypatch.setattr(engine, "Engine", Recorder)
    config = tiny_config(tmp_path)
    with pytest.raises(SystemExit):
        engine.run_worker(type("Slot", (), {"index": 0})(), config, "<test>")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    for command in ("worker", "run"):
        with pytest.raises(SystemExit):
            cli.main([command, str(tmp_path / "c.yaml")])
    assert seen == [True, True, False]


@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        ({"name": "tpe", "constant_liar": "yes"}, 'sampler.constant_liar: expected auto, true or false, got "yes"'),
        ({"name": "random", "constant_liar": True}, "sampler 'random' has no constant liar"),
        (
            {"name": "tpe", "constant_liar": False, "options": {"constant_liar": True}},
            "also set in sampler.options; set it once",
        ),
    ],
)
def test_a_bad_constant_liar_setting_names_the_key(tmp_path, sampler, message):
    from archsearch.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        structure(tiny_config(tmp_path, sampler=sampler))
