"""The scaling law across budgets: the best confirmed loss ``L`` against the winners' actual
parameter counts ``N``, one fit per horizon, with a bootstrap interval from the confirmation seeds.

- With at least :data:`MIN_CONSTANT_POINTS` budgets: ``L(N) = a * N^(-alpha) + c``
  (:data:`WITH_CONSTANT`), least squares with ``scipy.optimize.curve_fit`` (bounds
  ``a >= 0``, ``0 <= alpha <= 10``, ``0 <= c <= min L``; several starts, the best kept).
- With 2 or 3 budgets: ``L(N) = a * N^(-alpha)`` (:data:`PURE`), least squares on
  ``log L = log a - alpha log N`` with ``curve_fit`` (three points cannot pin a constant too).
- The interval: :data:`N_BOOT` resamples (seed :data:`BOOT_SEED`); each draws every budget's seed
  losses with replacement (spread by ``sqrt(n / (n - 1))`` about their mean, :func:`_inflated`),
  takes their mean and refits; the 2.5 and 97.5 percentiles of ``alpha``
  and of the prediction. A point with one value (a cell without confirmation: its single best
  trial) is held fixed, and says so.
- The prediction is at the next budget up: :data:`NEXT_FACTOR` times the largest budget (the next
  rung of a x10 ladder: 25K, 250K, 2.5M).

A fit that cannot be made gives a ``reason`` ("not fitted: ..."), never an exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

PURE = "pure power law"
WITH_CONSTANT = "power law + constant"
#: Budgets needed for the form with a constant (three parameters need a point to spare).
MIN_CONSTANT_POINTS = 4
#: The prediction's parameter count: this many times the largest budget.
NEXT_FACTOR = 10
N_BOOT = 1000
BOOT_SEED = 0
ALPHA_BOUNDS = (0.0, 10.0)
SCALING_JSON = "scaling.json"


class FitError(Exception):
    """The least squares did not converge (or its result is not finite)."""


@attrs.frozen
class ScalingPoint:
    """One budget's answer: the winner's parameter count and its per-seed validation losses."""

    budget: int
    n_params: int
    values: tuple[float, ...]
    confirmed: bool = True
    label: str = ""

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


@attrs.frozen
class ScalingFit:
    """A horizon's fitted law, or the reason there is none (``reason`` set, numbers None)."""

    horizon: int | None
    points: tuple[ScalingPoint, ...]
    form: str | None = None
    a: float | None = None
    alpha: float | None = None
    c: float | None = None
    alpha_low: float | None = None
    alpha_high: float | None = None
    next_budget: int | None = None
    predicted: float | None = None
    predicted_low: float | None = None
    predicted_high: float | None = None
    n_boot: int = 0
    interval_note: str = ""
    note: str = ""
    reason: str | None = None

    @property
    def fitted(self) -> bool:
        return self.reason is None

    @property
    def n_points(self) -> int:
        return len(self.points)

    def predict(self, n: Any) -> Any:
        """The fitted loss at parameter count(s) ``n``."""
        return _law(np.asarray(n, dtype=float), self.a, self.alpha, self.c or 0.0)

    def to_json(self) -> dict[str, Any]:
        doc = attrs.asdict(self, recurse=True)
        doc["n_points"] = self.n_points
        doc["points"] = [{**attrs.asdict(p), "values": list(p.values), "mean": p.mean} for p in self.points]
        return doc


def _law(n: Any, a: float, alpha: float, c: float) -> Any:
    return a * np.power(n, -alpha) + c


# -- one least-squares fit -------------------------------------------------------------------------
def fit_curve(
    n: np.ndarray, y: np.ndarray, form: str, start: tuple[float, ...] | None = None
) -> tuple[float, float, float]:
    """``(a, alpha, c)`` of ``form`` through the points ``(n, y)``; raises :class:`FitError`.
    ``start`` (a previous fit's ``(a, alpha, c)``) skips the search over starting points."""
    from scipy.optimize import OptimizeWarning, curve_fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)  # exactly determined: no covariance
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            fit = _fit_pure(n, y, curve_fit, start) if form == PURE else _fit_constant(n, y, curve_fit, start)
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
            raise FitError(str(exc)) from None
    if not all(math.isfinite(v) for v in fit):
        raise FitError("the least squares gave a non-finite parameter")
    return fit


