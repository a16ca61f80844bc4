"""A cell's counts by state and its best trial without loading every trial: on an RDB storage
(SQLite, PostgreSQL, MySQL) a grouped count, the trials marked ``surplus`` or ``stage`` and the
best search trial's id are three small queries, and only the best trial is read whole. Any other
storage (memory, a journal file) counts from its trials, as :meth:`CellSummary.refresh` does.

The answer is :class:`~archsearch.records.CellSummary`'s: surplus claims are not counted,
confirmation trials are counted apart, and the best is the first (lowest-numbered) complete
search trial with the best value.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.trial import TrialState

from archsearch.records import CONFIRM, STAGE, SURPLUS, CellSummary, study_uid
from archsearch.storage import rdb_storage, retrying

_COUNTED = {
    TrialState.COMPLETE: "n_complete",
    TrialState.PRUNED: "n_pruned",
    TrialState.FAIL: "n_failed",
    TrialState.RUNNING: "n_running",
    TrialState.WAITING: "n_waiting",
}


def tally(experiment: str, budget: int, horizon: int, study: optuna.Study) -> CellSummary:
    """The cell's :class:`CellSummary` (counts, best trial and its record) read from ``study``."""
    summary = CellSummary(experiment, budget, horizon, study.study_name, study.direction.name.lower())
    summary.study_uid = study_uid(study)
    storage = rdb_storage(study._storage)
    if storage is None:
        summary.refresh(study)
        return summary
    counts, confirm, best_id = retrying(
        lambda: _query(storage, study._study_id, summary.direction == "maximize"), "counting trials"
    )
    for state, n in counts.items():
        if state in _COUNTED:
            setattr(summary, _COUNTED[state], n)
    summary.confirm_done = confirm.count(TrialState.COMPLETE)
    summary.confirm_pending = sum(not s.is_finished() for s in confirm)
    summary.confirm_failed = len(confirm) - summary.confirm_done - summary.confirm_pending
    if best_id is not None:
        summary.best_trial = retrying(lambda: storage.get_trial(best_id), "reading the best trial")
        summary.best = summary.record(summary.best_trial)
    return summary


def _query(
    storage: optuna.storages.RDBStorage, study_id: int, maximize: bool
) -> tuple[dict[TrialState, int], list[TrialState], int | None]:
    """Search trials per state, the states of the confirmation trials (surplus claims in
    neither) and the best complete search trial's id, in one session."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from sqlalchemy.orm import Session

    trial, value, attr = models.TrialModel, models.TrialValueModel, models.TrialUserAttributeModel
    with Session(storage.engine) as session:
        counts = dict(
            session.execute(
                sa.select(trial.state, sa.func.count())
                .where(trial.study_id == study_id)
                .group_by(trial.state)
            ).all()
        )
        marks: dict[int, dict[str, Any]] = {}
        states: dict[int, TrialState] = {}
        for trial_id, state, key, raw in session.execute(
            sa.select(trial.trial_id, trial.state, attr.key, attr.value_json)
            .join(attr, attr.trial_id == trial.trial_id)
            .where(trial.study_id == study_id, attr.key.in_((SURPLUS, STAGE)))
        ):
            marks.setdefault(trial_id, {})[key] = _loads(raw)
            states[trial_id] = state
        apart = {i for i, m in marks.items() if m.get(SURPLUS) or m.get(STAGE) == CONFIRM}
        for i in apart:
            counts[states[i]] -= 1
        confirm = [states[i] for i in apart if not marks[i].get(SURPLUS)]
        kind = sa.case(
            (value.value_type == value.TrialValueType.INF_NEG, -1),
            (value.value_type == value.TrialValueType.FINITE, 0),
            else_=1,
        )
        order = (kind.desc(), value.value.desc()) if maximize else (kind.asc(), value.value.asc())
        best = session.execute(
            sa.select(trial.trial_id)
            .join(value, value.trial_id == trial.trial_id)
            .where(
                trial.study_id == study_id,
                trial.state == TrialState.COMPLETE,
                value.objective == 0,
                trial.trial_id.not_in(sorted(apart)),
            )
            .order_by(*order, trial.number.asc())
            .limit(1)
        ).scalar_one_or_none()
    return counts, confirm, best


def _loads(raw: Any) -> Any:
    """A stored attribute's value (JSON), as Optuna reads it back."""
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw
