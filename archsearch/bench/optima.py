"""The ``samplers`` suite: every registered sampler (third-party ones included) on functions with
known optima: Branin (0.397887), Hartmann-6 (-3.32237), a 10-D Rosenbrock (0) and a mixed
categorical/integer/continuous problem (0). Reports the median and IQR of simple regret over seeds
at each trial budget, and the mean time per ask."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from statistics import fmean, quantiles
from typing import Any

import numpy as np

HARTMANN_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
HARTMANN_P = 1e-4 * np.array(
    [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
     [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]
)  # fmt: skip
HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def branin(trial: Any) -> float:
    x = trial.suggest_float("x", -5, 10)
    y = trial.suggest_float("y", 0, 15)
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x**2 + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def hartmann6(trial: Any) -> float:
    x = np.array([trial.suggest_float(f"x{i}", 0, 1) for i in range(6)])
    return float(-np.sum(HARTMANN_ALPHA * np.exp(-np.sum(HARTMANN_A * (x - HARTMANN_P) ** 2, axis=1))))


def rosenbrock10(trial: Any) -> float:
    x = np.array([trial.suggest_float(f"x{i}", -2.048, 2.048) for i in range(10)])
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


OFFSETS = {"relu": 0.0, "gelu": 0.3, "tanh": 0.8, "sigmoid": 1.5}


def mixed(trial: Any) -> float:
    """Like an architecture search: a categorical, an integer and two continuous parameters."""
    act = trial.suggest_categorical("activation", list(OFFSETS))
    layers = trial.suggest_int("layers", 1, 16)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    return OFFSETS[act] + (layers - 6) ** 2 / 25 + (math.log10(lr) + 3) ** 2 / 4 + (dropout - 0.1) ** 2 * 4


PROBLEMS: dict[str, tuple[Callable[[Any], float], float]] = {
    "branin": (branin, 0.397887),
    "hartmann6": (hartmann6, -3.32237),
    "rosenbrock10": (rosenbrock10, 0.0),
    "mixed": (mixed, 0.0),
}
SLOW = {"gp", "skopt"}  # seconds per ask: fewer seeds in --quick


def run_one(
    sampler: Any, problem: Callable[[Any], float], optimum: float, n_trials: int
) -> tuple[list[float], float]:
    """Best-so-far regret after each trial, and the mean seconds per ask."""
    import optuna

    study = optuna.create_study(sampler=sampler)
    regrets, ask_s, best = [], [], math.inf
    for _ in range(n_trials):
        start = time.perf_counter()
        trial = study.ask()
        value = problem(trial)  # suggestions happen here, lazily: count them as asking
        ask_s.append(time.perf_counter() - start)
        study.tell(trial, value)
        best = min(best, value)
        regrets.append(best - optimum)
    return regrets, fmean(ask_s)


def _iqr(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def suite(quick: bool, samplers: list[str] | None = None) -> dict:
    import optuna

    from archsearch.plugin.manager import get_plugin_manager

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    plugins = get_plugin_manager()
    names = samplers or plugins.names("sampler")
    budgets = (30,) if quick else (50, 200)
    rows, curves = [], {}
    for problem_name, (problem, optimum) in PROBLEMS.items():
        for name in names:
            n_seeds = (1 if name in SLOW else 3) if quick else 10
            sampler_budgets = budgets
            if not quick and name in SLOW:  # GP asks take seconds at 200 trials: 50 trials, 5 seeds
                n_seeds, sampler_budgets = 5, (50,)
            runs, asks = [], []
            for seed in range(n_seeds):
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sampler = plugins.sampler(name).factory({}, seed)
                    regrets, ask = run_one(sampler, problem, optimum, max(sampler_budgets))
                runs.append(regrets)
                asks.append(ask)
            curves[(problem_name, name)] = runs
            for budget in sampler_budgets:
                lo, med, hi = _iqr([r[budget - 1] for r in runs])
                rows.append(
                    {
                        "problem": problem_name,
                        "sampler": name,
                        "trials": budget,
                        "seeds": n_seeds,
                        "regret_median": med,
                        "regret_q1": lo,
                        "regret_q3": hi,
                        "ask_ms": fmean(asks) * 1e3,
                    }
                )
    lines = [
        "| problem | sampler | trials | seeds | simple regret, median [IQR] | time per ask |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['problem']} | {r['sampler']} | {r['trials']} | {r['seeds']} | {r['regret_median']:.4g} "
            f"[{r['regret_q1']:.3g}, {r['regret_q3']:.3g}] | {r['ask_ms']:.1f} ms |"
            for r in rows
        ),
    ]
    return {"rows": rows, "markdown": "\n".join(lines), "plots": {"samplers.png": _plot(curves)}}


def _plot(curves: dict[tuple[str, str], list[list[float]]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = sorted({p for p, _ in curves})
    fig, axes = plt.subplots(1, len(problems), figsize=(4.2 * len(problems), 3.4), squeeze=False)
    for ax, problem in zip(axes[0], problems, strict=True):
        for (p, name), runs in sorted(curves.items()):
            if p != problem:
                continue
            data = np.array(runs)
            med = np.median(data, axis=0)
            x = np.arange(1, data.shape[1] + 1)
            ax.plot(x, np.maximum(med, 1e-6), label=name)
            if data.shape[0] > 1:
                q1, q3 = np.percentile(data, [25, 75], axis=0)
                ax.fill_between(x, np.maximum(q1, 1e-6), np.maximum(q3, 1e-6), alpha=0.15)
        ax.set_yscale("log")
        ax.set_title(problem)
        ax.set_xlabel("trials")
        ax.set_ylabel("simple regret")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
