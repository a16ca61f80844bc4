"""The trial loop of one cell in one process: claim, run, record, tell the listeners."""

from __future__ import annotations

import logging
import math
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.config import Config
from archsearch.errors import TrialFailed
from archsearch.records import FAIL_REASON, CellSummary, is_recorded, trial_record, write_fail_reason
from archsearch.search.coordination import Coordinator, Heartbeat, count_finished, requeue
from archsearch.search.listeners import Listeners
from archsearch.search.matrix import Cell
from archsearch.search.objective import Objective
from archsearch.search.stop import StopRequest
from archsearch.storage import retrying

log = logging.getLogger("archsearch")
#: Seconds between recounts of the cell from the storage (other workers' trials count too).
REFRESH_S = 5.0


def run_cell(
    config: Config,
    cell: Cell,
    study: optuna.Study,
    objective: Objective,
    listeners: Listeners,
    stop: StopRequest,
) -> CellSummary:
    """Run ``cell``'s trials in this process until the cell has ``n_trials``, the timeout passes
    or a stop is requested; returns where the cell stands."""
    summary = replay(config, cell, study, listeners)
    listeners.cell_started(cell, summary, config.n_trials)
    objective.on_epoch = listeners.epoch
    deadline = time.monotonic() + config.timeout_hours * 3600 if config.timeout_hours else math.inf
    w = config.workers
    coordinator = Coordinator(study, config.n_trials, w.heartbeat_interval, w.grace_period)
    last_refresh = time.monotonic()
    with Heartbeat(study, w.heartbeat_interval) as heartbeat:
        while not stop.requested:
            if time.monotonic() > deadline:
                log.warning("%s: timeout_hours (%s) reached", cell.label, config.timeout_hours)
                break
            summary.n_failed += coordinator.watch()
            claim = coordinator.may_claim()
            if claim is False:
                break
            if claim is None:  # the other workers' running trials may finish the cell
                time.sleep(min(1.0, w.heartbeat_interval))
                continue
            trial = retrying(study.ask, "claiming a trial")
            with heartbeat.beating(trial):  # from the claim on: sampling and building take time too
                if coordinator.surplus(trial):
                    coordinator.release(trial)
                    continue
                coordinator.own.add(trial._trial_id)
                frozen = run_trial(study, trial, objective)
            summary.add(frozen)
            if time.monotonic() - last_refresh > REFRESH_S:
                summary.refresh(study)
                last_refresh = time.monotonic()
            listeners.trial_finished(trial_record(frozen, cell.study_name), summary)
    summary.refresh(study)
    summary.n_running = 0
    summary.finished = count_finished(study) >= config.n_trials
    listeners.cell_finished(summary)
    return summary


def replay(config: Config, cell: Cell, study: optuna.Study, listeners: Listeners) -> CellSummary:
    """The cell's summary from the storage, its finished trials told to the listeners again
    (``record["replayed"] = True``: the CSV adds the rows it lacks)."""
    summary = CellSummary(config.experiment, cell.budget, cell.horizon, cell.study_name, config.direction)
    for t in study.get_trials(deepcopy=False):
        summary.add(t)
        if is_recorded(t):
            listeners.trial_finished({**trial_record(t, cell.study_name), "replayed": True}, summary)
    summary.n_running = 0
    return summary


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Objective) -> FrozenTrial:
    """Run one claimed trial and tell the storage how it ended; a trial that raises anything
    but a pruning or a :class:`TrialFailed` is failed too, its parameters queued again, and
    the error re-raised. A trial that another worker failed meanwhile (it saw no heartbeat
    for ``workers.grace_period``: a stalled process or a lost connection) is left as that
    worker recorded it; its retry runs elsewhere."""
    state, value, error = TrialState.FAIL, None, None
    storage = study._storage
    try:
        value = objective(trial)
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except TrialFailed as exc:
        log.warning("trial %d failed: %s", trial.number, exc)
    except optuna.exceptions.UpdateFinishedTrialError:
        return _taken_away(study, trial)
    except BaseException as exc:  # noqa: BLE001 - recorded on the trial, then re-raised
        error = exc
    values = value if state == TrialState.COMPLETE else None
    try:
        if state == TrialState.COMPLETE and not math.isfinite(value):
            state, values = TrialState.FAIL, None
            write_fail_reason(trial, f"objective returned {value}")
        if error is not None:
            # Interrupted (a second Ctrl-C) or broken: the same parameters run again, queued
            # before this trial is failed (see coordination.requeue).
            write_fail_reason(trial, f"{type(error).__name__}: {error}")
            retrying(lambda: requeue(study, storage.get_trial(trial._trial_id)), "queueing a retry")
    except optuna.exceptions.UpdateFinishedTrialError:
        return _taken_away(study, trial)
    retrying(lambda: study.tell(trial, values, state=state, skip_if_finished=True), "reporting a trial")
    if error is not None:
        raise error
    return storage.get_trial(trial._trial_id)


def _taken_away(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    frozen = study._storage.get_trial(trial._trial_id)
    log.warning(
        "trial %d was failed by another worker while this one ran it (%s); its parameters run again "
        "in a retry, and this run's result is dropped",
        trial.number,
        frozen.user_attrs.get(FAIL_REASON, "no reason recorded"),
    )
    return frozen
