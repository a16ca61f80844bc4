"""Data sources: the synthetic generator, CSV/Parquet loading, and every data error."""

from __future__ import annotations

from pathlib import Path

import cattrs
import numpy as np
import pandas as pd
import pytest

from archsearch.data.sources import DataConfig, load_frame, synthetic_frame
from archsearch.errors import DataError

SPY = "builtin:spy-daily"


@pytest.fixture
def spy() -> str:
    return SPY


def ohlcv(n: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    return pd.DataFrame(
        {
            "date": pd.bdate_range("2020-01-01", periods=n).strftime("%Y-%m-%d"),
            "open": close * 0.999,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.integers(1_000, 2_000, n).astype(float),
        }
    )


def write_csv(tmp_path: Path, frame: pd.DataFrame, name: str = "prices.csv", index: bool = False) -> str:
    path = tmp_path / name
    frame.to_csv(path, index=index)
    return str(path)


def error_of(cfg: DataConfig) -> str:
    with pytest.raises(DataError) as info:
        load_frame(cfg)
    return str(info.value)


# --- the synthetic generator ---------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed() -> None:
    a = synthetic_frame(500, 20, seed=3)
    b = synthetic_frame(500, 20, seed=3)
    c = synthetic_frame(500, 20, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["close"], c["close"])
    assert list(a.columns[:6]) == ["date", "open", "high", "low", "close", "volume"]
    assert [c for c in a.columns if c.startswith("x")] == [f"x{i:02d}" for i in range(1, 16)]


def test_synthetic_is_price_like() -> None:
    f = synthetic_frame(3000, 20, seed=0)
    assert (f[["open", "high", "low", "close", "volume"]].to_numpy() > 0).all()
    assert (f["high"] >= f[["open", "close"]].max(axis=1)).all()
    assert (f["low"] <= f[["open", "close"]].min(axis=1)).all()
    returns = np.diff(np.log(f["close"].to_numpy()))
    assert 0.004 < returns.std() < 0.03
    assert 20 < f["close"].min() and f["close"].max() < 5_000


def test_synthetic_has_leading_indicators_and_noise() -> None:
    f = synthetic_frame(3000, 20, seed=0)
    close = f["close"].to_numpy()
    future = np.log(close[6:] / close[1:-5])  # return over the next 5 days from row t (t = 0..n-7)
    corr = {c: np.corrcoef(f[c].to_numpy()[:-6], future)[0, 1] for c in f.columns if c.startswith("x")}
    assert corr["x01"] > 0.2  # a noisy reading of the fast drift leads returns
    assert abs(corr["x11"]) < 0.1  # pure noise does not


def test_load_synthetic_default() -> None:
    frame = load_frame(DataConfig())
    assert frame.n_rows == 3000
    assert len(frame.feature_names) == 20
    assert frame.target_name == "close" and "close" in frame.feature_names
    assert frame.dates is not None and frame.dates.iloc[0] == pd.Timestamp("2000-01-03")
    assert frame.source == "synthetic data" and frame.dropped_rows == 0
    assert frame.frame.dtypes.eq(np.float64).all()


# --- files ---------------------------------------------------------------------------------


def test_spy_csv_loads(spy: Path) -> None:
    frame = load_frame(DataConfig(source=str(spy)))
    assert frame.feature_names == ("open", "high", "low", "close", "volume")  # pandas index column skipped
    assert frame.n_rows == 5241
    assert frame.dates.iloc[0] == pd.Timestamp("1999-11-01")
    assert frame.dates.iloc[-1] == pd.Timestamp("2020-08-28")
    assert frame.frame["close"].iloc[0] == pytest.approx(135.5625)


def test_spy_derived_features(spy: Path) -> None:
    plain = load_frame(DataConfig(source=str(spy)))
    frame = load_frame(DataConfig(source=str(spy), derived_features=True, zscore_window=20))
    assert frame.feature_names[-3:] == ("log_return", "hl_range", "volume_z")
    assert frame.warmup_rows == 19 and frame.n_rows == 5241 - 19
    assert frame.dates.iloc[0] == plain.dates.iloc[19]
    raw = plain.frame
    t = 100  # row 100 of the derived frame is row 119 of the file
    assert frame.frame["log_return"].iloc[t] == pytest.approx(
        np.log(raw["close"].iloc[119] / raw["close"].iloc[118])
    )
    assert frame.frame["hl_range"].iloc[t] == pytest.approx(
        (raw["high"].iloc[119] - raw["low"].iloc[119]) / raw["close"].iloc[119]
    )
    window = raw["volume"].iloc[100:120]
    assert frame.frame["volume_z"].iloc[t] == pytest.approx(
        (raw["volume"].iloc[119] - window.mean()) / window.std(ddof=0)
    )


def test_explicit_features_and_target_added(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ohlcv())
    frame = load_frame(DataConfig(source=path, features=("volume", "open")))
    assert frame.feature_names == ("volume", "open", "close")
    np.testing.assert_allclose(frame.frame["open"], ohlcv()["open"])


def test_auto_features_skip_text_columns(tmp_path: Path) -> None:
    data = ohlcv()
    data["symbol"] = "SPY"
    frame = load_frame(DataConfig(source=write_csv(tmp_path, data)))
    assert "symbol" not in frame.feature_names
    assert frame.feature_names == ("open", "high", "low", "close", "volume")


def test_parquet_round_trip(tmp_path: Path) -> None:
    data = ohlcv()
    data["date"] = pd.to_datetime(data["date"])
    path = tmp_path / "prices.parquet"
    data.to_parquet(path)
    frame = load_frame(DataConfig(source=str(path)))
    assert frame.feature_names == ("open", "high", "low", "close", "volume")
    np.testing.assert_allclose(frame.frame["close"], data["close"])
    assert (frame.dates == data["date"]).all()


def test_no_date_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ohlcv().drop(columns="date"))
    frame = load_frame(DataConfig(source=path, date_column=None))
    assert frame.dates is None and frame.n_rows == 30


