"""A cell's study: opened or resumed, checked against the search it was made for, seeded for
this process, and its coverage trials queued once."""

from __future__ import annotations

import logging
import secrets
import warnings
from typing import Any

import numpy as np
import optuna

from archsearch.config import Config
from archsearch.errors import ArchsearchError
from archsearch.records import COVERAGE, COVERAGE_QUEUED, mark_cell, write_session
from archsearch.search.coordination import WORKER
from archsearch.search.identity import check_unchanged, fingerprint
from archsearch.search.matrix import Cell, coverage_order
from archsearch.search.queueing import queue_once
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
    name_objective(study, config)
    return study, encoding


#: The objective's name for each task kind: the validation loss of
#: :func:`archsearch.data.tasks.loss_function` (optuna-dashboard shows it instead of "Objective 0").
LOSS_NAMES = {"threshold": "val_bce_loss", "forecast": "val_mse_loss"}


def name_objective(study: optuna.Study, config: Config) -> None:
    """Name the study's objective after the task's loss, once (Optuna's ``set_metric_names``)."""
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([LOSS_NAMES[config.task.kind]])


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


def enqueue_coverage(study: optuna.Study, config: Config, cell: Cell, encoding: Encoding) -> int:
    """Queue the coverage trials (every architecture ``allocation.k`` times, extremes first) once
    per study, even with several processes starting together, completing the rounds if the
    process queueing them died (:func:`archsearch.search.queueing.queue_once`)."""
    if config.allocation.strategy != "coverage" or len(cell.architectures) < 2:
        return 0
    order = coverage_order(cell.architectures, config.allocation.k)
    specs = [(encoding.params(arch), {COVERAGE: True}) for arch in order]
    return queue_once(study, "coverage", COVERAGE_QUEUED, specs, _coverage_key)


def _coverage_key(params: dict[str, Any], user_attrs: dict[str, Any]) -> tuple | None:
    return tuple(sorted(params.items())) if user_attrs.get(COVERAGE) else None


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
