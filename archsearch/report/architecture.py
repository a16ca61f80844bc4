"""The architecture figure of a budget, ``architecture_{budget}.png``: val loss against n_layers,
d_model and n_layers/d_model, one row per horizon, coloured by learning rate, extremes marked."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from archsearch.budget import format_budget
from archsearch.report.cells import CellReport, ReportData, finite
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

ARCH_AXES = (
    ("n_layers", "n_layers (log scale)", lambda t: t["n_layers"]),
    ("d_model", "d_model (log scale)", lambda t: t["d_model"]),
    (
        "depth/width",
        "depth/width ratio n_layers / d_model (log scale)",
        lambda t: t["n_layers"] / t["d_model"] if t["n_layers"] and t["d_model"] else None,
    ),
)
EXTREME_SHORT = {
    "smallest d_model": "min d_model",
    "largest d_model": "max d_model",
    "fewest layers": "min layers",
    "most layers": "max layers",
}
#: The colour map of the learning rate.
LR_CMAP = "viridis"


def _lr_norm(data: ReportData) -> Any:
    from matplotlib.colors import LogNorm

    lrs = [t["learning_rate"] for c in data.cells for t in c.complete() if finite(t["learning_rate"])]
    lrs = [v for v in lrs if v > 0]
    if not lrs:
        return LogNorm(1e-4, 1e-2)
    lo, hi = min(lrs), max(lrs)
    if hi / lo < 1.5:
        lo, hi = lo / 1.5, hi * 1.5
    return LogNorm(lo, hi)


def _plain_log_axis(ax: Any, values: Iterable[float], integer: bool) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    ax.set_xscale("log")
    distinct = sorted(set(values))
    if integer and 0 < len(distinct) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(distinct))
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if distinct:
        lo, hi = distinct[0], distinct[-1]
        pad = (hi / lo) ** 0.15 if hi > lo else 1.6
        ax.set_xlim(lo / pad, hi * pad)


def _jitter(t: dict[str, Any]) -> float:
    """A small, repeatable spread of trials of one architecture (a factor around 1)."""
    return 1 + 0.06 * (((t["trial"] or 0) * 0.618034) % 1 - 0.5)


def _extremes(cell: CellReport) -> dict[tuple[int, int, int, int], list[str]]:
    """The architectures tried in a cell that hold an extreme of d_model or n_layers."""
    from archsearch.space.grid import EXTREMES

    archs = {
        (t["d_model"], t["n_layers"], t["n_heads"], t["d_ff"])
        for t in cell.trials
        if t["d_model"] is not None and t["n_layers"] is not None
    }
    out: dict[tuple[int, int, int, int], list[str]] = {}
    for label, attr, pick in EXTREMES:
        if not archs:
            break
        index = 0 if attr == "d_model" else 1
        value = pick(a[index] for a in archs)
        for a in archs:
            if a[index] == value:
                out.setdefault(a, []).append(EXTREME_SHORT[label])
    return out


def _arch_key(t: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    return (t["d_model"], t["n_layers"], t["n_heads"], t["d_ff"])


def architecture_figure(data: ReportData, budget: int, norm: Any) -> Figure:
    """Val loss against n_layers, d_model and depth/width, one row per horizon of ``budget``."""
    cells = data.cells_of(budget)
    fig, axes = _new_figure(13.5, 0.6 + 3.4 * len(cells), nrows=len(cells), ncols=3)
    for row, cell in enumerate(cells):
        trials = cell.complete() + cell.pruned()
        limit = _upper_limit([t["val_loss"] for t in trials], cell.direction)
        extremes = _extremes(cell)
        for col, axis in enumerate(ARCH_AXES):
            ax = axes[row][col]
            if col == 0:
                ax.set_ylabel(f"{cell.label}\nval loss")
            if row == 0:
                ax.set_title(f"val loss against {axis[0]}", fontsize=11)
            _architecture_panel(ax, cell, axis, trials, limit, extremes, norm)
    _architecture_key(fig, axes, norm, cells)
    fig.suptitle(f"{format_budget(budget)}: validation loss against depth and width", fontsize=13)
    name = f"architecture_{format_budget(budget)}.png"
    return Figure(
        name,
        f"{format_budget(budget)}: val loss against n_layers, d_model and n_layers/d_model",
        _png(fig),
        budget,
    )


def _architecture_panel(
    ax: Any,
    cell: CellReport,
    axis: tuple[str, str, Any],
    trials: list[dict[str, Any]],
    limit: float | None,
    extremes: dict[tuple[int, int, int, int], list[str]],
    norm: Any,
) -> None:
    """One panel: a cell's complete and pruned ``trials`` against one of :data:`ARCH_AXES`."""
    name, xlabel, x_of = axis
    if not trials:
        _empty(ax, f"{cell.label}: {_nothing_yet(cell)}")
        return
    pts = [(x_of(t), t) for t in trials]
    pts = [(x, t) for x, t in pts if x]
    if not pts:
        _empty(ax, f"{cell.label}: no architecture recorded")
        return
    _plain_log_axis(ax, [x for x, _ in pts], integer=name != "depth/width")
    _scatter_pruned(ax, [(x, t) for x, t in pts if t["state"] == "PRUNED"], limit)
    co = [(x, t) for x, t in pts if t["state"] == "COMPLETE"]
    labelled = _scatter_complete(ax, co, limit, extremes, norm)
    _star_best(ax, cell, x_of, limit)
    _mark_winner(ax, cell, x_of)
    if limit is not None:
        ax.set_ylim(top=limit * 1.02)
    _label_extremes(ax, labelled)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(xlabel, fontsize=9)


