"""The report's figures: ``scaling.png`` (best validation loss against budget, one line per horizon)
and per budget ``architecture_{budget}.png`` (:mod:`archsearch.report.architecture`),
``history_{budget}.png`` (val loss per trial with the best so far) and ``importance_{budget}.png``
(parameter importance).

matplotlib is imported inside the functions that draw, so the other commands stay fast.
"""

from __future__ import annotations

import math
from typing import Any

from archsearch.budget import format_budget
from archsearch.report.architecture import _lr_norm, architecture_figure
from archsearch.report.cells import ReportData, finite
from archsearch.report.importance import SPEARMAN
from archsearch.report.plot import (
    Figure,
    _clip,
    _empty,
    _new_figure,
    _nothing_yet,
    _png,
    _upper_limit,
    figure_legend,
)

HORIZON_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


def scaling_figure(data: ReportData) -> Figure:
    return Figure(
        "scaling.png",
        "Scaling: each budget's answer at its winner's parameter count, with the fitted law",
        _png(draw_scaling(data)),
    )


def draw_scaling(data: ReportData) -> Any:
    """Each cell's answer at its winner's actual parameter count (log x): the confirmed winner's
    mean with its 95% interval, or the best trial (hollow) where there is no confirmation; each
    horizon's fitted law (dashed) and its prediction at the next budget, with its interval."""
    fig, axes = _new_figure(8.5, 5.2)
    ax = axes[0][0]
    fits = {f.horizon: f for f in data.scaling}
    xs: list[float] = []
    for i, horizon in enumerate(data.horizons):
        colour = HORIZON_COLOURS[i % len(HORIZON_COLOURS)]
        cells = sorted(
            (c for c in data.cells if c.horizon == horizon and c.winner is not None), key=lambda c: c.budget
        )
        xs += _scaling_points(ax, cells, horizon, colour)
        fit = fits.get(horizon)
        if fit is not None and fit.fitted and xs:
            xs.append(fit.next_budget)
            _scaling_fit(ax, fit, colour)
        baselines = [c.best["baseline_loss"] for c in cells if c.best and finite(c.best.get("baseline_loss"))]
        if baselines:
            ax.axhline(
                sum(baselines) / len(baselines),
                color=colour,
                ls=":",
                lw=1.2,
                label=f"h{horizon}: constant predictor",
            )
    if not xs:
        _empty(ax, "no complete trials yet")
    else:
        _plain_log_axis(ax, xs)
        ax.set_xlabel("parameters (the winner's actual count; log scale)")
        ax.set_ylabel("validation loss (lower is better)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ax.set_title("Scaling: each budget's answer at its parameter count, one colour per horizon", fontsize=11)
    return fig


def _scaling_points(ax: Any, cells: list[Any], horizon: int, colour: str) -> list[float]:
    confirmed = [c for c in cells if c.confirmation is not None]
    single = [c for c in cells if c.confirmation is None and c.best.get("param_count")]
    if confirmed:
        w = [c.confirmation.winner for c in confirmed]
        low = [m.mean - m.low if math.isfinite(m.low) else 0.0 for m in w]
        high = [m.high - m.mean if math.isfinite(m.high) else 0.0 for m in w]
        ax.errorbar(
            [m.n_params for m in w],
            [m.mean for m in w],
            yerr=[low, high],
            fmt="o",
            ms=7,
            capsize=4,
            color=colour,
            label=f"h{horizon}: confirmed winner (mean, 95% interval)",
            zorder=4,
        )
    if single:
        ax.scatter(
            [c.best["param_count"] for c in single],
            [c.best["val_loss"] for c in single],
            s=55,
            facecolors="none",
            edgecolors=colour,
            label=f"h{horizon}: best single trial (not confirmed)",
            zorder=4,
        )
    for c in confirmed + single:
        win = c.winner
        ax.annotate(
            f"{format_budget(c.budget)}: d{win['d_model']} L{win['n_layers']}",
            (win["param_count"], win["val_loss"]),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
            color=colour,
        )
    return [c.winner["param_count"] for c in confirmed + single]


def _scaling_fit(ax: Any, fit: Any, colour: str) -> None:
    import numpy as np

    lo = min(p.n_params for p in fit.points) / 1.3
    grid = np.geomspace(lo, fit.next_budget, 120)
    interval = f" [{fit.alpha_low:.2f}, {fit.alpha_high:.2f}]" if fit.alpha_low is not None else ""
    ax.plot(
        grid,
        fit.predict(grid),
        ls="--",
        lw=1.5,
        color=colour,
        label=f"h{fit.horizon}: {fit.form}, alpha {fit.alpha:.2f}{interval}",
    )
    if fit.predicted_low is not None:
        yerr = [[fit.predicted - fit.predicted_low], [fit.predicted_high - fit.predicted]]
    else:
        yerr = None
    ax.errorbar(
        [fit.next_budget],
        [fit.predicted],
        yerr=yerr,
        fmt="D",
        ms=6,
        mfc="white",
        capsize=4,
        color=colour,
        label=f"h{fit.horizon}: predicted at {format_budget(fit.next_budget)}",
        zorder=4,
    )


def _plain_log_axis(ax: Any, xs: list[float]) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.5, 5.0)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_budget(round(v))))
    lo, hi = min(xs), max(xs)
    pad = (hi / lo) ** 0.08 if hi > lo else 2.0
    ax.set_xlim(lo / pad, hi * pad)


def _grid(n: int) -> tuple[int, int]:
    ncols = min(n, 3)
    return math.ceil(n / ncols), ncols


