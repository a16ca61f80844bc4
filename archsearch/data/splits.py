"""Chronological train / validation / test splits.

A split is a range of rows ``[start, end)``. A window ending at row ``t`` reads inputs from rows
``t - context_length + 1 .. t`` and its label from rows ``t + 1 .. t + horizon``; a split only
holds windows whose inputs and label rows both lie inside it, so nothing crosses a split boundary
(each boundary loses ``context_length + horizon - 1`` window ends: the purge gap).

With ``context_from_previous`` (the long-term forecasting protocol of the ETT, Informer and
PatchTST papers) a validation or test window's inputs may reach back into the rows before its
split (never before row 0); its label rows still lie inside it, so no target row is used by two
splits, and the first window's labels start at the split's first row. Training windows always
stay inside the training rows, and the scaler is fit on the training rows only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import attrs
import numpy as np

from archsearch.errors import DataError

if TYPE_CHECKING:  # pandas is imported where dates are read: a config without them loads without it
    import pandas as pd

SPLITS = ("train", "val", "test")
Range = tuple[int, int]


def _fractions(instance: object, attribute: attrs.Attribute, value: tuple[float, float, float]) -> None:
    if len(value) != 3 or any(not (isinstance(f, int | float) and 0 < f < 1) for f in value):
        raise ValueError(f"fractions must be three numbers between 0 and 1 (train, val, test), got {value}")
    if abs(sum(value) - 1.0) > 1e-6:
        raise ValueError(f"fractions must add up to 1, got {value} (sum {sum(value):g})")


def _date(instance: object, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None:
        import pandas as pd

        try:
            pd.Timestamp(value)
        except (ValueError, TypeError):
            raise ValueError(f"{attribute.name} must be a date such as 2015-01-02, got {value!r}") from None


def _row_range(instance: object, attribute: attrs.Attribute, value: Range | None) -> None:
    if value is not None and (len(value) != 2 or not 0 <= value[0] < value[1]):
        raise ValueError(f"{attribute.name} must be [start, end) with 0 <= start < end, got {value}")


@attrs.frozen
class SplitConfig:
    """How rows are divided, in time order.

    ``fractions``: the first 70% of rows train, the next 15% validate, the last 15% test.
    ``dates``: training before ``val_start``, validation from ``val_start`` up to ``test_start``,
    test from ``test_start``. ``rows``: explicit ``[start, end)`` row ranges, in time order and not
    overlapping (rows left out are unused). ``context_from_previous``: validation and test windows
    may take their inputs from rows before their split (their labels never do).
    """

    method: Literal["fractions", "dates", "rows"] = "fractions"
    fractions: tuple[float, float, float] = attrs.field(default=(0.7, 0.15, 0.15), validator=_fractions)
    val_start: str | None = attrs.field(default=None, validator=_date)
    test_start: str | None = attrs.field(default=None, validator=_date)
    train_rows: Range | None = attrs.field(default=None, validator=_row_range)
    val_rows: Range | None = attrs.field(default=None, validator=_row_range)
    test_rows: Range | None = attrs.field(default=None, validator=_row_range)
    context_from_previous: bool = False

    def __attrs_post_init__(self) -> None:
        if self.method not in ("fractions", "dates", "rows"):
            raise ValueError(f"method must be one of fractions, dates, rows; got {self.method!r}")
        if self.method == "dates":
            if self.val_start is None or self.test_start is None:
                raise ValueError("method dates needs val_start and test_start")
            import pandas as pd

            if pd.Timestamp(self.val_start) >= pd.Timestamp(self.test_start):
                raise ValueError(
                    f"val_start ({self.val_start}) must come before test_start ({self.test_start})"
                )
        if self.method == "rows":
            ranges = (self.train_rows, self.val_rows, self.test_rows)
            if any(r is None for r in ranges):
                raise ValueError("method rows needs train_rows, val_rows and test_rows, each [start, end)")
            for (name_a, a), (name_b, b) in zip(
                zip(("train_rows", "val_rows"), ranges[:2], strict=True),
                zip(("val_rows", "test_rows"), ranges[1:], strict=True),
                strict=True,
            ):
                if a[1] > b[0]:
                    raise ValueError(f"{name_a} {list(a)} must end before {name_b} {list(b)} starts")


def split_ranges(
    n_rows: int, split: SplitConfig, dates: pd.Series | None = None, source: str = "data"
) -> dict[str, Range]:
    """The ``[start, end)`` row range of each split (``train``, ``val``, ``test``)."""
    if split.method == "fractions":
        cut_val = round(n_rows * split.fractions[0])
        cut_test = round(n_rows * (split.fractions[0] + split.fractions[1]))
        return {"train": (0, cut_val), "val": (cut_val, cut_test), "test": (cut_test, n_rows)}
    if split.method == "dates":
        if dates is None:
            raise DataError(
                f"{source} has no date column, so split method dates cannot be used; use fractions or rows."
            )
        import pandas as pd

        cuts = []
        for value in (split.val_start, split.test_start):
            stamp = pd.Timestamp(value)
            if dates.dt.tz is not None and stamp.tzinfo is None:
                stamp = stamp.tz_localize(dates.dt.tz)
            cuts.append(int(dates.searchsorted(stamp)))
        return {"train": (0, cuts[0]), "val": (cuts[0], cuts[1]), "test": (cuts[1], n_rows)}
    ranges = {"train": split.train_rows, "val": split.val_rows, "test": split.test_rows}
    for name, (start, end) in ranges.items():
        if end > n_rows:
            raise DataError(
                f"{source}: {name}_rows [{start}, {end}) runs past the end of the data ({n_rows} rows)."
            )
    return {name: (int(r[0]), int(r[1])) for name, r in ranges.items()}


def window_ends(rows: Range, context_length: int, horizon: int, reach_back: bool = False) -> np.ndarray:
    """End rows ``t`` of the windows of ``rows``: ``start + L - 1 <= t <= end - 1 - horizon``, so
    inputs and labels lie inside ``rows``. ``reach_back``: the inputs may come from rows before
    ``start`` (not before row 0), the labels still start at ``start`` at the earliest:
    ``max(start - 1, L - 1) <= t``."""
    start, end = rows
    first = max(start - 1, context_length - 1) if reach_back else start + context_length - 1
    return np.arange(first, end - horizon, dtype=np.int64)


def reaches_back(split: SplitConfig, name: str) -> bool:
    """Whether the windows of split ``name`` may take inputs from rows before it."""
    return split.context_from_previous and name != "train"


def rows_needed(split: SplitConfig, per_split: int) -> int | None:
    """How many rows the data needs in all for ``per_split`` rows in every split (fractions only)."""
    if split.method != "fractions":
        return None
    n = math.ceil(per_split / min(split.fractions))
    while True:
        ranges = split_ranges(n, split)
        if all(end - start >= per_split for start, end in ranges.values()):
            return n
        n += 1
