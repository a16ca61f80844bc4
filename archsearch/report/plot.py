"""What the report's figures share: the :class:`Figure` (a PNG and its name), a new matplotlib figure
and its PNG bytes, empty panels and a y limit that keeps a few diverged trials from flattening the
rest.

matplotlib is imported inside the functions that draw, so the other commands stay fast.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import attrs

from archsearch.report.cells import CellReport


@attrs.define
class Figure:
    name: str
    title: str
    png: bytes
    budget: int | None = None


def _new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure legends with (figure_legend)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def figure_legend(fig: Any, handles: Sequence[Any], ncols: int, fontsize: float = 9) -> Any:
    """The figure's legend below its panels, with the most columns (at most ``ncols``) that fit
    its width: a legend wider than the figure is cut off in the PNG."""
    if not handles:
        return None
    renderer = fig.canvas.get_renderer()
    for n in range(min(ncols, len(handles)), 0, -1):
        legend = fig.legend(
            handles=handles, loc="outside lower center", ncols=n, fontsize=fontsize, frameon=False
        )
        if n == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width * 0.98:
            return legend
        legend.remove()
    return None


def legends_inside(fig: Any) -> bool:
    """Whether every legend of ``fig`` (the figure's and its panels') lies inside the saved image."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for legend in legends:
        extent = legend.get_window_extent(renderer)
        if (
            extent.x0 < box.x0 - 1
            or extent.y0 < box.y0 - 1
            or extent.x1 > box.x1 + 1
            or extent.y1 > box.y1 + 1
        ):
            return False
    return True


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.85")


def _upper_limit(values: Sequence[float], direction: str = "minimize") -> float | None:
    """A y limit that keeps a few diverged trials from flattening the rest (None: no outliers;
    never when the loss is maximised, where high values are the good ones)."""
    import numpy as np

    if len(values) < 5 or direction != "minimize":
        return None
    q1, q3 = np.percentile(values, [25, 75])
    limit = q3 + 3 * max(q3 - q1, 1e-9)
    return float(limit) if max(values) > limit else None


def _clip(ys: Sequence[float], limit: float | None) -> tuple[list[float], list[bool]]:
    if limit is None:
        return list(ys), [False] * len(ys)
    return [min(y, limit) for y in ys], [y > limit for y in ys]


def _nothing_yet(cell: CellReport) -> str:
    busy = f" ({cell.n_running} running)" if cell.n_running else ""
    return f"no complete trials{busy}"
