"""The confirmation stage: a cell's best configurations trained again over fresh seeds.

A search's single best trial is the best of many noisy draws, so it flatters itself. Once the
search has its trials, the ``top_k`` best distinct configurations (architecture + training values)
are queued again, ``seeds`` times each with fresh seeds shared by every candidate, as trials of the
same study marked ``stage: confirm``. The cell's answer is the candidate with the best mean
validation loss over its seeds, with the 95% t-interval of that mean; it is *separated* from the
runner-up when the two intervals do not overlap. Test loss is reported for the winner only, beside
the constant predictor's, and is never used to choose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.records import (
    CONFIRM,
    CONFIRM_OF,
    CONFIRM_QUEUED,
    CONFIRM_SEED,
    RESULT,
    RETRY_OF,
    STAGE,
    SURPLUS,
    is_surplus,
    stage_of,
    trial_setup,
)
from archsearch.search.coordination import mark_failed
from archsearch.search.queueing import queue_once
from archsearch.storage import retrying

if TYPE_CHECKING:
    from archsearch.config import Config

#: How separation is judged (said in the best JSON and the report).
SEPARATION = "the 95% t-intervals of the mean over seeds of the winner and the runner-up do not overlap"


def confirm_seed(base_seed: int, index: int) -> int:
    """The ``index``-th confirmation seed: the same for every candidate of a study (so their
    seeds pair up), and apart from the search's ``base_seed + trial number`` seeds."""
    return int(np.random.SeedSequence([base_seed % (1 << 32), 0xC0F1, index]).generate_state(1)[0] >> 1)


def _key(trial: FrozenTrial) -> tuple:
    """A configuration: the trial's parameters (architecture coordinates and training values)."""
    return tuple(sorted(trial.params.items()))


def _better(direction: str) -> Any:
    return (lambda t: (t.value, t.number)) if direction == "minimize" else (lambda t: (-t.value, t.number))


def select(trials: Sequence[FrozenTrial], top_k: int, direction: str = "minimize") -> list[FrozenTrial]:
    """The ``top_k`` best distinct configurations among the finished search trials, best first
    (ties by trial number): the first trial of each configuration stands for it."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and stage_of(t) != CONFIRM]
    chosen: dict[tuple, FrozenTrial] = {}
    for t in sorted(done, key=_better(direction)):
        chosen.setdefault(_key(t), t)
        if len(chosen) == top_k:
            break
    return list(chosen.values())


def planned(
    trials: Sequence[FrozenTrial], top_k: int, seeds: int, base_seed: int, direction: str = "minimize"
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The confirmation trials to queue, as ``(params, user_attrs)``: each selected configuration
    once per seed, seed by seed (the first seed of every candidate runs first)."""
    chosen = select(trials, top_k, direction)
    return [
        (
            {**t.system_attrs.get("fixed_params", {}), **t.params},
            {STAGE: CONFIRM, CONFIRM_OF: t.number, CONFIRM_SEED: confirm_seed(base_seed, i)},
        )
        for i in range(seeds)
        for t in chosen
    ]


def queued_key(_params: dict[str, Any], user_attrs: dict[str, Any]) -> tuple[Any, Any] | None:
    """What identifies a queued confirmation trial (None for any other trial)."""
    if user_attrs.get(STAGE) != CONFIRM:
        return None
    return user_attrs.get(CONFIRM_OF), user_attrs.get(CONFIRM_SEED)


def queue_confirmation(study: optuna.Study, config: Config) -> int:
    """Queue the cell's confirmation trials once (see :func:`queue_once`); how many this process
    queued the list to, 0 when another process did or it was queued before."""
    c = config.confirm
    if c is None or study.user_attrs.get(CONFIRM_QUEUED):
        return 0
    trials = retrying(lambda: study.get_trials(deepcopy=False), "reading trials")
    specs = planned(trials, c.top_k, c.seeds, config.training.seed, config.direction)
    return queue_once(study, "confirm", CONFIRM_QUEUED, specs, queued_key)


def pending_confirmation(study: optuna.Study) -> tuple[int, int]:
    """Confirmation trials waiting and running (every worker's), in one read."""
    states = (TrialState.WAITING, TrialState.RUNNING)
    trials = retrying(lambda: study.get_trials(deepcopy=False, states=states), "counting trials")
    confirm = [t for t in trials if stage_of(t) == CONFIRM]
    waiting = sum(t.state == TrialState.WAITING for t in confirm)
    return waiting, len(confirm) - waiting


