"""The trial loop of one cell in one process: claim, run, record, tell the listeners."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator

import attrs
import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch import trial_writes
from archsearch.config import Config
from archsearch.errors import TrialFailed
from archsearch.outputs import ensure_study_uid
from archsearch.records import (
    CLAIM,
    CONFIRM,
    FAIL_REASON,
    CellSummary,
    is_recorded,
    stage_of,
    write_claim,
    write_fail_reason,
)
from archsearch.redaction import redact
from archsearch.search.confirm import confirmed_block, give_back, pending_confirmation, queue_confirmation
from archsearch.search.coordination import (
    PID_NAMESPACE,
    WORKER,
    Coordinator,
    Heartbeat,
    requeue,
)
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
    """Run ``cell``'s trials in this process until the cell has its ``n_trials`` search trials and
    then its confirmation trials (``confirm``), the timeout passes or a stop is requested; returns
    where the cell stands."""
    summary = replay(config, cell, study, listeners)
    confirming = config.confirm.top_k * config.confirm.seeds if config.confirm else 0
    listeners.cell_started(cell, summary, config.n_trials + confirming)
    objective.on_epoch = listeners.epoch
    w = config.workers
    trial_writes.claim_new_trials(study._storage, {CLAIM: {"worker": WORKER, "pid_namespace": PID_NAMESPACE}})
    run = CellRun(
        config,
        cell,
        study,
        objective,
        listeners,
        summary,
        stop,
        Coordinator(study, config.n_trials, w.heartbeat_interval, w.grace_period),
        time.monotonic() + config.timeout_hours * 3600 if config.timeout_hours else math.inf,
    )
    with Heartbeat(study, w.heartbeat_interval) as run.heartbeat:
        done = search(run)
        if done and config.confirm is not None:
            done = confirm(run)
    summary.confirmed = confirmed_block(summary.refresh(study), config.direction)
    summary.n_running = 0
    summary.finished = done
    listeners.cell_finished(summary)
    return summary


@attrs.define
class CellRun:
    """One process's run of one cell: what its two stages share."""

    config: Config
    cell: Cell
    study: optuna.Study
    objective: Objective
    listeners: Listeners
    summary: CellSummary
    stop: StopRequest
    coordinator: Coordinator
    deadline: float
    heartbeat: Heartbeat | None = None
    last_refresh: float = attrs.Factory(time.monotonic)

    def going(self) -> bool:
        """Whether to go on (no stop, no timeout), after watching the others' heartbeats."""
        if self.stop.requested:
            return False
        if time.monotonic() > self.deadline:
            log.warning("%s: timeout_hours (%s) reached", self.cell.label, self.config.timeout_hours)
            return False
        recovered = self.coordinator.watch()
        if recovered:  # silent workers' trials, failed here: their rows are written here too
            self.summary.n_failed += recovered
            tell_failed(self.study, self.summary, self.listeners)
        return True

    @contextlib.contextmanager
    def claimed(self) -> Iterator[optuna.Trial]:
        """A claimed trial, its heartbeat beating from the claim on (sampling and building take
        time too), and what this process kept for it dropped once it is done with.

        The trial is marked with who claimed it: a fresh one with its first parameter
        (``trial_writes``), a queued one right after it is taken; a process killed from then on is
        recovered at once."""
        storage = self.study._storage
        trial = retrying(self.study.ask, "claiming a trial")
        try:
            if not trial_writes.created_here(storage, trial._trial_id):
                retrying(lambda: write_claim(trial, WORKER, PID_NAMESPACE), "claiming a trial")
            with self.heartbeat.beating(trial):
                yield trial
        finally:
            trial_writes.forget(storage, trial._trial_id)

    def run(self, trial: optuna.Trial) -> FrozenTrial:
        self.coordinator.own.add(trial._trial_id)
        return run_trial(self.study, trial, self.objective)

    def told(self, frozen: FrozenTrial) -> None:
        """Count a trial this process ran and tell the listeners."""
        self.summary.add(frozen)
        if stage_of(frozen) == CONFIRM:
            self.summary.confirm_pending = max(0, self.summary.confirm_pending - 1)
        if time.monotonic() - self.last_refresh > REFRESH_S:
            self.summary.refresh(self.study)
            self.last_refresh = time.monotonic()
        self.listeners.trial_finished(self.summary.record(frozen), self.summary)


