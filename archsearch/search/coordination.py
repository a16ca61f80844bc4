"""Several processes on one study: exact trial counts, heartbeats, dead workers' trials retried.

Works the same on every Optuna storage (SQLite, PostgreSQL, a journal file): a worker claims a
trial only while finished + running trials are below ``n_trials`` and gives back a surplus claim;
a running trial carries a heartbeat counter that its worker advances every ``interval`` seconds,
and a trial whose counter stands still for ``grace`` seconds (by the observer's own clock, so
clock skew between machines does not matter) is failed and its parameters are queued again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch import trial_writes
from archsearch.records import (
    CONFIRM_OF,
    CONFIRM_SEED,
    COVERAGE,
    FAIL_REASON,
    HEARTBEAT,
    RETRY_OF,
    STAGE,
    SURPLUS,
    trial_pid_namespace,
    trial_worker,
)
from archsearch.storage import last_recovery, retrying

log = logging.getLogger("archsearch")
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _pid_namespace() -> int | None:
    """The inode of this process's PID namespace (Linux): containers that share a host name (host
    networking) still have their own, so a process id is only compared within one."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


PID_NAMESPACE = _pid_namespace()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counts(study: optuna.Study) -> dict[TrialState, int]:
    """Running, complete and pruned trials, from one read of the storage (one snapshot: a trial
    that finishes meanwhile is counted once, as running or as finished)."""
    storage, sid = study._storage, study._study_id
    states = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    trials = retrying(lambda: storage.get_all_trials(sid, deepcopy=False, states=states), "counting trials")
    found = collections.Counter(t.state for t in trials)
    return {s: found[s] for s in states}


def count_finished(study: optuna.Study) -> int:
    """Complete and pruned trials in the storage (every worker's)."""
    c = counts(study)
    return c[TrialState.COMPLETE] + c[TrialState.PRUNED]