def test_config_from_cattrs() -> None:
    cfg = cattrs.structure(
        {"source": "a.csv", "features": ["open", "close"], "nan_policy": "drop"}, DataConfig
    )
    assert cfg.features == ("open", "close") and cfg.nan_policy == "drop"


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"nan_policy": "keep"}, "nan_policy must be one of reject, drop; got 'keep'"),
        ({"synthetic_features": 3}, "synthetic_features must be at least 5"),
        ({"zscore_window": 1}, "zscore_window must be at least 2"),
        ({"features": ("a", "a")}, "features lists a column twice"),
    ],
)
def test_config_validation(options: dict, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        DataConfig(**options)


# --- errors -------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    message = error_of(DataConfig(source=str(path)))
    assert f"data file '{path}' does not exist" in message


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "prices.xlsx"
    path.write_text("x")
    message = error_of(DataConfig(source=str(path)))
    assert f"data file '{path}'" in message and "unsupported extension '.xlsx'" in message
    assert ".csv or .parquet" in message


def test_missing_feature_lists_available_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ohlcv())
    message = error_of(DataConfig(source=path, features=("open", "adj_close", "vwap")))
    assert f"data file '{path}' has no column 'adj_close', 'vwap'" in message
    assert "the columns are: date, open, high, low, close, volume" in message


def test_missing_target_and_date_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ohlcv())
    assert "no column 'price' (the target)" in error_of(DataConfig(source=path, target="price"))
    message = error_of(DataConfig(source=path, date_column="timestamp"))
    assert "no column 'timestamp'" in message and "date_column: null" in message


def test_non_numeric_value_names_row_and_value(tmp_path: Path) -> None:
    data = ohlcv()
    data["close"] = data["close"].astype(object)
    data.loc[7, "close"] = "12,5"
    data.loc[9, "close"] = "n/a?"
    path = write_csv(tmp_path, data)
    message = error_of(DataConfig(source=path))  # features auto-selected: close is still checked
    assert f"data file '{path}': column 'close' is not numeric" in message
    assert "row 7 (line 9 of the file) holds '12,5'" in message
    assert "2 such values" in message


def test_unsorted_timestamps_name_rows(tmp_path: Path) -> None:
    data = ohlcv()
    data.loc[[4, 5], "date"] = data.loc[[5, 4], "date"].to_numpy()
    path = write_csv(tmp_path, data)
    message = error_of(DataConfig(source=path))
    assert "timestamps out of order" in message
    assert "row 4 (line 6 of the file) is 2020-01-08" in message and "row 5 (line 7 of the file)" in message


