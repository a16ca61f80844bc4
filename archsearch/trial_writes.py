"""A trial's attributes in as few storage round trips as the storage allows.

Optuna writes each trial attribute in a transaction of its own: a commit, a few milliseconds on
SQLite or PostgreSQL, where a whole null-objective trial costs Optuna itself about ten of them.
What archsearch stores on a trial (:mod:`archsearch.records`: its claim, what it is, what it gave)
is therefore written with Optuna's own transactions, not beside them:

- **The claim with the first parameter.** A trial this process creates (not one it takes from the
  queue) gets its ``claimed_by`` (:func:`claim_new_trials`) staged at once, and written in the
  transaction of its first parameter, which follows within the sampler's first suggestion (or
  by the heartbeat thread, or with its end, for a trial that suggests none); :func:`created_here`
  tells such a trial from a queued one, which is marked right after it is taken.
- **The rest staged** (:func:`stage`): kept by the storage wrapper and written in the transaction
  that finishes the trial (``study.tell``), or earlier, all in one transaction, by :func:`flush`.
  The heartbeat thread flushes a trial's staged attributes once it has run :data:`FLUSH_AFTER_S`
  (:class:`archsearch.search.coordination.Heartbeat`), so a trial that trains for longer is
  identifiable in the storage while it trains.

A completed trial is never lost or left without its attributes: they commit with its state, in
one transaction. A process killed before that loses only what its unfinished trial had staged;
its claim and parameters are in the storage already, and they are what recovery uses (the trial
is failed and its parameters queued again, :mod:`archsearch.search.coordination`). Only a process
killed between creating a trial and writing its first parameter (while the sampler samples)
leaves it without a claim: then the heartbeat watch, not the next run at once, recovers it.

The storage wrapper (:func:`archsearch.storage.open_storage`) keeps the staged attributes. On an
RDB storage one transaction carries them all; on a journal file they are appended one by one at
the same moments. An unwrapped storage (``memory``: one process, nothing kept) is written at once.
The one-transaction write uses Optuna's RDB internals (its models, its session and its value
writer, doing what its ``set_trial_state_values`` does for a finished state); where those are
missing (another Optuna), the attributes are written one call each, which is slower and as correct.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
from collections.abc import Mapping
from typing import Any

#: Seconds a running trial's staged attributes wait for its end before they are written alone: a
#: null-objective trial ends sooner (its attributes ride on its tell), a real one is identifiable in
#: the storage a tenth of a second into its training.
FLUSH_AFTER_S = 0.1


class Staged:
    """What a storage wrapper keeps for this process: the attributes staged on each fresh trial
    (:func:`claim_new_trials`), the ids of the fresh trials, and the attributes staged per
    unfinished trial. Its lock is held while staged attributes are written, so that a trial's
    own write waits for a flush of the heartbeat thread, and then finds nothing staged."""

    def __init__(self) -> None:
        self.new_trial_attrs: dict[str, Any] = {}
        self.created: set[int] = set()
        self.pending: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def created_fresh(self, trial_id: int) -> None:
        """A trial this process created (``study.ask``, no template) gets the claim staged."""
        if self.new_trial_attrs:
            with self.lock:
                self.pending[trial_id] = dict(self.new_trial_attrs)
                self.created.add(trial_id)


def _staged(storage: Any) -> Staged | None:
    return getattr(storage, "staged", None)


def claim_new_trials(storage: Any, attrs: Mapping[str, Any]) -> None:
    """Stage ``attrs`` on every trial this process creates from now on (a wrapped storage)."""
    staged = _staged(storage)
    if staged is not None:
        staged.new_trial_attrs = dict(attrs)


def created_here(storage: Any, trial_id: int) -> bool:
    """Whether this process created the trial fresh, with :func:`claim_new_trials`'s attributes
    (not queued: it carries nothing else)."""
    staged = _staged(storage)
    return staged is not None and trial_id in staged.created


def stage(storage: Any, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Write ``attrs`` on the trial with its next state change (or :func:`flush`); at once on an
    unwrapped storage."""
    staged = _staged(storage)
    if staged is None:
        _one_by_one(storage, trial_id, attrs)
        return
    with staged.lock:
        staged.pending.setdefault(trial_id, {}).update(attrs)