def search(run: CellRun) -> bool:
    """The search stage: claim trials while finished + running ones are below ``n_trials``; True
    once the cell has them all (every worker's)."""
    coordinator, w = run.coordinator, run.config.workers
    while run.going():
        claim = coordinator.may_claim()
        if claim is False:
            return True
        if claim is None:  # the other workers' running trials may finish the cell
            time.sleep(min(1.0, w.heartbeat_interval))
            continue
        with run.claimed() as trial:
            if coordinator.surplus(trial):
                coordinator.release(trial)
                continue
            frozen = run.run(trial)
        run.told(frozen)
    return False


def confirm(run: CellRun) -> bool:
    """The confirmation stage: queue the cell's confirmation trials once (every worker computes
    the same list from the finished search), then run queued ones until none waits or runs; True
    once all have finished. A claim that is not a confirmation trial (a search trial left queued,
    or a fresh one when another worker took the last) is given back."""
    study = run.study
    queued = queue_confirmation(study, run.config)
    if queued:
        log.info("%s: queued %d confirmation trials", run.cell.label, queued)
    while run.going():
        waiting, running = pending_confirmation(study)
        run.summary.confirm_pending = waiting + running
        if not waiting:
            if not running:
                return True
            time.sleep(min(1.0, run.config.workers.heartbeat_interval))
            continue
        with run.claimed() as trial:
            if stage_of(trial) != CONFIRM:
                give_back(study, trial)
                continue
            frozen = run.run(trial)
        run.told(frozen)
    return False


def replay(config: Config, cell: Cell, study: optuna.Study, listeners: Listeners) -> CellSummary:
    """The cell's summary from the storage, its finished trials told to the listeners again
    (``record["replayed"] = True``: the CSV adds the rows it lacks)."""
    summary = CellSummary(config.experiment, cell.budget, cell.horizon, cell.study_name, config.direction)
    summary.study_uid = ensure_study_uid(study._storage, study._study_id, study.study_name)
    summary.storage = redact(config.storage_url)
    for t in study.get_trials(deepcopy=False):
        summary.add(t)
        if is_recorded(t):
            listeners.trial_finished({**summary.record(t), "replayed": True}, summary)
    summary.n_running = 0
    return summary


def tell_failed(study: optuna.Study, summary: CellSummary, listeners: Listeners) -> None:
    """Tell the listeners the cell's failed trials again (``replayed``: the CSV adds the rows it
    lacks, the log has had its line), after the heartbeat watch failed some."""
    failed = retrying(lambda: study.get_trials(deepcopy=False, states=(TrialState.FAIL,)), "reading trials")
    for t in failed:
        if is_recorded(t):
            listeners.trial_finished({**summary.record(t), "replayed": True}, summary)


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
    try:
        frozen = retrying(
            lambda: study.tell(trial, values, state=state, skip_if_finished=True), "reporting a trial"
        )
        # Finished by another worker before this tell, which then skipped (its staged attributes
        # are still waiting): the watcher's record stands.
        if frozen.state != state or trial_writes.is_staged(storage, trial._trial_id):
            frozen = _taken_away(study, trial)
    except optuna.exceptions.UpdateFinishedTrialError:  # failed by a watcher since tell looked
        frozen = _taken_away(study, trial)
    if error is not None:
        raise error
    return frozen


def _taken_away(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    frozen = study._storage.get_trial(trial._trial_id)
    log.warning(
        "trial %d was failed by another worker while this one ran it (%s); its parameters run again "
        "in a retry, and this run's result is dropped",
        trial.number,
        frozen.user_attrs.get(FAIL_REASON, "no reason recorded"),
    )
    return frozen
