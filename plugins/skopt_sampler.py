"""``SkoptSampler``: an Optuna sampler that asks a fresh ``skopt.Optimizer`` on every trial.

Optuna 5 no longer ships a scikit-optimize integration, so this talks to ``skopt.Optimizer``
directly. The sampler keeps no optimisation state between trials: on every
:meth:`~SkoptSampler.sample_relative` it reads the study's finished trials from the storage,
tells them all to a new optimizer and asks it for one point. Trials written by other processes
(a shared RDB or journal storage) are therefore used as soon as they finish, and a sampler
rebuilt in a new process continues exactly where the old one stood.

* **Search space.** Relative sampling covers the intersection search space of the finished
  trials (:class:`optuna.search_space.IntersectionSearchSpace`), without single-valued
  distributions. Float → ``Real`` (``log`` → ``prior="log-uniform"``; ``step`` → an ``Integer``
  index into the grid ``low, low + step, …``); int → ``Integer`` (``log`` → log-uniform;
  ``step`` → ``Integer`` index); categorical → ``Categorical`` over the *indices* of the choices,
  so any choice type (``None``, mixed ints/floats/strings) works. Parameters outside the relative
  space (the first trial, conditional parameters) come from a seeded
  :class:`optuna.samplers.RandomSampler`.
* **History.** ``COMPLETE`` trials are told with their value (negated when the study maximises).
  ``FAIL`` trials are skipped. ``PRUNED`` trials are skipped unless
  ``consider_pruned_trials=True``, in which case their last reported intermediate value stands in
  for the objective (a pruned trial without intermediate values is skipped). Trials whose value is
  not finite, that lack a parameter of the space, or whose value lies outside the current
  distribution (an enqueued trial with an out-of-range fixed value) are skipped.
* **Determinism.** The optimizer built for trial *n* is seeded with
  ``SeedSequence([seed, n])``, so one seed gives one sequence of suggestions, and parallel
  workers asking at the same time still get different points.
* **Cost.** A Gaussian-process ask refits the model on every trial: about 0.1-0.5 s with a few
  dozen finished trials.
"""

from __future__ import annotations

import math
import numbers
import random
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from archsearch.errors import PluginError

if TYPE_CHECKING:
    from optuna.study import Study

BASE_ESTIMATORS = ("GP", "RF", "ET")
ACQ_FUNCS = ("gp_hedge", "EI", "PI", "LCB")
ACQ_OPTIMIZERS = ("auto", "sampling", "lbfgs")

GBRT_MESSAGE = (
    "sampler 'skopt': base_estimator 'GBRT' is not supported: scikit-optimize 0.10.2 wraps "
    "scikit-learn's GradientBoostingRegressor in a class that current scikit-learn no longer "
    'recognises as a regressor, so skopt.Optimizer fails with "... has to be a regressor". '
    "Use base_estimator 'GP' (Gaussian process, the default), 'RF' (random forest) or "
    "'ET' (extra trees) instead."
)


