"""What a loaded frame gives for one horizon, without tensors: its splits, the window end rows of
each, the target channels and the model's output shape.

:func:`describe` makes every check on the data that training needs (a whole window in every
split, a positive target for the threshold task) with NumPy alone, so ``archsearch plan`` answers
without importing torch; :func:`archsearch.data.windows.prepare` starts from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from archsearch.architecture import HeadKind
from archsearch.data.splits import (
    SPLITS,
    Range,
    SplitConfig,
    reaches_back,
    rows_needed,
    split_ranges,
    window_ends,
)
from archsearch.data.tasks import TaskConfig, TaskKind
from archsearch.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from archsearch.data.sources import LoadedFrame


@attrs.frozen(eq=False)
class DataShape:
    """The splits and windows of one horizon: ``ranges[split]`` are its rows ``[start, end)``,
    ``ends[split]`` its window end rows; ``split_info`` says what each split covers. It has the
    attributes a model's shape is read from (``num_features``, ``head``, ``n_outputs``,
    ``n_targets``, ``target_channels``), as :class:`~archsearch.data.windows.PreparedData` does."""

    ranges: dict[str, Range]
    ends: dict[str, np.ndarray]
    task_kind: TaskKind
    context_length: int
    horizon: int
    head: HeadKind
    n_outputs: int
    target_channels: tuple[int, ...]
    feature_names: tuple[str, ...]
    target_name: str
    split_info: dict[str, dict[str, Any]]
    source: str

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_targets(self) -> int:
        return len(self.target_channels)

    def n_windows(self, split: str) -> int:
        return len(self.ends[split])


def describe(
    frame: LoadedFrame, task: TaskConfig, split: SplitConfig, horizon: int, context_length: int
) -> DataShape:
    """Split ``frame`` in time and find every split's windows; raise :class:`DataError` for data
    a model cannot train on (as :func:`~archsearch.data.windows.prepare` would)."""
    if horizon < 1 or context_length < 1:
        raise ValueError(f"horizon and context_length must be positive, got {horizon} and {context_length}")
    ranges = split_ranges(frame.n_rows, split, frame.dates, frame.source)
    ends = {
        name: window_ends(ranges[name], context_length, horizon, reaches_back(split, name)) for name in SPLITS
    }
    _check_split_rows(frame, split, ranges, ends, context_length, horizon)
    target_index = frame.column_index(frame.target_name)
    if task.kind == "threshold":
        channels: tuple[int, ...] = (target_index,)
        _check_positive_target(frame, ends, target_index)
    else:
        channels = tuple(frame.column_index(n) for n in task.targets) if task.targets else (target_index,)
    return DataShape(
        ranges=ranges,
        ends=ends,
        task_kind=task.kind,
        context_length=context_length,
        horizon=horizon,
        head=task.head,
        n_outputs=1 if task.kind == "threshold" else horizon,
        target_channels=channels,
        feature_names=frame.feature_names,
        target_name=frame.target_name,
        split_info=_split_info(frame, ranges, ends),
        source=frame.source,
    )


def _check_split_rows(
    frame: LoadedFrame,
    split: SplitConfig,
    ranges: dict[str, Range],
    ends: dict[str, np.ndarray],
    context_length: int,
    horizon: int,
) -> None:
    """Raise :class:`DataError` unless every split holds at least one whole window."""
    per_split = context_length + horizon
    short = {name: ranges[name] for name in SPLITS if not len(ends[name])}
    if short:
        name, (start, end) = next(iter(short.items()))
        if reaches_back(split, name):
            raise DataError(
                f"{frame.source}: too few rows. A {name} window needs its horizon {horizon} label rows "
                f"inside the split and context_length {context_length} input rows before them (from "
                f"earlier rows too, with split.context_from_previous), but the {name} split has "
                f"{end - start} rows ({start}..{end - 1}); the data has {frame.n_rows} rows."
            )
        total = rows_needed(split, per_split)
        overall = (
            f"With fractions {list(split.fractions)} that takes at least {total} rows; " if total else ""
        )
        raise DataError(
            f"{frame.source}: too few rows. A window needs context_length {context_length} + horizon {horizon} = "
            f"{per_split} rows inside one split, but the {name} split has {end - start} "
            f"(rows {start}..{end - 1}). "
            f"{overall}the data has {frame.n_rows} rows."
        )


def _check_positive_target(frame: LoadedFrame, ends: dict[str, np.ndarray], channel: int) -> None:
    """The threshold task's labels compare future prices with the price at each window's end,
    which must be positive."""
    prices = frame.frame.iloc[:, channel].to_numpy(dtype=np.float64)
    for name in SPLITS:
        e = ends[name]
        if (prices[e] <= 0).any():
            i = int(e[np.flatnonzero(prices[e] <= 0)[0]])
            raise DataError(
                f"{frame.source}: the threshold task needs a positive target; column '{frame.target_name}' is "
                f"{prices[i]} at row {i}. Use kind: forecast, or a price column as the target."
            )


def _split_info(
    frame: LoadedFrame, ranges: dict[str, Range], ends: dict[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """What each split covers: its rows, its number of windows and (with dates) its first and last date."""
    info: dict[str, dict[str, Any]] = {}
    for name in SPLITS:
        start, end = ranges[name]
        entry: dict[str, Any] = {"rows": [start, end], "windows": len(ends[name])}
        if frame.dates is not None:
            entry["first_date"] = _iso(frame.dates.iloc[start])
            entry["last_date"] = _iso(frame.dates.iloc[end - 1])
        info[name] = entry
    return info


def _iso(stamp: pd.Timestamp) -> str:
    """``2015-01-02`` for a midnight timestamp, the full ISO form otherwise."""
    return stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat()
