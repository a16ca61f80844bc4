"""``perturb-best``: an example third-party sampler plugin for archsearch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from archsearch import hookimpl
from archsearch.registry import SamplerPlugin


class PerturbBestSampler(optuna.samplers.BaseSampler):
    """Random for the first ``n_startup_trials``, then the best trial's parameters, perturbed."""

    def __init__(self, n_startup_trials: int = 8, scale: float = 0.1, seed: int | None = None) -> None:
        if n_startup_trials < 0 or not 0 < scale <= 1:
            raise ValueError("n_startup_trials must be >= 0 and scale in (0, 1]")
        self.n_startup_trials = n_startup_trials
        self.scale = scale
        self.seed = seed
        self._random = optuna.samplers.RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._random.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def _best(self, study: optuna.Study) -> FrozenTrial | None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.n_startup_trials or not done:
            return None
        pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
        return pick(done, key=lambda t: t.value)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        best = self._best(study)
        if best is None or param_name not in best.params:
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        # A generator per (seed, trial, parameter): the same seed gives the same sequence.
        rng = np.random.default_rng([self.seed or 0, trial.number, sum(map(ord, param_name))])
        value = best.params[param_name]
        d = param_distribution
        if isinstance(d, CategoricalDistribution):
            if rng.random() < self.scale and len(d.choices) > 1:
                others = [c for c in d.choices if c != value]
                return others[rng.integers(len(others))]
            return value if value in d.choices else d.choices[0]
        if isinstance(d, FloatDistribution | IntDistribution):
            lo, hi, v = float(d.low), float(d.high), float(value)
            if d.log:
                lo, hi, v = math.log(lo), math.log(hi), math.log(v)
            v = min(hi, max(lo, v + rng.normal(0.0, self.scale * (hi - lo or 1.0))))
            if d.log:
                v = math.exp(v)
            v = min(float(d.high), max(float(d.low), v))
            if isinstance(d, IntDistribution):
                step = d.step or 1
                return int(min(d.high, max(d.low, d.low + round((v - d.low) / step) * step)))
            if d.step is not None:
                return float(min(d.high, d.low + round((v - d.low) / d.step) * d.step))
            return v
        return self._random.sample_independent(study, trial, param_name, param_distribution)


def factory(options: Mapping[str, Any], seed: int | None) -> PerturbBestSampler:
    return PerturbBestSampler(seed=seed, **dict(options))


@hookimpl
def archsearch_register_samplers() -> list[SamplerPlugin]:
    return [SamplerPlugin("perturb-best", factory, "random start, then the best trial perturbed")]