class _Codec:
    """Maps Optuna parameter values to skopt points and back, for one search space."""

    def __init__(self, search_space: Mapping[str, BaseDistribution]) -> None:
        from skopt.space import Categorical, Integer, Real

        self.names = list(search_space)
        self.distributions = dict(search_space)
        self.dimensions: list[Any] = []
        for name, dist in search_space.items():
            if isinstance(dist, FloatDistribution):
                if dist.step is not None:
                    n_steps = round((dist.high - dist.low) / dist.step)
                    self.dimensions.append(Integer(0, n_steps, name=name))
                else:
                    prior = "log-uniform" if dist.log else "uniform"
                    self.dimensions.append(Real(dist.low, dist.high, prior=prior, name=name))
            elif isinstance(dist, IntDistribution):
                if dist.log:
                    self.dimensions.append(Integer(dist.low, dist.high, prior="log-uniform", name=name))
                elif dist.step != 1:
                    self.dimensions.append(Integer(0, (dist.high - dist.low) // dist.step, name=name))
                else:
                    self.dimensions.append(Integer(dist.low, dist.high, name=name))
            elif isinstance(dist, CategoricalDistribution):
                self.dimensions.append(Categorical(list(range(len(dist.choices))), name=name))
            else:  # pragma: no cover - Optuna has no other distribution kinds today
                raise PluginError(
                    f"sampler 'skopt' cannot handle parameter {name!r} with distribution {dist!r}"
                )

    def encode(self, params: Mapping[str, Any]) -> list[Any] | None:
        """The skopt point for a trial's params, or None if one is missing or out of range."""
        point: list[Any] = []
        for name in self.names:
            if name not in params:
                return None
            dist = self.distributions[name]
            try:
                internal = dist.to_internal_repr(params[name])
            except (ValueError, TypeError):
                return None
            if not dist._contains(internal):
                return None
            if isinstance(dist, FloatDistribution):
                if dist.step is not None:
                    point.append(round((internal - dist.low) / dist.step))
                else:
                    point.append(float(internal))
            elif isinstance(dist, IntDistribution):
                value = int(internal)
                if not dist.log and dist.step != 1:
                    point.append((value - dist.low) // dist.step)
                else:
                    point.append(value)
            else:  # categorical: the internal representation is the index of the choice
                point.append(int(internal))
        return point

    def decode(self, point: Sequence[Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, x in zip(self.names, point, strict=True):
            dist = self.distributions[name]
            if isinstance(dist, FloatDistribution):
                if dist.step is not None:
                    value = dist.low + int(x) * dist.step
                else:
                    value = float(x)
                params[name] = float(min(max(value, dist.low), dist.high))
            elif isinstance(dist, IntDistribution):
                if not dist.log and dist.step != 1:
                    value = dist.low + int(x) * dist.step
                else:
                    value = int(x)
                params[name] = int(min(max(value, dist.low), dist.high))
            else:
                assert isinstance(dist, CategoricalDistribution)
                params[name] = dist.choices[int(x)]
        return params


class SkoptSampler(optuna.samplers.BaseSampler):
    """Bayesian optimisation with scikit-optimize, rebuilt from the storage on every trial.

    Args:
        base_estimator: the surrogate model: ``"GP"`` (Gaussian process, default), ``"RF"``
            (random forest) or ``"ET"`` (extra trees). ``"GBRT"`` is refused (broken in
            scikit-optimize 0.10.2 with current scikit-learn).
        n_initial_points: how many finished trials are needed before the surrogate model is used;
            until then skopt proposes random points (at least one finished trial is always needed).
        acq_func: ``"EI"`` (default), ``"PI"``, ``"LCB"`` or ``"gp_hedge"``. Since the optimizer
            is rebuilt for every trial, ``gp_hedge`` cannot learn which acquisition works best and
            picks one at random each time; hence the default ``"EI"``.
        acq_optimizer: ``"auto"`` (default: ``lbfgs`` for GP, ``sampling`` for trees),
            ``"sampling"`` or ``"lbfgs"`` (GP only).
        consider_pruned_trials: tell pruned trials with their last intermediate value.
        seed: seeds both the skopt optimizers and the independent random sampler.
    """

    def __init__(
        self,
        *,
        base_estimator: str = "GP",
        n_initial_points: int = 10,
        acq_func: str = "EI",
        acq_optimizer: str = "auto",
        consider_pruned_trials: bool = False,
        seed: int | None = None,
    ) -> None:
        try:
            import skopt
        except ImportError as exc:  # pragma: no cover - scikit-optimize is a dependency
            raise PluginError(
                "sampler 'skopt' needs the scikit-optimize package, which failed to import "
                f"({exc}); install it with `pip install scikit-optimize`, or choose another sampler"
            ) from exc

        estimator = str(base_estimator).upper()
        if estimator == "GBRT":
            raise PluginError(GBRT_MESSAGE)
        if estimator not in BASE_ESTIMATORS:
            raise PluginError(
                f"sampler 'skopt': unknown base_estimator {base_estimator!r}; "
                f"expected one of {', '.join(BASE_ESTIMATORS)}"
            )
        if acq_func not in ACQ_FUNCS:
            raise PluginError(
                f"sampler 'skopt': unknown acq_func {acq_func!r}; expected one of {', '.join(ACQ_FUNCS)}"
            )
        if acq_optimizer not in ACQ_OPTIMIZERS:
            raise PluginError(
                f"sampler 'skopt': unknown acq_optimizer {acq_optimizer!r}; "
                f"expected one of {', '.join(ACQ_OPTIMIZERS)}"
            )
        if (
            isinstance(n_initial_points, bool)
            or not isinstance(n_initial_points, numbers.Integral)
            or n_initial_points < 0
        ):
            raise PluginError(
                f"sampler 'skopt': n_initial_points must be a whole number >= 0, got {n_initial_points!r}"
            )
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
        ):
            raise PluginError(f"sampler 'skopt': seed must be a whole number >= 0 or None, got {seed!r}")

        self._base_estimator = estimator
        self._n_initial_points = int(n_initial_points)
        self._acq_func = acq_func
        self._acq_optimizer = acq_optimizer
        self._consider_pruned_trials = bool(consider_pruned_trials)
        self._seed = int(seed) if seed is not None else random.SystemRandom().randrange(2**32)
        self._independent_sampler = optuna.samplers.RandomSampler(seed=seed)
        self._search_space = IntersectionSearchSpace(include_pruned=self._consider_pruned_trials)

        # Let skopt check the combination (e.g. lbfgs with a tree model) now, not at the 2nd trial.
        try:
            self._optimizer([skopt.space.Real(0.0, 1.0)], 0)
        except (ValueError, TypeError) as exc:
            raise PluginError(f"sampler 'skopt': invalid options: {exc}") from exc

    def _optimizer(self, dimensions: list[Any], random_state: int) -> Any:
        import skopt

        return skopt.Optimizer(
            dimensions,
            base_estimator=self._base_estimator,
            n_initial_points=max(self._n_initial_points, 1),
            acq_func=self._acq_func,
            acq_optimizer=self._acq_optimizer,
            random_state=random_state,
        )

    def reseed_rng(self) -> None:
        self._seed = random.SystemRandom().randrange(2**32)
        self._independent_sampler.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if study._is_multi_objective():
            raise PluginError(
                "sampler 'skopt' optimises a single objective; this study has "
                f"{len(study.directions)} objectives. Use the 'tpe', 'random' or 'qmc' sampler."
            )
        return {name: dist for name, dist in self._search_space.calculate(study).items() if not dist.single()}

    def _history(self, study: Study, codec: _Codec) -> tuple[list[list[Any]], list[float]]:
        states = (
            (TrialState.COMPLETE, TrialState.PRUNED)
            if self._consider_pruned_trials
            else (TrialState.COMPLETE,)
        )
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
        xs: list[list[Any]] = []
        ys: list[float] = []
        for past in study.get_trials(deepcopy=False, states=states):
            if past.state == TrialState.COMPLETE:
                value = past.value
            elif past.intermediate_values:
                value = past.intermediate_values[max(past.intermediate_values)]
            else:
                continue
            if value is None or not math.isfinite(value):
                continue
            point = codec.encode(past.params)
            if point is None:
                continue
            xs.append(point)
            ys.append(sign * float(value))
        return xs, ys

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        codec = _Codec(search_space)
        xs, ys = self._history(study, codec)
        random_state = int(np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0])
        optimizer = self._optimizer(codec.dimensions, random_state)
        with warnings.catch_warnings():
            # With a small discrete space skopt may propose a point it was told already; it then
            # picks a random point and warns. Repeats are legitimate here.
            warnings.filterwarnings("ignore", message="The objective has been evaluated at point")
            if xs:
                optimizer.tell(xs, ys)
            point = optimizer.ask()
        return codec.decode(point)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._independent_sampler.sample_independent(study, trial, param_name, param_distribution)
