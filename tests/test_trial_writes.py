"""A trial's attributes written with Optuna's own transactions (archsearch.trial_writes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from archsearch import trial_writes
from archsearch.bench.overhead import null_config, null_train, raw_optuna_loop
from archsearch.config import structure
from archsearch.records import CLAIM, RESULT, SETUP
from archsearch.search.engine import Engine
from archsearch.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sqlite(tmp_path: Path, name: str = "db.sqlite") -> str:
    return f"sqlite:///{tmp_path / name}"


def _fresh_read(url: str, trial_id: int) -> Any:
    """The trial as another process sees it (a storage of its own, no cache)."""
    return optuna.storages.RDBStorage(url).get_trial(trial_id)


class WriteCounter:
    """Counts committed transactions that wrote something (reads are not counted), on every
    SQLAlchemy engine while it is entered."""

    def __init__(self) -> None:
        self.writes = 0
        self._dirty: set[int] = set()

    def _execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            self._dirty.add(id(conn))

    def _commit(self, conn: Any) -> None:
        if id(conn) in self._dirty:
            self._dirty.discard(id(conn))
            self.writes += 1

    def __enter__(self) -> WriteCounter:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self._execute)
        event.listen(Engine, "commit", self._commit)
        return self

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.remove(Engine, "before_cursor_execute", self._execute)
        event.remove(Engine, "commit", self._commit)


def test_a_fresh_trial_is_claimed_with_its_first_parameter_and_a_queued_one_is_not(tmp_path):
    url = _sqlite(tmp_path)
    storage = open_storage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 0.5}, user_attrs={"coverage": True})
    claim = {CLAIM: {"worker": "h:1", "pid_namespace": 7}}
    trial_writes.claim_new_trials(storage, claim)
    queued, fresh = study.ask(), study.ask()
    assert not trial_writes.created_here(storage, queued._trial_id)
    assert trial_writes.created_here(storage, fresh._trial_id)
    assert _fresh_read(url, fresh._trial_id).user_attrs == {}  # staged
    with WriteCounter() as counter:
        fresh.suggest_float("x", 0, 1)
    assert counter.writes == 1  # the parameter's own transaction carries the claim
    frozen = _fresh_read(url, fresh._trial_id)
    assert frozen.user_attrs == claim and "x" in frozen.params and frozen.state == TrialState.RUNNING
    assert _fresh_read(url, queued._trial_id).user_attrs == {"coverage": True}
    assert [t.number for t in study.get_trials()] == [0, 1]


def test_staged_attributes_commit_with_the_state_or_not_at_all(tmp_path):
    url = _sqlite(tmp_path)
    storage = open_storage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    done, taken = study.ask(), study.ask()
    for trial in (done, taken):
        trial.suggest_float("x", 0, 1)
        trial_writes.stage(storage, trial._trial_id, {SETUP: {"d_model": 16}, "arch": "d16"})
        trial_writes.stage(storage, trial._trial_id, {RESULT: {"train_loss": 0.5}})
    assert _fresh_read(url, done._trial_id).user_attrs == {}  # staged: not written yet
    study.tell(done, 1.0)
    frozen = _fresh_read(url, done._trial_id)
    assert frozen.state == TrialState.COMPLETE and frozen.value == 1.0
    assert frozen.user_attrs == {SETUP: {"d_model": 16}, "arch": "d16", RESULT: {"train_loss": 0.5}}

    # Another worker fails the trial first: the state change is refused, and the staged
    # attributes of the dropped result are rolled back with it.
    optuna.storages.RDBStorage(url).set_trial_state_values(taken._trial_id, TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(taken._trial_id, TrialState.COMPLETE, [2.0])
    frozen = _fresh_read(url, taken._trial_id)
    assert frozen.state == TrialState.FAIL and frozen.user_attrs == {}


def test_flush_writes_what_a_running_trial_staged_in_one_transaction(tmp_path):
    url = _sqlite(tmp_path)
    storage = open_storage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial_writes.stage(storage, trial._trial_id, {"a": 1, "b": [2, 3], "c": {"d": None}})
    with WriteCounter() as counter:
        trial_writes.flush(storage, trial._trial_id)
        assert counter.writes == 1
        trial_writes.flush(storage, trial._trial_id)  # nothing staged any more: nothing written
        assert counter.writes == 1
    assert _fresh_read(url, trial._trial_id).user_attrs == {"a": 1, "b": [2, 3], "c": {"d": None}}


def test_an_unwrapped_storage_is_written_at_once():
    study = optuna.create_study()
    trial = study.ask()
    trial_writes.stage(study._storage, trial._trial_id, {"a": 1})
    assert study._storage.get_trial(trial._trial_id).user_attrs == {"a": 1}
    assert not trial_writes.created_here(study._storage, trial._trial_id)


def test_a_long_trial_is_identifiable_in_the_storage_while_it_trains(tmp_path):
    """The heartbeat thread writes the setup a trial staged once it has run FLUSH_AFTER_S."""
    url = _sqlite(tmp_path)
    seen: list[dict[str, Any]] = []

    def train(model: Any, data: Any, settings: Any, on_epoch: Any = None) -> Any:
        time.sleep(trial_writes.FLUSH_AFTER_S * 2.5)
        reader = optuna.storages.RDBStorage(url)
        study_id = reader.get_all_studies()[0]._study_id
        seen.extend(t.user_attrs for t in reader.get_all_trials(study_id, states=(TrialState.RUNNING,)))
        return null_train(model, data, settings, on_epoch)

    config = structure(null_config("long", 1, tmp_path / "out", url, ("csv",)))
    Engine(config, train_fn=train, build_fn=lambda arch, spec: arch.key).run()
    assert len(seen) == 1 and SETUP in seen[0] and CLAIM in seen[0] and RESULT not in seen[0]
    assert seen[0][SETUP]["d_model"] == seen[0]["d_model"]


def test_an_archsearch_trial_writes_no_transaction_beyond_optunas_own(tmp_path):
    """Per search trial (null objective, SQLite), archsearch commits as many write transactions as a
    raw Optuna loop with the same parameters: its claim, setup and result ride on Optuna's."""
    n, counted = 40, {}
    for loop in ("raw", "archsearch"):
        url = _sqlite(tmp_path, f"{loop}.sqlite")
        open_storage(url)  # the schema: not counted
        config = structure(null_config("writes", n, tmp_path / loop, url, ("csv",)))
        engine = Engine(config, train_fn=null_train, build_fn=lambda arch, spec: arch.key)
        engine.datasets()
        with WriteCounter() as counter:
            if loop == "raw":
                raw_optuna_loop(n, url, tmp_path / loop)
            else:
                engine.run()
        counted[loop] = counter.writes
    reader = optuna.storages.RDBStorage(_sqlite(tmp_path, "archsearch.sqlite"))
    (cell,) = [s for s in reader.get_all_studies() if s.user_attrs.get("archsearch_cell")]
    trials = reader.get_all_trials(cell._study_id)
    assert len(trials) == n
    queued = sum(bool(t.user_attrs.get("coverage")) for t in trials)
    assert 0 < queued < n
    # Beyond Optuna's own: the set-up (the study, its attributes, the coverage list queued once, in
    # about a dozen writes) and, per coverage trial, its taking from the queue and the claim it gets
    # then (a fresh trial is created in one write, with its claim).
    assert counted["archsearch"] <= counted["raw"] + 2 * queued + 16, (counted, queued)
    assert counted["archsearch"] < counted["raw"] + 2 * n  # the old engine: 8 more writes a trial
