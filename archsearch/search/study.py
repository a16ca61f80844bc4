"""A cell's study: opened or resumed, checked against the search it was made for, seeded for
this process, and its coverage trials queued once."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import numpy as np
import optuna

from archsearch.config import Config
from archsearch.errors import ArchsearchError
from archsearch.records import (
    COVERAGE,
    coverage_queued,
    mark_cell,
    write_coverage_queued,
    write_session,
)
from archsearch.search.coordination import WORKER
from archsearch.search.identity import check_unchanged, fingerprint
from archsearch.search.matrix import Cell, coverage_order
from archsearch.space.encodings import Encoding, make_encoding

log = logging.getLogger("archsearch")


def open_study(
    config: Config, cell: Cell, storage: optuna.storages.BaseStorage, sampler: Any
) -> tuple[optuna.Study, Encoding]:
    """The cell's study (created, or loaded to resume) with its encoding; ``sampler(n)`` makes
    the sampler for a study that already holds ``n`` trials."""
    encoding = make_encoding(config.architecture.encoding, cell.architectures)
    study = optuna.create_study(
        study_name=cell.study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),  # a stand-in: the real one needs the trial count
        pruner=make_pruner(config),
        direction=config.direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != config.direction:
        raise ArchsearchError(
            f"study {cell.study_name!r} was created to {study.direction.name.lower()}; the config says "
            f"direction: {config.direction}"
        )
    check_unchanged(study, fingerprint(config, cell, encoding))
    trials_before = storage.get_n_trials(study._study_id)
    nonce = secrets.randbits(63)
    study.sampler = sampler(trials_before, nonce)
    write_session(study, nonce, {"worker": WORKER, "trials_before": trials_before})
    mark_cell(study, config.experiment, cell.budget, cell.horizon)
    return study, encoding


def make_pruner(config: Config) -> optuna.pruners.BasePruner:
    name, options = config.pruner.name, dict(config.pruner.options)
    classes = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    try:
        return classes[name](**options)
    except TypeError as exc:
        raise ArchsearchError(f"pruner.options: {name} does not accept these options: {exc}") from None


#: Seconds without a new trial after which a process waiting for another to queue the coverage
#: trials takes it for dead and queues the missing ones itself.
COVERAGE_STALL_S = 10.0


def enqueue_coverage(study: optuna.Study, config: Config, cell: Cell, encoding: Encoding) -> int:
    """Queue the coverage trials once per study, even with several processes starting together.

    The first process to create the marker study ``{study}:coverage`` in the same storage (the
    storage's unique study names make that atomic) queues the trials and then records that it
    did; a process that finds the marker waits while trials keep appearing, and if the record
    does not come (its creator died) queues the missing ones, skipping parameters already queued
    or run.
    """
    if config.allocation.strategy != "coverage" or len(cell.architectures) < 2:
        return 0
    if coverage_queued(study):
        return 0
    marker = f"{study.study_name}:coverage"
    try:
        optuna.create_study(study_name=marker, storage=study._storage)
        winner = True
    except optuna.exceptions.DuplicatedStudyError:
        winner = False
    if not winner:  # the winner is queueing: wait while it makes progress
        seen, progress = -1, time.monotonic()
        while time.monotonic() - progress < COVERAGE_STALL_S:
            if coverage_queued(study):
                return 0
            n = study._storage.get_n_trials(study._study_id)
            if n != seen:
                seen, progress = n, time.monotonic()
            time.sleep(0.2)
        log.warning("%s: the coverage trials' queueing stalled; queueing the missing ones", study.study_name)
    order = coverage_order(cell.architectures, config.allocation.k)
    for arch in order:
        study.enqueue_trial(encoding.params(arch), user_attrs={COVERAGE: True}, skip_if_exists=not winner)
    write_coverage_queued(study, len(order))
    return len(order)


def sampler_seed(seed: int | None, first: bool, nonce: int) -> int | None:
    """The sampler seed of one process's session on a study.

    Processes that share a study must not share a sampler seed, nor may a resumed run reuse the
    seed of any session before it: each sampler would draw the same random numbers again, and
    propose the parameters already tried. The ``first`` session (worker 0 opening an empty study)
    keeps ``seed``, so a run in one process repeats a seeded run exactly; every other session
    derives its seed from ``seed`` and its own random ``nonce`` (recorded on the study), never
    from a count that two sessions can share. ``None`` stays ``None``.
    """
    if seed is None or first:
        return seed
    return int(np.random.SeedSequence([seed % (1 << 64), nonce]).generate_state(1)[0])
