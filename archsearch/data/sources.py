"""Data sources: a CSV or Parquet file, a data set shipped with the package, or the seeded
synthetic market.

:func:`load_frame` turns a :class:`DataConfig` into a :class:`LoadedFrame`: float feature columns
(the target included), the dates, and how many rows were dropped. Every problem with a file raises
:class:`~archsearch.errors.DataError` in one paragraph that names the file, the column and the row
(for a CSV both the data row, counted from 0, and the line of the file).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs
import numpy as np

from archsearch.data.synthetic import synthetic_frame
from archsearch.errors import DataError

if TYPE_CHECKING:  # pandas is imported where a frame is read: a config loads without it
    import pandas as pd

SYNTHETIC = "synthetic"
#: ``source: "builtin:NAME"``: the data sets shipped in ``archsearch/data/builtin/`` (see its README).
BUILTIN_PREFIX = "builtin:"
BUILTIN = {"spy-daily": "SPY_daily.csv"}
#: Columns the derived features need, and the names of the columns they add.
DERIVED_INPUTS = ("close", "high", "low", "volume")
DERIVED_NAMES = ("log_return", "hl_range", "volume_z")
_INDEX_COLUMN = re.compile(r"^(Unnamed: \d+|__index_level_\d+__|)$")


def _at_least(minimum: int):
    def check(instance: object, attribute: attrs.Attribute, value: int) -> None:
        if value < minimum:
            raise ValueError(f"{attribute.name} must be at least {minimum}, got {value}")

    return check


def _one_of(*choices: str):
    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}; got {value!r}")

    return check


@attrs.frozen
class DataConfig:
    """Where the data comes from and which columns to use.

    ``source`` is ``"synthetic"``, ``"builtin:NAME"`` (a data set shipped with the package, see
    :data:`BUILTIN`) or the path of a ``.csv`` or ``.parquet`` file. ``features``
    empty means every numeric column except the date column and an unnamed index column; the
    ``target`` column is always part of the frame (added to ``features`` when missing). For the
    synthetic source the generator's columns are ``date, open, high, low, close, volume`` and
    indicators ``x01, x02, ...``; its target is ``close``.
    """

    source: str = SYNTHETIC
    date_column: str | None = "date"
    features: tuple[str, ...] = ()
    target: str = "close"
    derived_features: bool = False
    zscore_window: int = attrs.field(default=20, validator=_at_least(2))
    nan_policy: Literal["reject", "drop"] = attrs.field(default="reject", validator=_one_of("reject", "drop"))
    synthetic_rows: int = attrs.field(default=3000, validator=_at_least(10))
    synthetic_features: int = attrs.field(default=20, validator=_at_least(5))
    synthetic_seed: int = 0

    def __attrs_post_init__(self) -> None:
        if not self.source:
            raise ValueError("source must be 'synthetic' or the path of a .csv or .parquet file")
        if self.source.startswith(BUILTIN_PREFIX):
            builtin_name(self.source)
        if not self.target:
            raise ValueError("target must name a column")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features lists a column twice: {list(self.features)}")


@attrs.frozen(eq=False)
class LoadedFrame:
    """The loaded data: ``frame`` holds float64 columns ``feature_names`` (the target among them),
    rows renumbered from 0 after ``dropped_rows`` rows with missing values (``nan_policy: drop``) and
    ``warmup_rows`` leading rows without derived features were removed."""

    frame: pd.DataFrame
    dates: pd.Series | None
    source: str
    dropped_rows: int
    feature_names: tuple[str, ...]
    target_name: str
    warmup_rows: int = 0

    @property
    def n_rows(self) -> int:
        return len(self.frame)

    def column_index(self, name: str) -> int:
        """The position of a feature column (for ``target_channels``)."""
        try:
            return self.feature_names.index(name)
        except ValueError:
            raise DataError(
                f"{self.source}: column '{name}' is not among the features; "
                f"the features are: {', '.join(self.feature_names)}"
            ) from None


class _Rows:
    """Names a row of the source the way its user can find it."""

    def __init__(self, source: str, csv: bool) -> None:
        self.source = source
        self.csv = csv

    def __call__(self, i: int) -> str:
        return f"row {i} (line {i + 2} of the file)" if self.csv else f"row {i}"


def load_frame(cfg: DataConfig) -> LoadedFrame:
    """Load, check and select the data described by ``cfg``."""
    if cfg.source == SYNTHETIC:
        raw = synthetic_frame(cfg.synthetic_rows, cfg.synthetic_features, cfg.synthetic_seed)
        rows = _Rows("synthetic data", csv=False)
    elif cfg.source.startswith(BUILTIN_PREFIX):
        with builtin_path(cfg.source) as path:
            raw, rows = _read_file(str(path), label=cfg.source)
    else:
        raw, rows = _read_file(cfg.source)
    return _select(raw, cfg, rows)


def builtin_name(source: str) -> str:
    """The file of ``builtin:NAME``; a :class:`ValueError` listing the names for an unknown one."""
    name = source.removeprefix(BUILTIN_PREFIX)
    if name not in BUILTIN:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN)
        raise ValueError(f"unknown built-in data source {source!r}; the built-in sources are: {known}")
    return BUILTIN[name]


def builtin_path(source: str) -> contextlib.AbstractContextManager[Path]:
    """The file of a ``builtin:NAME`` source, as a path on disk while the context is open."""
    from importlib import resources

    try:
        filename = builtin_name(source)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return resources.as_file(resources.files("archsearch.data").joinpath("builtin", filename))


def _read_file(source: str, label: str | None = None) -> tuple[pd.DataFrame, _Rows]:
    """Read the file at ``source``, named ``label`` (default: its path) in messages."""
    import pandas as pd

    path = Path(source).expanduser()
    source = label or source
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise DataError(
            f"data file '{source}' has an unsupported extension '{path.suffix or '(none)'}'; "
            "use a .csv or .parquet file, or source: synthetic for the built-in generator."
        )
    if not path.is_file():
        raise DataError(
            f"data file '{source}' does not exist (resolved to {path.resolve()}); "
            "check the data source setting."
        )
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_parquet(path)
            frame = frame.reset_index() if frame.index.name is not None else frame.reset_index(drop=True)
    except ImportError as exc:
        raise DataError(f"data file '{source}': reading Parquet needs pyarrow ({exc}).") from None
    except (ValueError, OSError) as exc:  # parser, encoding, empty-file and Arrow errors
        raise DataError(f"data file '{source}' could not be read: {exc}") from None
    frame.columns = [str(c) for c in frame.columns]
    return frame, _Rows(f"data file '{source}'", csv=suffix == ".csv")


def _select(raw: pd.DataFrame, cfg: DataConfig, rows: _Rows) -> LoadedFrame:
    import pandas as pd

    src = rows.source
    raw = raw.drop(columns=[c for c in raw.columns if _INDEX_COLUMN.match(c)]).reset_index(drop=True)
    if len(raw.columns) == 0 or len(raw) == 0:
        raise DataError(f"{src} holds no data rows.")
    dates = None
    if cfg.date_column is not None:
        if cfg.date_column not in raw.columns:
            raise _missing(
                raw, src, [cfg.date_column], "date_column; set date_column: null for data without dates"
            )
        dates = _parse_dates(raw[cfg.date_column], cfg.date_column, rows)
    names = _feature_names(raw, cfg, src)
    needed = _needed_columns(raw, cfg, names, src)
    values = pd.DataFrame({c: _to_float(raw[c], c, rows) for c in needed})
    values, dates, dropped = _apply_nan_policy(values, dates, needed, cfg.nan_policy, rows)
    warmup = 0
    if cfg.derived_features:
        values, dates, warmup = _add_derived_features(values, dates, cfg.zscore_window, src)
        names += list(DERIVED_NAMES)
    frame = values[names].astype(np.float64)
    return LoadedFrame(
        frame=frame,
        dates=dates,
        source=src,
        dropped_rows=dropped,
        feature_names=tuple(names),
        target_name=cfg.target,
        warmup_rows=warmup,
    )


def _missing(raw: pd.DataFrame, src: str, names: list[str], what: str) -> DataError:
    """The error for columns ``names`` that ``raw`` lacks, listing the columns it has."""
    listed = ", ".join(f"'{n}'" for n in names)
    return DataError(f"{src} has no column {listed} ({what}); the columns are: {', '.join(raw.columns)}.")


def _feature_names(raw: pd.DataFrame, cfg: DataConfig, src: str) -> list[str]:
    """The configured features (else every numeric column but the dates), the target among them."""
    if cfg.features:
        absent = [c for c in cfg.features if c not in raw.columns]
        if absent:
            raise _missing(raw, src, absent, "listed in features")
        names = list(cfg.features)
    else:
        names = [c for c in raw.columns if c != cfg.date_column and _looks_numeric(raw[c])]
    if cfg.target not in raw.columns:
        raise _missing(raw, src, [cfg.target], "the target")
    if cfg.target not in names:
        names.append(cfg.target)
    return names


def _needed_columns(raw: pd.DataFrame, cfg: DataConfig, names: list[str], src: str) -> list[str]:
    """The columns to read: the features, and the inputs of the derived features when they are on."""
    needed = list(names)
    if cfg.derived_features:
        absent = [c for c in DERIVED_INPUTS if c not in raw.columns]
        if absent:
            raise _missing(raw, src, absent, "derived_features needs close, high, low and volume")
        clash = [n for n in DERIVED_NAMES if n in names]
        if clash:
            raise DataError(
                f"{src}: derived_features would add {clash[0]!r}, but a column has that name already."
            )
        needed += [c for c in DERIVED_INPUTS if c not in needed]
    return needed


def _apply_nan_policy(
    values: pd.DataFrame, dates: pd.Series | None, needed: list[str], nan_policy: str, rows: _Rows
) -> tuple[pd.DataFrame, pd.Series | None, int]:
    """Reject missing or infinite values, or drop their rows (``nan_policy: drop``): the values,
    the dates and the number of rows dropped."""
    bad = ~np.isfinite(values.to_numpy())
    if not bad.any():
        return values, dates, 0
    if nan_policy == "reject":
        parts = []
        for j, col in enumerate(needed):
            hits = np.flatnonzero(bad[:, j])
            if len(hits):
                parts.append(f"column '{col}' has {len(hits)} (first at {rows(int(hits[0]))})")
        raise DataError(
            f"{rows.source} has missing or infinite values: {'; '.join(parts)}. "
            "Fix the file, or set nan_policy: drop to drop those rows."
        )
    keep = ~bad.any(axis=1)
    values = values[keep].reset_index(drop=True)
    if dates is not None:
        dates = dates[keep].reset_index(drop=True)
    return values, dates, int((~keep).sum())


def _add_derived_features(
    values: pd.DataFrame, dates: pd.Series | None, zscore_window: int, src: str
) -> tuple[pd.DataFrame, pd.Series | None, int]:
    """Add ``log_return``, ``hl_range`` and ``volume_z`` and drop the leading rows that lack them:
    the values, the dates and the number of rows dropped."""
    close = values["close"].to_numpy()
    if (close <= 0).any():
        i = int(np.flatnonzero(close <= 0)[0])
        raise DataError(
            f"{src}: derived_features needs a positive close; column 'close' is {close[i]} at row {i}."
        )
    values["log_return"] = np.log(values["close"]).diff()
    values["hl_range"] = (values["high"] - values["low"]) / values["close"]
    volume = values["volume"].rolling(zscore_window, min_periods=zscore_window)
    std = volume.std(ddof=0)
    values["volume_z"] = ((values["volume"] - volume.mean()) / std.where(std > 0)).fillna(0.0)
    warmup = zscore_window - 1
    values = values.iloc[warmup:].reset_index(drop=True)
    if dates is not None:
        dates = dates.iloc[warmup:].reset_index(drop=True)
    return values, dates, warmup


def _parse_dates(column: pd.Series, name: str, rows: _Rows) -> pd.Series:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        dates = column
    else:
        dates = pd.Series(pd.NaT, index=column.index)
        # One format inferred from the first value (fast), else each value on its own.
        for fmt in (None, "mixed"):
            try:
                dates = pd.to_datetime(column, errors="coerce", format=fmt)
            except (ValueError, TypeError):
                continue
            if not dates.isna().any():
                break
    unparsed = np.flatnonzero(dates.isna().to_numpy())
    if len(unparsed):
        i = int(unparsed[0])
        raise DataError(
            f"{rows.source}: date column '{name}' has {len(unparsed)} value(s) that are not dates, "
            f"the first at {rows(i)}: {column.iloc[i]!r}."
        )
    step = np.diff(dates.to_numpy().astype("datetime64[ns]").astype(np.int64))
    if (step <= 0).any():
        i = int(np.flatnonzero(step <= 0)[0])
        a, b = dates.iloc[i], dates.iloc[i + 1]
        kind = "duplicate timestamps" if step[i] == 0 else "timestamps out of order"
        raise DataError(
            f"{rows.source}: date column '{name}' has {kind}: {rows(i)} is {a} and {rows(i + 1)} is {b}; "
            "rows must be in strictly increasing time order."
        )
    return dates.reset_index(drop=True)


def _looks_numeric(column: pd.Series) -> bool:
    """Numeric columns, and text columns that are mostly numbers (so a typo is reported, not skipped)."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return True
    if not pd.api.types.is_object_dtype(column) and not pd.api.types.is_string_dtype(column):
        return False
    present = column.dropna()
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").notna().mean() >= 0.5


def _to_float(column: pd.Series, name: str, rows: _Rows) -> pd.Series:
    import pandas as pd

    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.astype(np.float64)
    numbers = pd.to_numeric(column, errors="coerce")
    wrong = np.flatnonzero((numbers.isna() & column.notna()).to_numpy())
    if len(wrong):
        i = int(wrong[0])
        raise DataError(
            f"{rows.source}: column '{name}' is not numeric: {rows(i)} holds {column.iloc[i]!r}"
            f" ({len(wrong)} such value{'s' if len(wrong) != 1 else ''}). Fix the value or leave the column"
            " out of features."
        )
    return numbers.astype(np.float64)
