"""Data sources: a CSV or Parquet file, or the built-in seeded synthetic market.

:func:`load_frame` turns a :class:`DataConfig` into a :class:`LoadedFrame`: float feature columns
(the target included), the dates, and how many rows were dropped. Every problem with a file raises
:class:`~archsearch.errors.DataError` in one paragraph that names the file, the column and the row
(for a CSV both the data row, counted from 0, and the line of the file).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import attrs
import numpy as np
import pandas as pd

from archsearch.errors import DataError

SYNTHETIC = "synthetic"
#: Columns the derived features need, and the names of the columns they add.
DERIVED_INPUTS = ("close", "high", "low", "volume")
DERIVED_NAMES = ("log_return", "hl_range", "volume_z")
_INDEX_COLUMN = re.compile(r"^(Unnamed: \d+|__index_level_\d+__|)$")
#: The synthetic market: daily volatility of the shocks in the calm and the volatile regime,
#: persistence and stationary std of the slow and the fast drift, and the slow drift's pull per
#: unit of log deviation from the trend.
_CALM, _VOLATILE = 0.005, 0.01
_SLOW_PHI, _SLOW_SCALE = 0.98, 0.004
_FAST_PHI, _FAST_SCALE = 0.9, 0.003
_PULL = 0.003


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

    ``source`` is ``"synthetic"`` or the path of a ``.csv`` or ``.parquet`` file. ``features``
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
    else:
        raw, rows = _read_file(cfg.source)
    return _select(raw, cfg, rows)


def _read_file(source: str) -> tuple[pd.DataFrame, _Rows]:
    path = Path(source).expanduser()
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
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return True
    if not pd.api.types.is_object_dtype(column) and not pd.api.types.is_string_dtype(column):
        return False
    present = column.dropna()
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").notna().mean() >= 0.5


def _to_float(column: pd.Series, name: str, rows: _Rows) -> pd.Series:
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


def synthetic_frame(rows: int = 3000, features: int = 20, seed: int = 0) -> pd.DataFrame:
    """A seeded synthetic daily market with a learnable signal.

    Log returns are ``r[t+1] = slow[t] + fast[t] + sigma[t] * e[t+1]``: ``slow`` is a persistent
    drift (AR(1), 0.98) that shows in the close's own past (momentum, what a channel-independent
    model can use), gently pulled back to a 7%-a-year trend so the price stays in a range; ``fast``
    (AR(1), 0.9) is visible only through the indicators; ``sigma`` switches between a calm and a
    volatile regime. The indicator columns ``x01..`` are, in turn: noisy readings of ``fast``
    (leading indicators), a noisy reading of the next day's shock, a regime proxy, momentum and
    moving-average oscillators of the close, a volatility estimate, a noisy reading of ``slow``,
    and smoothed or plain noise with no signal (repeating with fresh noise beyond eleven).
    Columns: ``date`` (business days from 2000-01-03), ``open, high, low, close, volume`` and
    ``x01, ...``, ``features`` numeric columns in all. The same ``seed`` gives the same frame.
    """
    if features < 5:
        raise ValueError(f"features must be at least 5 (open, high, low, close, volume); got {features}")
    rng = np.random.default_rng(seed)
    regime = _regimes(rng, rows)
    sigma = np.where(regime == 1, _VOLATILE, _CALM)
    shocks = rng.standard_normal(rows)
    log_price, slow, fast = _log_prices(rng, sigma, shocks)
    columns: dict[str, np.ndarray] = {
        "date": pd.bdate_range("2000-01-03", periods=rows).to_numpy(),
        **_bars(rng, np.exp(log_price), sigma, regime),
    }
    kinds = _indicators(rng, columns["close"], log_price, shocks, slow, fast, regime)
    for i in range(features - 5):
        columns[f"x{i + 1:02d}"] = kinds[i % len(kinds)]()
    return pd.DataFrame(columns)


def _regimes(rng: np.random.Generator, n: int) -> np.ndarray:
    """The volatility regime of each day: 0 calm, 1 volatile (a two-state Markov chain)."""
    regime = np.zeros(n, dtype=int)
    for t in range(1, n):
        stay = 0.985 if regime[t - 1] == 0 else 0.96
        regime[t] = regime[t - 1] if rng.random() < stay else 1 - regime[t - 1]
    return regime


def _log_prices(
    rng: np.random.Generator, sigma: np.ndarray, shocks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The log close from 100, and the slow and fast drifts that, with the shocks, move it."""
    n = len(sigma)
    slow_noise, fast_noise = rng.standard_normal((2, n))
    slow, fast = np.zeros(n), np.zeros(n)
    log_price = np.zeros(n)
    log_price[0] = np.log(100.0)
    trend = np.log(100.0) + 0.07 / 252 * np.arange(n)
    slow_kick = _SLOW_SCALE * np.sqrt(1 - _SLOW_PHI**2)
    fast_kick = _FAST_SCALE * np.sqrt(1 - _FAST_PHI**2)
    for t in range(1, n):
        deviation = log_price[t - 1] - trend[t - 1]
        slow[t] = _SLOW_PHI * slow[t - 1] + slow_kick * slow_noise[t] - _PULL * (1 - _SLOW_PHI) * deviation
        fast[t] = _FAST_PHI * fast[t - 1] + fast_kick * fast_noise[t]
        log_price[t] = log_price[t - 1] + slow[t - 1] + fast[t - 1] + sigma[t] * shocks[t]
    return log_price, slow, fast


def _bars(
    rng: np.random.Generator, close: np.ndarray, sigma: np.ndarray, regime: np.ndarray
) -> dict[str, np.ndarray]:
    """The daily ``open, high, low, close, volume`` columns around the closes."""
    n = len(close)
    gap = 0.002 * rng.standard_normal(n)
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(gap)
    spread = sigma * np.abs(rng.standard_normal((2, n))) * 0.8
    high = np.maximum(open_, close) * np.exp(spread[0])
    low = np.minimum(open_, close) * np.exp(-spread[1])
    volume = np.exp(15 + 0.5 * regime + 0.3 * rng.standard_normal(n) + 8 * np.abs(np.log(close / open_)))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _indicators(
    rng: np.random.Generator,
    close: np.ndarray,
    log_price: np.ndarray,
    shocks: np.ndarray,
    slow: np.ndarray,
    fast: np.ndarray,
    regime: np.ndarray,
) -> list[Callable[[], np.ndarray]]:
    """The kinds of indicator column, in order; each call makes one (drawing its noise then)."""
    n = len(close)
    returns = np.diff(log_price, prepend=log_price[0])
    next_shock = np.concatenate([shocks[1:], [0.0]])

    def ema(x: np.ndarray, span: int) -> np.ndarray:
        return pd.Series(x).ewm(span=span, adjust=False).mean().to_numpy()

    def noise(scale: float = 1.0) -> np.ndarray:
        return scale * rng.standard_normal(n)

    return [
        lambda: fast / _FAST_SCALE + noise(0.5),
        lambda: fast / _FAST_SCALE + noise(1.0),
        lambda: next_shock + noise(1.5),
        lambda: regime + noise(0.5),
        lambda: np.log(close / ema(close, 10)) * 20,
        lambda: pd.Series(returns).rolling(20, min_periods=1).sum().to_numpy() * 10,
        lambda: ema(np.abs(returns), 10) * 100,
        lambda: ema(noise(), 5),
        lambda: slow / _SLOW_SCALE + noise(1.0),
        lambda: np.log(ema(close, 5) / ema(close, 30)) * 20,
        lambda: noise(),
    ]