def flush(storage: Any, trial_id: int) -> None:
    """Write what the trial has staged now, in one transaction (nothing staged: nothing done)."""
    staged = _staged(storage)
    if staged is None:
        return
    with staged.lock:  # held while writing: the trial's tell waits, then finds nothing staged
        attrs = staged.pending.pop(trial_id, None)
        if not attrs:
            return
        try:
            storage.write_trial(trial_id, attrs)
        except BaseException:
            staged.pending[trial_id] = attrs  # not written (an outage): kept for the trial's end
            raise


def is_staged(storage: Any, trial_id: int) -> bool:
    """Whether the trial has staged attributes not written yet."""
    staged = _staged(storage)
    return staged is not None and bool(staged.pending.get(trial_id))


def forget(storage: Any, trial_id: int) -> None:
    """Drop what is kept for a trial that ended (staged attributes a skipped tell left behind)."""
    staged = _staged(storage)
    if staged is not None:
        with staged.lock:
            staged.pending.pop(trial_id, None)
            staged.created.discard(trial_id)


def write(inner: Any, trial_id: int, attrs: Mapping[str, Any], finish: tuple[Any, Any] | None = None) -> Any:
    """Write ``attrs`` on the trial and, with ``finish`` (``(state, values)``: a finished state),
    finish it: one transaction on an RDB storage (``inner`` is Optuna's storage, cached or not)."""
    import optuna

    rdb = _rdb(inner)
    if rdb is None or (finish is not None and not finish[0].is_finished()):
        _one_by_one(inner, trial_id, attrs)
        return None if finish is None else inner.set_trial_state_values(trial_id, *finish)
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        if trial.state.is_finished():  # (Optuna's own check would read the trial in a session of its own)
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"Trial#{trial.number} has already finished and can not be updated."
            )
        _upsert(rdb, session, trial_id, attrs)
        if finish is not None:  # what Optuna's set_trial_state_values does for a finished state
            state, values = finish
            for objective, value in enumerate(values or ()):
                rdb._set_trial_value_without_commit(session, trial, objective, value)
            trial.state = state
            trial.datetime_complete = dt.datetime.now()
    return None if finish is None else True


def write_with_param(
    inner: Any, trial_id: int, attrs: Mapping[str, Any], param: tuple[str, float, Any]
) -> None:
    """Write ``attrs`` with one parameter of the trial (``(name, internal value, distribution)``),
    in the parameter's transaction on an RDB storage: Optuna's ``set_trial_param`` runs in this
    thread's session and commits the attributes with it."""
    rdb = _rdb(inner)
    if rdb is None:
        _one_by_one(inner, trial_id, attrs)
        return inner.set_trial_param(trial_id, *param)
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as session:
        _upsert(rdb, session, trial_id, attrs)
        inner.set_trial_param(trial_id, *param)


def _one_by_one(storage: Any, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """The attributes one Optuna call each (a storage without transactions to share)."""
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


def _upsert(rdb: Any, session: Any, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """The attributes in one ``INSERT ... ON CONFLICT DO UPDATE`` on SQLite and PostgreSQL (what
    Optuna runs per attribute), its statement built once; one Optuna write each on any other."""
    from optuna.storages._rdb import models

    statement = _upsert_statement(rdb.engine.name)
    if statement is None:
        for key, value in attrs.items():
            rdb._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, trial_id, key, value)
        return
    session.execute(
        statement, [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    )


@functools.cache
def _upsert_statement(dialect: str) -> Any:
    import sqlite3

    from optuna.storages._rdb import models

    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
        from sqlalchemy.dialects.sqlite import insert
    else:
        return None
    table = models.TrialUserAttributeModel
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=[table.trial_id, table.key], set_={"value_json": statement.excluded.value_json}
    )


def _rdb(inner: Any) -> Any:
    """Optuna's RDB storage behind ``inner`` (which may be its cache), if it has what :func:`write`
    uses; else None."""
    import optuna

    rdb = getattr(inner, "_backend", inner)
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return None
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session  # noqa: F401
    except ImportError:
        return None
    needed = ("_set_trial_attr_without_commit", "_set_trial_value_without_commit", "scoped_session")
    if not all(hasattr(rdb, n) for n in needed) or not hasattr(models, "TrialUserAttributeModel"):
        return None
    return rdb