def test_duplicate_timestamps_name_rows(tmp_path: Path) -> None:
    data = ohlcv()
    data.loc[11, "date"] = data.loc[10, "date"]
    message = error_of(DataConfig(source=write_csv(tmp_path, data)))
    assert "duplicate timestamps" in message and "row 10" in message and "row 11" in message


def test_unparseable_date(tmp_path: Path) -> None:
    data = ohlcv()
    data.loc[3, "date"] = "someday"
    message = error_of(DataConfig(source=write_csv(tmp_path, data)))
    assert "date column 'date'" in message and "row 3 (line 5 of the file): 'someday'" in message


def test_nan_and_inf_rejected_with_column_row_count(tmp_path: Path) -> None:
    data = ohlcv()
    data.loc[[6, 20], "close"] = np.nan
    data.loc[12, "volume"] = np.inf
    path = write_csv(tmp_path, data)
    message = error_of(DataConfig(source=path))
    assert f"data file '{path}' has missing or infinite values" in message
    assert "column 'close' has 2 (first at row 6 (line 8 of the file))" in message
    assert "column 'volume' has 1 (first at row 12" in message
    assert "nan_policy: drop" in message


def test_nan_dropped_with_count(tmp_path: Path) -> None:
    data = ohlcv()
    data.loc[[6, 20], "close"] = np.nan
    data.loc[12, "volume"] = np.inf
    frame = load_frame(DataConfig(source=write_csv(tmp_path, data), nan_policy="drop"))
    assert frame.dropped_rows == 3 and frame.n_rows == 27
    assert np.isfinite(frame.frame.to_numpy()).all()
    kept = data.drop(index=[6, 12, 20]).reset_index(drop=True)
    np.testing.assert_allclose(frame.frame["close"], kept["close"])
    assert (frame.dates.dt.strftime("%Y-%m-%d") == kept["date"]).all()


def test_nan_in_unused_column_is_ignored(tmp_path: Path) -> None:
    data = ohlcv()
    data.loc[3, "volume"] = np.nan
    frame = load_frame(DataConfig(source=write_csv(tmp_path, data), features=("open",)))
    assert frame.n_rows == 30 and frame.feature_names == ("open", "close")


def test_derived_features_need_ohlcv(tmp_path: Path) -> None:
    path = write_csv(tmp_path, ohlcv().drop(columns=["high", "volume"]))
    message = error_of(DataConfig(source=path, derived_features=True))
    assert (
        "no column 'high', 'volume'" in message
        and "derived_features needs close, high, low and volume" in message
    )


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert f"data file '{path}' could not be read" in error_of(DataConfig(source=str(path)))


def test_mixed_date_formats_parse(tmp_path: Path) -> None:
    data = ohlcv(4)
    data["date"] = ["2020-01-02", "2020-01-03", "01/06/2020", "7 Jan 2020"]
    frame = load_frame(DataConfig(source=write_csv(tmp_path, data)))
    assert frame.dates.dt.strftime("%Y-%m-%d").tolist() == [
        "2020-01-02",
        "2020-01-03",
        "2020-01-06",
        "2020-01-07",
    ]


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file")
    assert f"data file '{path}' could not be read" in error_of(DataConfig(source=str(path)))


def test_builtin_source_is_package_data_and_unknown_names_are_listed() -> None:
    from importlib import resources

    assert resources.files("archsearch.data").joinpath("builtin", "SPY_daily.csv").is_file()
    frame = load_frame(DataConfig(source="builtin:spy-daily"))
    assert frame.n_rows == 5241 and "builtin:spy-daily" in frame.source
    with pytest.raises(ValueError, match="built-in sources are: builtin:spy-daily"):
        DataConfig(source="builtin:spy")


def test_nothing_in_the_repository_reads_data_outside_it() -> None:
    repo = Path(__file__).resolve().parents[1]
    files = [*repo.glob("configs/**/*.yaml"), *repo.glob("tests/*.py"), *repo.glob("benchmarks/*")]
    files += [*repo.glob("archsearch/**/*.py"), *repo.glob("docs/*.md")]
    needle = "shared" + "/data"
    assert [str(f) for f in files if f.is_file() and needle in f.read_text(errors="ignore")] == []