def _cell_panels(cells: list[Any], top: float, row_height: float) -> tuple[Any, list[tuple[Any, Any]], int]:
    """A figure with one panel per cell (at most 3 across); unused panels hidden."""
    nrows, ncols = _grid(len(cells))
    fig, axes = _new_figure(4.6 * ncols + 0.5, top + row_height * nrows, nrows=nrows, ncols=ncols)
    flat = [axes[i // ncols][i % ncols] for i in range(nrows * ncols)]
    for ax in flat[len(cells) :]:
        ax.set_visible(False)
    return fig, list(zip(flat, cells, strict=False)), ncols


def draw_history(data: ReportData, budget: int) -> Any:
    """Val loss per search trial number with the best so far, one panel per horizon of ``budget``."""
    from matplotlib.lines import Line2D

    cells = data.cells_of(budget)
    fig, panels, ncols = _cell_panels(cells, top=0.7, row_height=3.3)
    for ax, cell in panels:
        ax.set_title(
            f"{cell.label}: {cell.n_complete} complete, {cell.n_pruned} pruned, {cell.n_failed} failed",
            fontsize=10,
        )
        complete, pruned = cell.complete(), cell.pruned()
        if not complete and not pruned:
            _empty(ax, _nothing_yet(cell))
            continue
        limit = _upper_limit([t["val_loss"] for t in complete + pruned], cell.direction)
        if pruned:
            ys, _ = _clip([t["val_loss"] for t in pruned], limit)
            ax.scatter([t["trial"] for t in pruned], ys, marker="x", color="0.6", s=22, lw=1, zorder=2)
        for coverage, marker in ((True, "s"), (False, "o")):
            pts = [t for t in complete if t["coverage"] == coverage]
            if pts:
                ys, _ = _clip([t["val_loss"] for t in pts], limit)
                ax.scatter([t["trial"] for t in pts], ys, marker=marker, s=30, color="#1f77b4", zorder=3)
        if complete:
            ordered = sorted(complete, key=lambda t: t["trial"])
            best, xs, ys = None, [], []
            pick = max if cell.direction == "maximize" else min
            for t in ordered:
                best = t["val_loss"] if best is None else pick(best, t["val_loss"])
                xs.append(t["trial"])
                ys.append(best)
            last = max(t["trial"] for t in complete + pruned)
            ax.step([*xs, last], [*ys, ys[-1]], where="post", color="crimson", lw=1.8, zorder=4)
        if limit is not None:
            ax.set_ylim(top=limit * 1.02)
        ax.set_xlabel("trial number")
        ax.set_ylabel("val loss")
        ax.grid(True, alpha=0.3)
    drawn = [t for c in cells for t in c.complete()]
    kinds = {
        "coverage": any(t["coverage"] for t in drawn),
        "sampler": any(not t["coverage"] for t in drawn),
        "pruned": any(c.pruned() for c in cells),
        "best": bool(drawn),
    }
    handles = [
        Line2D([], [], marker="s", ls="", color="#1f77b4", label="complete, coverage trial"),
        Line2D([], [], marker="o", ls="", color="#1f77b4", label="complete, sampler's pick"),
        Line2D([], [], marker="x", ls="", color="0.6", label="pruned (loss when stopped)"),
        Line2D([], [], color="crimson", lw=1.8, label="best so far"),
    ]
    figure_legend(
        fig, [h for h, k in zip(handles, kinds, strict=True) if kinds[k]], ncols=4 if ncols > 1 else 2
    )
    fig.suptitle(f"{format_budget(budget)}: optimisation history (search trials)", fontsize=13)
    return fig


def history_figure(data: ReportData, budget: int) -> Figure:
    name = f"history_{format_budget(budget)}.png"
    return Figure(
        name, f"{format_budget(budget)}: optimisation history", _png(draw_history(data, budget)), budget
    )


def importance_figure(data: ReportData, budget: int) -> Figure:
    """Parameter importance, one panel per horizon of ``budget``."""
    cells = data.cells_of(budget)
    fig, panels, _ = _cell_panels(cells, top=0.5, row_height=3.0)
    for ax, cell in panels:
        ax.set_title(cell.label, fontsize=10)
        if not cell.importance:
            _empty(ax, f"no importance:\n{cell.importance_note or 'no complete trials'}")
            continue
        names = list(cell.importance)[::-1]
        values = [cell.importance[n] for n in names]
        signed = cell.importance_method == SPEARMAN
        colours = ["#d62728" if v > 0 else "#1f77b4" for v in values] if signed else "#1f77b4"
        ax.barh(names, values, color=colours)
        if signed:
            ax.set_xlim(-1, 1)
            ax.axvline(0, color="0.3", lw=0.8)
            ax.set_xlabel("Spearman ρ with val loss\n(> 0: larger value, higher loss)", fontsize=9)
        else:
            ax.set_xlim(0, max(1e-9, max(values)) * 1.15)
            ax.set_xlabel("importance (fANOVA; sums to 1)", fontsize=9)
        ax.tick_params(axis="y", labelsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"{format_budget(budget)}: parameter importance", fontsize=13)
    name = f"importance_{format_budget(budget)}.png"
    return Figure(name, f"{format_budget(budget)}: parameter importance", _png(fig), budget)


def render_figures(data: ReportData) -> list[Figure]:
    """Every figure of the report, as PNG bytes (Agg, no display needed)."""
    norm = _lr_norm(data)
    figures = [scaling_figure(data)]
    for budget in data.budgets:
        figures.append(architecture_figure(data, budget, norm))
        figures.append(history_figure(data, budget))
        figures.append(importance_figure(data, budget))
    return figures