def _fit_pure(
    n: np.ndarray, y: np.ndarray, curve_fit: Any, start: tuple[float, ...] | None
) -> tuple[float, float, float]:
    if np.any(y <= 0):
        raise ValueError("a pure power law needs positive losses")
    log_n, log_y = np.log(n), np.log(y)
    p0 = (math.log(start[0]), start[1]) if start else (float(np.mean(log_y)), 0.0)
    (log_a, alpha), _ = curve_fit(lambda x, la, al: la - al * x, log_n, log_y, p0=p0)
    return math.exp(log_a), float(alpha), 0.0


def _fit_constant(
    n: np.ndarray, y: np.ndarray, curve_fit: Any, start: tuple[float, ...] | None
) -> tuple[float, float, float]:
    """Fitted on ``x = N / N0`` (N0 the geometric mean) so that ``a`` stays near the losses' scale."""
    n0 = float(np.exp(np.mean(np.log(n))))
    x = n / n0
    top = float(np.min(y))
    c_hi = top if top > 0 else np.inf
    c_lo = 0.0 if top > 0 else -np.inf
    lower, upper = (0.0, ALPHA_BOUNDS[0], c_lo), (np.inf, ALPHA_BOUNDS[1], c_hi)
    if start:
        starts = [(start[0] * n0 ** -start[1], start[1], start[2])]
    else:
        starts = []
        for share in (0.0, 0.5, 0.9, 0.99):
            c0 = share * top if top > 0 else top - (share + 0.1) * (float(np.ptp(y)) or 1.0)
            rest = np.maximum(y - c0, 1e-12)
            slope, intercept = np.polyfit(np.log(x), np.log(rest), 1)
            starts.append((math.exp(intercept), float(np.clip(-slope, 0.01, 9.9)), c0))
    best, best_sse = None, math.inf
    for p0 in starts:
        p0 = tuple(float(np.clip(v, lo, hi)) for v, lo, hi in zip(p0, lower, upper, strict=True))
        try:
            params, _ = curve_fit(_law, x, y, p0=p0, bounds=(lower, upper), maxfev=5000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((_law(x, *params) - y) ** 2))
        if sse < best_sse:
            best, best_sse = params, sse
    if best is None:
        raise RuntimeError("curve_fit did not converge from any start")
    big_a, alpha, c = (float(v) for v in best)
    return big_a * n0**alpha, alpha, c


# -- a horizon's fit with its interval -------------------------------------------------------------
def next_budget(budgets: Sequence[int]) -> int:
    """The budget the prediction is for: :data:`NEXT_FACTOR` times the largest."""
    return int(max(budgets) * NEXT_FACTOR)


def _why_not(points: Sequence[ScalingPoint], direction: str) -> str | None:
    if direction != "minimize":
        return "not fitted: the study maximises its objective; a loss scaling law needs a loss to minimise"
    if len(points) < 2:
        n = len(points)
        return f"not fitted: {n} budget{'s' if n != 1 else ''} with a result; a fit needs at least 2"
    if len({p.n_params for p in points}) < 2:
        return "not fitted: every winner has the same parameter count"
    if any(p.n_params <= 0 for p in points):
        return "not fitted: a winner's parameter count is unknown"
    return None


