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
from archsearch.report.plot import Figure, _clip, _empty, _new_figure, _nothing_yet, _png, _upper_limit

HORIZON_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


def scaling_figure(data: ReportData) -> Figure:
    """Best validation loss against budget (log x axis), one line per horizon."""
    fig, axes = _new_figure(8.5, 4.8)
    ax = axes[0][0]
    budgets = data.budgets
    plotted = False
    for i, horizon in enumerate(data.horizons):
        colour = HORIZON_COLOURS[i % len(HORIZON_COLOURS)]
        cells = [c for c in data.cells if c.horizon == horizon and c.best is not None]
        if not cells:
            continue
        cells.sort(key=lambda c: c.budget)
        xs = [c.budget for c in cells]
        ys = [c.best["val_loss"] for c in cells]
        ax.plot(xs, ys, marker="o", ms=7, lw=2, color=colour, label=f"h{horizon}: best val loss")
        for c in cells:
            b = c.best
            ax.annotate(
                f"d{b['d_model']} L{b['n_layers']}",
                (c.budget, b["val_loss"]),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
                color=colour,
            )
        baselines = [c.best["baseline_loss"] for c in cells if finite(c.best.get("baseline_loss"))]
        if baselines:
            ax.axhline(
                sum(baselines) / len(baselines),
                color=colour,
                ls=":",
                lw=1.2,
                label=f"h{horizon}: constant predictor (baseline)",
            )
        plotted = True
    if not plotted:
        _empty(ax, "no complete trials yet")
    else:
        from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(budgets))
        ax.xaxis.set_major_formatter(FixedFormatter([format_budget(b) for b in budgets]))
        ax.xaxis.set_minor_locator(NullLocator())
        lo, hi = budgets[0], budgets[-1]
        pad = (hi / lo) ** 0.1 if hi > lo else 2.0
        ax.set_xlim(lo / pad, hi * pad)
        ax.set_xlabel("parameter budget (log scale)")
        ax.set_ylabel("best validation loss (lower is better)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ax.set_title("Scaling: best validation loss per budget, one line per horizon")
    return Figure("scaling.png", "Scaling: best validation loss against budget", _png(fig))


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


def history_figure(data: ReportData, budget: int) -> Figure:
    """Val loss per trial number with the best so far, one panel per horizon of ``budget``."""
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
    handles = [
        Line2D([], [], marker="s", ls="", color="#1f77b4", label="complete, coverage trial (queued)"),
        Line2D([], [], marker="o", ls="", color="#1f77b4", label="complete, chosen by the sampler"),
        Line2D([], [], marker="x", ls="", color="0.6", label="pruned (val loss when stopped)"),
        Line2D([], [], color="crimson", lw=1.8, label="best so far"),
    ]
    fig.legend(
        handles=handles, loc="outside lower center", ncols=4 if ncols > 1 else 2, fontsize=9, frameon=False
    )
    fig.suptitle(f"{format_budget(budget)}: optimisation history", fontsize=13)
    name = f"history_{format_budget(budget)}.png"
    return Figure(name, f"{format_budget(budget)}: optimisation history", _png(fig), budget)


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
