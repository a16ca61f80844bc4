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
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


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