def give_back(study: optuna.Study, trial: optuna.Trial) -> None:
    """Give back a claim the confirmation stage does not run: failed and marked ``surplus``
    (records skip it), its parameters not queued again (the search has its trials)."""
    try:
        mark_failed(study._storage, trial._trial_id, SURPLUS, True, "giving back a claim")
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # failed meanwhile by a watcher: given back either way


def confirmed_block(trials: Sequence[FrozenTrial], direction: str = "minimize") -> dict[str, Any] | None:
    """The best JSON's ``confirmed`` block from a cell's trials (None without confirmation)."""
    found = summarize(trials, direction)
    return None if found is None else found.to_json()


@attrs.frozen
class Candidate:
    """One confirmed configuration: its architecture, training values and per-seed losses."""

    config_of: int
    arch: dict[str, Any]
    n_params: int
    params: dict[str, Any]
    values: list[float]
    mean: float
    std: float
    low: float
    high: float
    test_loss: float | None = None
    baseline_test_loss: float | None = None


@attrs.frozen
class Confirmation:
    """A cell's confirmed answer (``complete``: every confirmation trial has finished)."""

    winner: Candidate
    runner_up: Candidate | None
    separated: bool | None
    method: str
    seeds: int
    complete: bool
    search_best_of: int | None
    agrees: bool
    candidates: list[Candidate]

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the 95% t-interval of the mean (nan-wide for one value)."""
    from scipy import stats

    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, math.nan, -math.inf, math.inf
    std = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def _candidate(source: FrozenTrial, runs: list[FrozenTrial]) -> Candidate:
    setup = trial_setup(source)
    values = [float(t.value) for t in runs]
    mean, std, low, high = interval(values)
    return Candidate(
        config_of=source.number,
        arch={k: setup.get(k) for k in ("d_model", "n_layers", "n_heads", "d_ff")},
        n_params=int(setup.get("param_count", 0)),
        params=dict(setup.get("training", {})),
        values=values,
        mean=mean,
        std=std,
        low=low,
        high=high,
    )


def _with_test(c: Candidate, runs: list[FrozenTrial]) -> Candidate:
    tests = [t.user_attrs.get(RESULT, {}).get("test_loss") for t in runs]
    tests = [x for x in tests if isinstance(x, float) and math.isfinite(x)]
    baseline = trial_setup(runs[0]).get("baseline_test_loss") if runs else None
    baseline = baseline if isinstance(baseline, float) and math.isfinite(baseline) else None
    return attrs.evolve(c, test_loss=float(np.mean(tests)) if tests else None, baseline_test_loss=baseline)


def summarize(trials: Sequence[FrozenTrial], direction: str = "minimize") -> Confirmation | None:
    """The cell's confirmed answer from its trials, or None when it has no confirmation trial.

    Candidates with no finished confirmation trial yet are left out; the answer is provisional
    (``complete`` False) while any confirmation trial waits or runs."""
    confirm = [t for t in trials if stage_of(t) == CONFIRM and not is_surplus(t)]
    if not confirm:
        return None
    by_number = {t.number: t for t in trials}
    runs: dict[int, list[FrozenTrial]] = {}
    seen: set[tuple[Any, Any]] = set()
    for t in sorted(confirm, key=lambda t: t.number):
        key = (t.user_attrs.get(CONFIRM_OF), t.user_attrs.get(CONFIRM_SEED))
        if t.state == TrialState.COMPLETE and key[0] in by_number and key not in seen:
            seen.add(key)  # one value per seed: a trial queued twice (a retried write) counts once
            runs.setdefault(key[0], []).append(t)
    pending = any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in confirm)
    sign = 1.0 if direction == "minimize" else -1.0
    ranked = sorted(
        (_candidate(by_number[n], r) for n, r in runs.items()), key=lambda c: (sign * c.mean, c.config_of)
    )
    if not ranked:
        return None
    winner = _with_test(ranked[0], runs[ranked[0].config_of])
    runner = ranked[1] if len(ranked) > 1 else None
    separated = None
    if runner is not None and len(winner.values) > 1 and len(runner.values) > 1:
        separated = winner.high < runner.low if direction == "minimize" else winner.low > runner.high
    search = select(trials, 1, direction)
    search_best = search[0].number if search else None
    first = [t for t in confirm if RETRY_OF not in t.user_attrs]
    return Confirmation(
        winner=winner,
        runner_up=runner,
        separated=separated,
        method=SEPARATION,
        seeds=len({t.user_attrs.get(CONFIRM_SEED) for t in first}),
        complete=not pending,
        search_best_of=search_best,
        agrees=search_best == winner.config_of,
        candidates=[winner, *ranked[1:]],
    )