def fit_scaling(
    points: Sequence[ScalingPoint],
    horizon: int | None = None,
    direction: str = "minimize",
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> ScalingFit:
    """The law through ``points`` (one per budget), its bootstrap interval and the prediction at
    :func:`next_budget`; a :class:`ScalingFit` with ``reason`` set when there is none."""
    points = tuple(
        sorted(
            (attrs.evolve(p, values=tuple(float(v) for v in p.values if math.isfinite(v))) for p in points),
            key=lambda p: p.n_params,
        )
    )
    points = tuple(p for p in points if p.values)
    base = ScalingFit(horizon, points)
    reason = _why_not(points, direction)
    if reason:
        return attrs.evolve(base, reason=reason)
    form = WITH_CONSTANT if len(points) >= MIN_CONSTANT_POINTS else PURE
    n = np.array([p.n_params for p in points], dtype=float)
    y = np.array([p.mean for p in points])
    try:
        a, alpha, c = fit_curve(n, y, form)
    except FitError as exc:
        return attrs.evolve(base, form=form, reason=f"not fitted: the least squares failed ({exc})")
    target = next_budget([p.budget for p in points])
    fit = attrs.evolve(
        base, form=form, a=a, alpha=alpha, c=c if form == WITH_CONSTANT else None, next_budget=target
    )
    fit = attrs.evolve(fit, predicted=float(fit.predict(target)), note=_bound_note(form, alpha))
    return _with_interval(fit, n, n_boot, seed)


def _bound_note(form: str, alpha: float) -> str:
    if form == WITH_CONSTANT and min(abs(alpha - b) for b in ALPHA_BOUNDS) < 1e-6:
        return (
            f"alpha at a bound of {list(ALPHA_BOUNDS)}: these points do not pin the constant form "
            "(the losses may not fall with N)"
        )
    if alpha < 0:
        return "alpha < 0: the loss rises with the parameter count over these budgets"
    return ""


def _with_interval(fit: ScalingFit, n: np.ndarray, n_boot: int, seed: int) -> ScalingFit:
    """The 95% percentile interval of alpha and of the prediction over bootstrap resamples."""
    resampled = [p for p in fit.points if len(p.values) > 1]
    if not resampled or n_boot < 1:
        return attrs.evolve(fit, interval_note="no interval: no budget has more than one seed to resample")
    rng = np.random.default_rng(seed)
    start = (fit.a, fit.alpha, fit.c or 0.0)
    spread = [_inflated(p.values) for p in fit.points]
    alphas, predictions = [], []
    for _ in range(n_boot):
        y = np.array([float(np.mean(rng.choice(v, len(v)))) for v in spread])
        try:
            a, alpha, c = fit_curve(n, y, fit.form, start)
        except FitError:
            continue
        alphas.append(alpha)
        predictions.append(float(_law(fit.next_budget, a, alpha, c)))
    if len(alphas) < n_boot / 2:
        return attrs.evolve(
            fit,
            n_boot=len(alphas),
            interval_note=f"no interval: {n_boot - len(alphas)} of {n_boot} refits failed",
        )
    fixed = len(fit.points) - len(resampled)
    note = f"95% bootstrap interval, {len(alphas)} resamples of the seeds (seed {seed})"
    if fixed:
        note += f"; {fixed} of {len(fit.points)} points have one value (not confirmed) and are held fixed"
    lo_a, hi_a = np.percentile(alphas, [2.5, 97.5])
    lo_p, hi_p = np.percentile(predictions, [2.5, 97.5])
    return attrs.evolve(
        fit,
        alpha_low=float(lo_a),
        alpha_high=float(hi_a),
        predicted_low=float(lo_p),
        predicted_high=float(hi_p),
        n_boot=len(alphas),
        interval_note=note,
    )


def _inflated(values: Sequence[float]) -> np.ndarray:
    """The seed losses spread about their mean by ``sqrt(n / (n - 1))``: the mean of a resample of
    them then varies as much as the mean of ``n`` fresh seeds would (the plain bootstrap's variance
    is ``(n - 1) / n`` of that, too narrow with the 2-3 seeds of a confirmation)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return v
    return v.mean() + (v - v.mean()) * math.sqrt(len(v) / (len(v) - 1))


def write_scaling(path: Path, fits: Sequence[ScalingFit]) -> None:
    """``scaling.json``: every horizon's fit (or its reason), with the points it was made on."""
    from archsearch.outputs import write_json

    write_json(
        path,
        {
            "law": "L(N) = a * N^(-alpha) + c",
            "forms": {
                PURE: f"c = 0; with 2-{MIN_CONSTANT_POINTS - 1} budgets",
                WITH_CONSTANT: f"with {MIN_CONSTANT_POINTS} or more budgets",
            },
            "next_budget": f"{NEXT_FACTOR} x the largest budget",
            "fits": [f.to_json() for f in fits],
        },
    )
