"""Queue a list of trials on a study once, even with several processes starting together, and
finish the list if the process queueing it died (coverage trials, confirmation trials).

The first process to create the marker study ``{study}:{what}`` (the storage's unique study names
make that atomic) queues the trials that are not there yet, records on the study that the list is
queued (``done_attr``), then deletes the marker, so optuna-dashboard lists one study per cell. A
process that finds the marker waits while trials keep appearing; if the record does not come (the
queueing process died) it queues the missing ones itself. "Missing" is counted as a multiset: a
list that holds the same parameters twice (coverage with ``k >= 2``) is completed to twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import optuna

from archsearch.records import RETRY_OF, is_surplus
from archsearch.storage import retrying

log = logging.getLogger("archsearch")
#: Seconds without a new trial after which a process waiting for another to queue takes it for
#: dead and queues the missing trials itself.
STALL_S = 10.0

Spec = tuple[dict[str, Any], dict[str, Any]]  # (params, user_attrs) of one trial to queue
Key = Callable[[dict[str, Any], dict[str, Any]], Hashable | None]  # None: not one of the list's


def queue_once(study: optuna.Study, what: str, done_attr: str, specs: Sequence[Spec], key: Key) -> int:
    """Queue ``specs`` on ``study`` once; returns how many this process completed the list to
    (``len(specs)``), or 0 when another process did. ``key(params, user_attrs)`` says which
    queued trial stands for which entry (None for trials not of this list)."""
    if not specs or study.user_attrs.get(done_attr):
        return 0
    marker = f"{study.study_name}:{what}"
    try:
        retrying(lambda: optuna.create_study(study_name=marker, storage=study._storage), f"queueing {what}")
        won = True
    except optuna.exceptions.DuplicatedStudyError:
        won = False
    if won and study.user_attrs.get(done_attr):  # queued by a process that removed its marker
        _delete(study, marker)
        return 0
    if not won:
        if _wait_for(study, done_attr):
            return 0
        log.warning(
            "%s: the queueing of %s trials stalled; queueing the missing ones", study.study_name, what
        )
    for params, user_attrs in missing(study, specs, key):
        retrying(lambda p=params, u=user_attrs: study.enqueue_trial(p, user_attrs=u), f"queueing {what}")
    retrying(lambda: study.set_user_attr(done_attr, len(specs)), f"queueing {what}")
    _delete(study, marker)
    return len(specs)


def missing(study: optuna.Study, specs: Sequence[Spec], key: Key) -> list[Spec]:
    """The entries of ``specs`` that no queued trial stands for yet (retries and given-back
    claims do not count: they stand in for a trial that does)."""
    have: Counter = Counter()
    for t in study.get_trials(deepcopy=False):
        if RETRY_OF in t.user_attrs or is_surplus(t):
            continue
        k = key(t.system_attrs.get("fixed_params", {}), t.user_attrs)
        if k is not None:
            have[k] += 1
    out = []
    for params, user_attrs in specs:
        k = key(params, user_attrs)
        if have[k] > 0:
            have[k] -= 1
        else:
            out.append((params, user_attrs))
    return out


def _wait_for(study: optuna.Study, done_attr: str) -> bool:
    """Wait while another process queues (trials keep appearing); True once it recorded that
    it is done, False when it stalled for :data:`STALL_S`."""
    seen, progress = -1, time.monotonic()
    while time.monotonic() - progress < STALL_S:
        if study.user_attrs.get(done_attr):
            return True
        n = study._storage.get_n_trials(study._study_id)
        if n != seen:
            seen, progress = n, time.monotonic()
        time.sleep(0.2)
    return False


def _delete(study: optuna.Study, marker: str) -> None:
    try:
        retrying(lambda: optuna.delete_study(study_name=marker, storage=study._storage), "removing a marker")
    except KeyError:
        pass  # removed by another process that completed the list