def mark_failed(storage: Any, trial_id: int, key: str, value: Any, what: str) -> None:
    """Set a user attribute that says why (``fail_reason``, ``surplus``), then fail the trial;
    raises ``UpdateFinishedTrialError`` when it has finished meanwhile."""
    retrying(lambda: storage.set_trial_user_attr(trial_id, key, value), what)
    retrying(lambda: storage.set_trial_state_values(trial_id, state=TrialState.FAIL), what)


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue ``trial``'s parameters again, marked ``retry_of`` (the first trial of the chain).

    The parameters are those it was queued with (a coverage trial's architecture) under those it
    suggested: a trial that died before its first suggestion has only the former. Callers queue
    before they fail the trial, so a worker that sees its slot free also sees the queued trial
    (asks take queued trials first) and cannot take the slot with a fresh one instead.
    """
    params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    u = trial.user_attrs
    carried = {k: u[k] for k in (STAGE, CONFIRM_OF, CONFIRM_SEED) if k in u}  # a confirmation trial's
    study.enqueue_trial(
        params,
        user_attrs={RETRY_OF: u.get(RETRY_OF, trial.number), COVERAGE: u.get(COVERAGE, False), **carried},
    )


def fail_and_retry(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Fail another worker's RUNNING trial and queue its parameters again, once even if several
    workers try: the one that creates the marker study ``{study}:retry:{trial id}`` does it (the
    storage's unique study names make that atomic), then deletes the marker, so that no empty
    study is left for optuna-dashboard to list. A worker that creates the marker after that
    reads the trial failed (``trial`` is its older snapshot) and does nothing. If the trial
    finished after all, the queued retry is taken back."""
    storage = study._storage
    marker = f"{study.study_name}:retry:{trial._trial_id}"
    try:
        retrying(lambda: optuna.create_study(study_name=marker, storage=storage), "electing a retry")
    except optuna.exceptions.DuplicatedStudyError:
        return False  # another worker is retrying it
    try:
        current = retrying(lambda: storage.get_trial(trial._trial_id), "electing a retry")
        if current.state != TrialState.RUNNING:
            return False  # retried by the marker's previous holder, or finished meanwhile
        retrying(lambda: requeue(study, current), "queueing a retry")
        try:
            mark_failed(storage, current._trial_id, FAIL_REASON, reason, "failing a trial")
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            _withdraw_retry(study, current)  # it finished after all
            return False
        return True
    finally:
        _delete_marker(storage, marker)


def _delete_marker(storage: Any, marker: str) -> None:
    """Delete a marker study that did its job; one that cannot be deleted only shows in listings."""
    try:
        retrying(lambda: optuna.delete_study(study_name=marker, storage=storage), "deleting a marker")
    except Exception as exc:  # noqa: BLE001 - the retry is decided; a leftover marker is harmless
        log.warning("marker study %s not deleted: %s", marker, exc)


def _withdraw_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Take back the retry of ``trial`` that this worker queued (still WAITING): failed and marked
    ``surplus`` (one claimed meanwhile is failed under its worker, which drops it). The retries of
    one chain are alike, so the newest is taken back; one that another worker queued (the trial's
    own, after an error) stays queued."""
    chain = trial.user_attrs.get(RETRY_OF, trial.number)
    storage = study._storage
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for queued in sorted(waiting, key=lambda t: t.number, reverse=True):
        if queued.user_attrs.get(RETRY_OF) != chain:
            continue
        try:
            mark_failed(storage, queued._trial_id, SURPLUS, True, "withdrawing a retry")
            return
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            pass  # claimed and finished meanwhile: an older one of the chain is taken back instead


def recover_orphans(study: optuna.Study) -> int:
    """Fail and re-queue RUNNING trials of dead processes on this host (at once, no grace).

    A trial's worker is known from its claim (written with its first parameter, :mod:`archsearch.
    trial_writes`), so a process killed at any later point of a trial is found. Only processes of
    this host name and PID namespace are judged by their process id; any other worker's trial (and
    one whose claim was never written: killed while the sampler sampled its first parameter) is
    left to the heartbeat watch (:meth:`Coordinator.watch`)."""
    host = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial_worker(t)
        h, _, pid = worker.rpartition(":")
        if h != host or not pid.isdigit() or trial_pid_namespace(t) != PID_NAMESPACE:
            continue
        if _pid_alive(int(pid)) and worker != WORKER:
            continue
        n += fail_and_retry(study, t, f"worker {worker} died mid-trial")
    return n


class Heartbeat:
    """Advances the running trial's ``heartbeat`` user attribute every ``interval`` seconds, and
    writes what the trial staged (:mod:`archsearch.trial_writes`) once it has run
    :data:`~archsearch.trial_writes.FLUSH_AFTER_S` (a shorter trial writes it with its end).

    One thread per worker and cell (starting a thread per trial costs milliseconds): the main
    thread says which trial runs with :meth:`beating`, and the thread beats for it meanwhile."""

    def __init__(self, study: optuna.Study, interval: float) -> None:
        self.storage, self.interval = study._storage, interval
        self._trial_id: int | None = None
        self._flush_at: float | None = None
        self._beats = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="archsearch-heartbeat", daemon=True)

    def _beat(self) -> None:
        tick = min(self.interval, trial_writes.FLUSH_AFTER_S / 2)
        next_beat = time.monotonic() + self.interval
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                trial_id, flush = self._trial_id, self._flush_at is not None and now >= self._flush_at
                if flush:
                    self._flush_at = None
            if trial_id is not None and flush:
                self._write("staged attributes", trial_writes.flush, self.storage, trial_id)
            if now < next_beat:
                continue
            next_beat = now + self.interval
            with self._lock:
                trial_id = self._trial_id
                self._beats += 1
                beat = self._beats
            if trial_id is not None:
                self._write("heartbeat", self.storage.set_trial_user_attr, trial_id, HEARTBEAT, beat)

    @staticmethod
    def _write(what: str, call: Any, *args: Any) -> None:
        try:
            call(*args)
        except Exception as exc:  # noqa: BLE001 - not fatal: the next beat, or the trial's end, writes it
            log.debug("%s not written: %s", what, exc)

    @contextlib.contextmanager
    def beating(self, trial: optuna.Trial) -> Iterator[None]:
        with self._lock:
            self._trial_id = trial._trial_id
            self._flush_at = time.monotonic() + trial_writes.FLUSH_AFTER_S
        try:
            yield
        finally:
            with self._lock:
                self._trial_id = self._flush_at = None

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()


class Coordinator:
    """Decides, for one worker on one cell, whether to claim another trial, and watches the
    other workers' running trials for missed heartbeats."""

    def __init__(self, study: optuna.Study, n_trials: int, interval: float, grace: float) -> None:
        self.study, self.n_trials, self.interval, self.grace = study, n_trials, interval, grace
        self.seen: dict[int, tuple[Any, float]] = {}  # trial id -> (heartbeat, when it last changed)
        self.own: set[int] = set()
        self.last_watch = -float("inf")
        self.refresh_s = 2.0
        self._last: tuple[float, int, int] | None = None  # (when, finished, running) last counted
        self.local = 0  # trials this worker claimed since then

    def finished(self) -> int:
        return count_finished(self.study)

    def may_claim(self) -> bool | None:
        """True: claim a trial; False: the cell is done; None: others' running trials may still
        complete it, wait and ask again.

        A worker that was alone at its last count (no trial running) and is far from the end
        (finished + its own claims since then + ``MARGIN`` below ``n_trials``) trusts a count up
        to ``refresh_s`` old; otherwise every decision reads the storage."""
        now = time.monotonic()
        if self._fast(now):
            return True
        c = counts(self.study)
        done = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
        self._last, self.local = (now, done, c[TrialState.RUNNING]), 0
        if done >= self.n_trials:
            return False
        return True if done + c[TrialState.RUNNING] < self.n_trials else None

    MARGIN = 8

    def _fast(self, now: float) -> bool:
        if self._last is None or now - self._last[0] >= self.refresh_s:
            return False
        _, done, running = self._last
        return running == 0 and done + self.local + self.MARGIN < self.n_trials

    def surplus(self, trial: optuna.Trial) -> bool:
        """Whether a just-claimed trial is one too many (workers raced for the last slots).

        Trial numbers are global and contiguous, so finished + running trials never exceed the
        claimed trial's number + 1: below ``n_trials`` no count is needed. Above it the storage
        is counted, which makes the decision exact however stale :meth:`may_claim` was."""
        self.local += 1
        if trial.number < self.n_trials:
            return False
        c = counts(self.study)
        return c[TrialState.COMPLETE] + c[TrialState.PRUNED] + c[TrialState.RUNNING] > self.n_trials

    def release(self, trial: optuna.Trial) -> None:
        """Give a surplus claim back: failed and marked ``surplus`` (records skip it); a queued
        trial's fixed parameters are queued again first (see :func:`requeue`)."""
        storage = self.study._storage
        frozen = retrying(lambda: storage.get_trial(trial._trial_id), "giving back a claim")
        fixed = frozen.system_attrs.get("fixed_params")
        if fixed:
            retrying(
                lambda: self.study.enqueue_trial(dict(fixed), user_attrs=dict(frozen.user_attrs)),
                "giving back a claim",
            )
        try:
            mark_failed(storage, trial._trial_id, SURPLUS, True, "giving back a claim")
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # already failed (by a watcher that missed its heartbeat): it is given back either way
        time.sleep(random.uniform(0.05, 0.3))  # two workers that collided do not collide again

    def watch(self) -> int:
        """Fail and re-queue other workers' trials whose heartbeat stood still for ``grace`` s."""
        now = time.monotonic()
        if now - self.last_watch < min(self.interval, 5.0):
            return 0
        self.last_watch = now
        recovered = 0
        running = retrying(
            lambda: self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)), "watching trials"
        )
        alive = {t._trial_id for t in running}
        self.seen = {k: v for k, v in self.seen.items() if k in alive}
        for t in running:
            if t._trial_id in self.own:
                continue
            beat = t.user_attrs.get(HEARTBEAT)
            previous = self.seen.get(t._trial_id)
            if previous is None or previous[0] != beat:
                self.seen[t._trial_id] = (beat, now)
            elif now - max(previous[1], last_recovery()) > self.grace:  # an outage is no one's silence
                worker = trial_worker(t) or "?"
                reason = f"no heartbeat from worker {worker} for {now - previous[1]:.0f} s"
                if fail_and_retry(self.study, t, reason):
                    log.warning("trial %d: %s; failed and queued again", t.number, reason)
                    recovered += 1
        return recovered