def _scatter_pruned(ax: Any, pr: list[tuple[float, dict[str, Any]]], limit: float | None) -> None:
    """Pruned trials as grey crosses, at the val loss they were stopped with."""
    if pr:
        ys, _ = _clip([t["val_loss"] for _, t in pr], limit)
        ax.scatter(
            [x * _jitter(t) for x, t in pr],
            ys,
            marker="x",
            s=22,
            color="0.6",
            lw=1,
            zorder=2,
        )


def _scatter_complete(
    ax: Any,
    co: list[tuple[float, dict[str, Any]]],
    limit: float | None,
    extremes: dict[tuple[int, int, int, int], list[str]],
    norm: Any,
) -> dict[str, tuple[float, float]]:
    """Complete trials coloured by learning rate, the extreme architectures ringed; returns where
    to name each kind of extreme (the best ringed point holding it)."""
    labelled: dict[str, tuple[float, float]] = {}
    if not co:
        return labelled
    ys, over = _clip([t["val_loss"] for _, t in co], limit)
    lrs = [t["learning_rate"] if finite(t["learning_rate"]) else norm.vmin for _, t in co]
    ax.scatter(
        [x * _jitter(t) for x, t in co],
        ys,
        c=lrs,
        cmap=LR_CMAP,
        norm=norm,
        s=[60 if o else 38 for o in over],
        marker="o",
        edgecolors="white",
        linewidths=0.5,
        zorder=3,
    )
    ring = [(x, y, t) for (x, t), y in zip(co, ys, strict=True) if _arch_key(t) in extremes]
    if ring:
        ax.scatter(
            [x * _jitter(t) for x, _, t in ring],
            [y for _, y, _ in ring],
            s=120,
            facecolors="none",
            edgecolors="black",
            linewidths=1,
            zorder=4,
        )
        for x, y, t in ring:  # each kind of extreme is named once, at its best point
            for label in extremes[_arch_key(t)]:
                if label not in labelled or y < labelled[label][1]:
                    labelled[label] = (x * _jitter(t), y)
    return labelled


def _star_best(ax: Any, cell: CellReport, x_of: Any, limit: float | None) -> None:
    """The cell's best trial as a crimson star."""
    if cell.best is not None:
        bx = x_of(cell.best)
        if bx:
            ax.scatter(
                [bx * _jitter(cell.best)],
                [min(cell.best["val_loss"], limit) if limit else cell.best["val_loss"]],
                marker="*",
                s=260,
                facecolors="none",
                edgecolors="crimson",
                linewidths=1.4,
                zorder=5,
            )


def _mark_winner(ax: Any, cell: CellReport, x_of: Any) -> None:
    """The confirmed winner's mean over its seeds, with its 95% interval, as a black diamond."""
    if cell.confirmation is None:
        return
    w = cell.confirmation.winner
    x = x_of(w.arch)
    if not x:
        return
    low = w.mean - w.low if math.isfinite(w.low) else 0.0
    high = w.high - w.mean if math.isfinite(w.high) else 0.0
    ax.errorbar(
        [x], [w.mean], yerr=[[low], [high]], fmt="D", ms=7, mfc="white", color="black", capsize=3, zorder=6
    )


def _architecture_key(fig: Any, axes: Any, norm: Any, cells: list[CellReport]) -> None:
    """The legend of the markers drawn and the learning-rate colour bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.lines import Line2D

    complete = [t for c in cells for t in c.complete()]
    drawn = (
        bool(complete),
        any(c.pruned() for c in cells),
        any(c.best is not None for c in cells),
        any(_arch_key(t) in ex for c in cells for ex in (_extremes(c),) for t in c.complete()),
        any(c.confirmation is not None for c in cells),
    )
    handles = [
        Line2D([], [], marker="o", ls="", color="#3b8bc2", label="complete (colour: learning rate)"),
        Line2D([], [], marker="x", ls="", color="0.6", label="pruned (loss when stopped)"),
        Line2D([], [], marker="*", ls="", mfc="none", mec="crimson", ms=14, label="best trial of the cell"),
        Line2D([], [], marker="o", ls="", mfc="none", mec="black", ms=10, label="extreme architecture tried"),
        Line2D(
            [],
            [],
            marker="D",
            ls="-",
            color="black",
            mfc="white",
            ms=7,
            label="confirmed winner (mean, 95% interval)",
        ),
    ]
    figure_legend(fig, [h for h, d in zip(handles, drawn, strict=True) if d], ncols=4)
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=LR_CMAP), ax=axes, label="learning rate (log scale)", shrink=0.9
    )


def _label_extremes(ax: Any, labelled: dict[str, tuple[float, float]]) -> None:
    """Name each kind of extreme once, beside its best point (kinds that share a point share one
    label), away from the panel's nearest edges."""
    at: dict[tuple[float, float], list[str]] = {}
    for label, point in labelled.items():
        at.setdefault(point, []).append(label)
    x_lo, x_hi = (math.log(v) for v in ax.get_xlim())
    y_lo, y_hi = ax.get_ylim()
    for (x, y), labels in at.items():
        right = (math.log(x) - x_lo) / ((x_hi - x_lo) or 1) > 0.6
        top = (y - y_lo) / ((y_hi - y_lo) or 1) > 0.85
        text = ax.annotate(
            ", ".join(labels),
            (x, y),
            textcoords="offset points",
            xytext=(-8 if right else 8, -12 if top else 6),
            ha="right" if right else "left",
            fontsize=7,
            color="0.25",
        )
        text.set_in_layout(False)
