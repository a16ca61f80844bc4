"""Splits, windows, scaling and labels: nothing leaks across a split boundary."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archsearch.data.sources import DataConfig, LoadedFrame, load_frame
from archsearch.data.splits import SplitConfig, split_ranges, window_ends
from archsearch.data.tasks import TaskConfig, roc_auc, threshold_labels
from archsearch.data.windows import PreparedData, prepare
from archsearch.errors import DataError

SPY = "builtin:spy-daily"


def row_frame(n: int, seed: int = 0) -> LoadedFrame:
    """Columns: ``row`` (the row number, so any window can be traced back to its rows), a
    positive random-walk ``close`` and a noise column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "row": np.arange(n, dtype=np.float64),
            "close": 50 * np.exp(np.cumsum(0.02 * rng.standard_normal(n))),
            "noise": rng.standard_normal(n),
        }
    )
    dates = pd.Series(pd.bdate_range("2001-01-01", periods=n))
    return LoadedFrame(frame, dates, "test frame", 0, ("row", "close", "noise"), "close")


def rows_of(data: PreparedData, values: torch.Tensor) -> np.ndarray:
    """Undo the scaling of the ``row`` column (feature 0) to get row numbers back."""
    return np.rint(values.numpy().astype(np.float64) * data.scaler_std[0] + data.scaler_mean[0]).astype(int)


@st.composite
def split_cases(draw: st.DrawFn) -> tuple[int, SplitConfig, int, int]:
    context = draw(st.integers(1, 25))
    horizon = draw(st.integers(1, 8))
    per_split = context + horizon
    n = draw(st.integers(3 * per_split + 10, 400))
    if draw(st.booleans()):
        lo = per_split / n + 0.01
        f0 = draw(st.floats(lo, 1 - 2 * lo))
        f1 = draw(st.floats(lo, 1 - f0 - lo))
        split = SplitConfig(fractions=(f0, f1, 1 - f0 - f1))
        if any(e - s < per_split for s, e in split_ranges(n, split).values()):
            split = SplitConfig(fractions=(1 / 3, 1 / 3, 1 / 3))
    else:
        a = draw(st.integers(0, n - 3 * per_split))
        b = draw(st.integers(a + per_split, n - 2 * per_split))
        c = draw(st.integers(b, n - 2 * per_split))
        d = draw(st.integers(c + per_split, n - per_split))
        e = draw(st.integers(d, n - per_split))
        f = draw(st.integers(e + per_split, n))
        split = SplitConfig(method="rows", train_rows=(a, b), val_rows=(c, d), test_rows=(e, f))
    return n, split, context, horizon


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_cases())
def test_no_window_crosses_a_split_boundary(case: tuple[int, SplitConfig, int, int]) -> None:
    n, split, context, horizon = case
    frame = row_frame(n)
    data = prepare(frame, TaskConfig(kind="forecast", targets=("row",)), split, horizon, context)
    ranges = split_ranges(n, split)
    bounds = {name: (start, end) for name, (start, end) in ranges.items()}
    seen: dict[str, set[int]] = {}
    for name in ("train", "val", "test"):
        start, end = bounds[name]
        x, y = data.batch(name)
        inputs = rows_of(data, x[:, :, 0])  # [windows, context]
        labels = rows_of(data, y[:, :, 0])  # [windows, horizon]; the forecast target is the row column
        assert x.shape == (end - start - context - horizon + 1, context, 3)
        # Inputs are the context rows ending at t, labels the horizon rows after t.
        np.testing.assert_array_equal(inputs[:, -1] + 1, labels[:, 0])
        np.testing.assert_array_equal(np.diff(inputs, axis=1), 1)
        np.testing.assert_array_equal(np.diff(labels, axis=1), 1)
        used = np.concatenate([inputs.ravel(), labels.ravel()])
        assert used.min() >= start and used.max() < end, f"{name} uses rows outside [{start}, {end})"
        seen[name] = set(used.tolist())
        assert data.split_info[name]["windows"] == len(inputs)
        assert data.split_info[name]["rows"] == [start, end]
    assert (
        not seen["train"] & seen["val"]
        and not seen["train"] & seen["test"]
        and not seen["val"] & seen["test"]
    )
    # Train, then val, then test in time.
    assert max(seen["train"]) < min(seen["val"]) and max(seen["val"]) < min(seen["test"])


@settings(max_examples=40, deadline=None)
@given(split_cases(), st.sampled_from(["threshold", "forecast"]))
def test_scaler_and_training_data_ignore_later_rows(
    case: tuple[int, SplitConfig, int, int], kind: str
) -> None:
    n, split, context, horizon = case
    frame = row_frame(n)
    task = TaskConfig(kind=kind)
    data = prepare(frame, task, split, horizon, context)
    start, end = split_ranges(n, split)["train"]
    train_values = frame.frame.to_numpy()[start:end]
    np.testing.assert_allclose(data.scaler_mean, train_values.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(data.scaler_std, train_values.std(axis=0), rtol=1e-12)
    # Replace every row outside the training range: the training windows and labels do not change.
    changed = frame.frame.copy()
    outside = np.r_[0:start, end:n]
    changed.iloc[outside] = changed.iloc[outside] * 3.0 + 7.0
    other = prepare(attrs_evolve(frame, changed), task, split, horizon, context)
    np.testing.assert_array_equal(other.scaler_mean, data.scaler_mean)
    assert torch.equal(other.x_train, data.x_train) and torch.equal(other.y_train, data.y_train)


def attrs_evolve(frame: LoadedFrame, values: pd.DataFrame) -> LoadedFrame:
    return LoadedFrame(values, frame.dates, frame.source, 0, frame.feature_names, frame.target_name)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(1, 200), min_size=12, max_size=60),
    st.integers(1, 6),
    st.floats(-0.05, 0.1),
    st.sampled_from(["max", "end"]),
)
def test_threshold_labels_match_definition(
    prices: list[float], horizon: int, threshold: float, rule: str
) -> None:
    p = np.array(prices)
    ends = np.arange(0, len(p) - horizon)
    labels = threshold_labels(p, ends, horizon, threshold, rule)
    for t, label in zip(ends, labels, strict=True):
        ahead = max(p[t + 1 : t + horizon + 1]) if rule == "max" else p[t + horizon]
        assert label == float(ahead / p[t] - 1 >= threshold)


def test_threshold_labels_example() -> None:
    p = np.array([100.0, 100.5, 101.2, 99.0, 100.0, 100.0])
    assert threshold_labels(p, np.array([0, 1, 2]), 2, 0.01, "max").tolist() == [1.0, 0.0, 0.0]
    assert threshold_labels(p, np.array([0, 1, 2]), 2, 0.01, "end").tolist() == [1.0, 0.0, 0.0]
    assert threshold_labels(p, np.array([0]), 3, 0.01, "end").tolist() == [0.0]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40))
def test_auc_equals_pairwise_probability(pairs: list[tuple[int, bool]]) -> None:
    scores = np.array([s for s, _ in pairs], dtype=float)
    labels = np.array([y for _, y in pairs])
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        assert np.isnan(roc_auc(scores, labels))
        return
    expected = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert roc_auc(scores, labels) == pytest.approx(expected)


def test_baselines_and_shapes() -> None:
    frame = load_frame(DataConfig(synthetic_rows=600, synthetic_features=8))
    threshold = prepare(frame, TaskConfig(), SplitConfig(), horizon=3, context_length=20)
    p = threshold.y_train.mean().item()
    y = threshold.y_val.numpy()
    assert threshold.baseline_loss == pytest.approx(
        -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-6
    )
    assert threshold.head == "classification" and threshold.n_outputs == 1 and threshold.y_val.shape[1] == 1
    assert threshold.target_channels == (frame.feature_names.index("close"),)

    forecast = prepare(frame, TaskConfig(kind="forecast", targets=("close", "x01")), SplitConfig(), 3, 20)
    assert forecast.head == "forecast" and forecast.n_outputs == 3 and forecast.n_targets == 2
    channels = list(forecast.target_channels)
    assert channels == [frame.feature_names.index("close"), frame.feature_names.index("x01")]
    x_val, y_val = forecast.batch("val")
    assert y_val.shape == (forecast.n_windows("val"), 3, 2)
    last = x_val[:, -1:, channels]
    assert forecast.baseline_loss == pytest.approx(((y_val - last) ** 2).mean().item(), rel=1e-5)
    spec = forecast.model_spec(patch_len=5, stride=5)
    assert (spec.num_features, spec.context_length, spec.head, spec.n_outputs, spec.target_channels) == (
        8,
        20,
        "forecast",
        3,
        tuple(channels),
    )


def test_batch_by_index_and_to_device() -> None:
    data = prepare(row_frame(200), TaskConfig(kind="forecast", targets=("row",)), SplitConfig(), 2, 10)
    index = torch.tensor([5, 0, 3])
    x, y = data.batch("val", index)
    x_all, y_all = data.batch("val")
    assert torch.equal(x, x_all[index]) and torch.equal(y, y_all[index])
    assert data.to("cpu") is data
    assert data.to(torch.device("cpu")).device.type == "cpu"


def test_split_by_dates(tmp_path: Path) -> None:
    frame = load_frame(DataConfig(source=SPY))
    split = SplitConfig(method="dates", val_start="2015-01-01", test_start="2018-01-01")
    data = prepare(frame, TaskConfig(), split, horizon=5, context_length=60)
    info = data.split_info
    assert info["train"]["first_date"] == "1999-11-01" and info["train"]["last_date"] == "2014-12-31"
    assert info["val"]["first_date"] == "2015-01-02" and info["val"]["last_date"] == "2017-12-29"
    assert info["test"]["first_date"] == "2018-01-02" and info["test"]["last_date"] == "2020-08-28"
    assert info["test"]["rows"][1] == 5241
    assert info["val"]["windows"] == info["val"]["rows"][1] - info["val"]["rows"][0] - 64


def test_too_few_rows_says_needed_and_have() -> None:
    frame = load_frame(DataConfig(synthetic_rows=300, synthetic_features=6))
    with pytest.raises(DataError) as info:
        prepare(frame, TaskConfig(), SplitConfig(), horizon=5, context_length=60)
    message = str(info.value)
    assert "synthetic data: too few rows" in message
    assert "context_length 60 + horizon 5 = 65 rows inside one split" in message
    assert "the val split has 45 (rows 210..254)" in message
    assert "at least 434 rows; the data has 300 rows" in message
    # 434 rows are indeed enough.
    data = prepare(
        load_frame(DataConfig(synthetic_rows=434, synthetic_features=6)), TaskConfig(), SplitConfig(), 5, 60
    )
    assert min(data.n_windows(s) for s in ("train", "val", "test")) == 1


def test_rows_past_the_end_and_dates_without_dates() -> None:
    frame = row_frame(100)
    split = SplitConfig(method="rows", train_rows=(0, 50), val_rows=(50, 80), test_rows=(80, 120))
    with pytest.raises(DataError, match=r"test_rows \[80, 120\) runs past the end of the data \(100 rows\)"):
        prepare(frame, TaskConfig(), split, 2, 5)
    no_dates = LoadedFrame(frame.frame, None, "data file 'x.csv'", 0, frame.feature_names, "close")
    with pytest.raises(DataError, match=r"data file 'x\.csv' has no date column"):
        prepare(
            no_dates,
            TaskConfig(),
            SplitConfig(method="dates", val_start="2001-02-01", test_start="2001-03-01"),
            2,
            5,
        )


def test_threshold_needs_positive_target() -> None:
    frame = row_frame(100)
    values = frame.frame.copy()
    values.loc[40, "close"] = -1.0
    with pytest.raises(DataError, match=r"needs a positive target; column 'close' is -1\.0 at row 40"):
        prepare(attrs_evolve(frame, values), TaskConfig(), SplitConfig(), 2, 5)


def test_unknown_forecast_target() -> None:
    with pytest.raises(
        DataError, match="column 'volume' is not among the features; the features are: row, close"
    ):
        prepare(row_frame(100), TaskConfig(kind="forecast", targets=("volume",)), SplitConfig(), 2, 5)


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"fractions": (0.7, 0.2, 0.2)}, "fractions must add up to 1"),
        ({"fractions": (0.9, 0.1, 0.0)}, "three numbers between 0 and 1"),
        ({"method": "dates", "val_start": "2015-01-01"}, "method dates needs val_start and test_start"),
        ({"method": "dates", "val_start": "2016-01-01", "test_start": "2015-01-01"}, "must come before"),
        ({"method": "dates", "val_start": "soon", "test_start": "2015-01-01"}, "val_start must be a date"),
        ({"method": "rows", "train_rows": (0, 10)}, "method rows needs train_rows, val_rows and test_rows"),
        (
            {"method": "rows", "train_rows": (0, 10), "val_rows": (5, 20), "test_rows": (20, 30)},
            r"train_rows \[0, 10\] must end before val_rows \[5, 20\] starts",
        ),
        ({"method": "rows", "train_rows": (10, 5)}, "train_rows must be"),
        ({"method": "random"}, "method must be one of fractions, dates, rows"),
    ],
)
def test_split_config_validation(options: dict, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        SplitConfig(**options)


def test_task_config_validation() -> None:
    with pytest.raises(ValueError, match="kind must be one of threshold, forecast"):
        TaskConfig(kind="regression")
    with pytest.raises(ValueError, match="targets applies to kind: forecast only"):
        TaskConfig(targets=("close",))
    assert TaskConfig(kind="forecast").head == "forecast" and TaskConfig().head == "classification"


def test_window_ends() -> None:
    assert window_ends((10, 20), context_length=3, horizon=2).tolist() == [12, 13, 14, 15, 16, 17]
    assert window_ends((0, 4), context_length=3, horizon=2).tolist() == []


# --- split.context_from_previous: inputs may reach back, targets never do -----------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_cases())
def test_context_from_previous_keeps_targets_inside_their_split(
    case: tuple[int, SplitConfig, int, int],
) -> None:
    n, split, context, horizon = case
    split = attrs.evolve(split, context_from_previous=True)
    data = prepare(row_frame(n), TaskConfig(kind="forecast", targets=("row",)), split, horizon, context)
    targets: dict[str, set[int]] = {}
    for name, (start, end) in split_ranges(n, split).items():
        x, y = data.batch(name)
        inputs, labels = rows_of(data, x[:, :, 0]), rows_of(data, y[:, :, 0])
        np.testing.assert_array_equal(inputs[:, -1] + 1, labels[:, 0])
        np.testing.assert_array_equal(np.diff(inputs, axis=1), 1)
        assert labels.min() >= start and labels.max() < end, f"{name} scores rows outside [{start}, {end})"
        assert inputs.min() >= (start if name == "train" else 0)
        # Every window whose labels fit: a validation or test window's labels start at the split's
        # first row (or as soon as context_length rows exist before it); training stays inside.
        first_label = start + context if name == "train" else max(start, context)
        assert labels[0, 0] == first_label and labels[-1, -1] == end - 1
        assert len(labels) == end - first_label - horizon + 1 == data.split_info[name]["windows"]
        targets[name] = set(labels.ravel().tolist())
    assert not targets["train"] & targets["val"] and not targets["val"] & targets["test"]
    assert not targets["train"] & targets["test"]
    # Training windows and the scaler are the same as without it.
    plain = prepare(
        row_frame(n),
        TaskConfig(kind="forecast", targets=("row",)),
        attrs.evolve(split, context_from_previous=False),
        horizon,
        context,
    )
    assert torch.equal(plain.x_train, data.x_train) and torch.equal(plain.y_train, data.y_train)
    np.testing.assert_array_equal(plain.scaler_mean, data.scaler_mean)


def test_ett_borders_give_the_papers_window_counts() -> None:
    """The ETT hourly borders, look-back 336, horizon 96: 8,209 / 2,785 / 2,785 windows with the
    inputs reaching back (the papers' protocol), 2,449 validation and test windows without."""
    split = SplitConfig(method="rows", train_rows=(0, 8640), val_rows=(8640, 11520), test_rows=(11520, 14400))
    task = TaskConfig(kind="forecast", targets=("row",))
    counts = {}
    for reach in (True, False):
        data = prepare(row_frame(17_420), task, attrs.evolve(split, context_from_previous=reach), 96, 336)
        counts[reach] = tuple(data.n_windows(s) for s in ("train", "val", "test"))
        first_val_input = rows_of(data, data.batch("val", torch.tensor([0]))[0][:, :, 0])[0, 0]
        assert first_val_input == (8640 - 336 if reach else 8640)
    assert counts == {True: (8209, 2785, 2785), False: (8209, 2449, 2449)}
    assert window_ends((8640, 11520), 336, 96, reach_back=True)[[0, -1]].tolist() == [8639, 11423]


def test_context_from_previous_too_few_rows() -> None:
    split = SplitConfig(
        method="rows", train_rows=(0, 50), val_rows=(50, 53), test_rows=(53, 70), context_from_previous=True
    )
    with pytest.raises(DataError, match=r"A val window needs its horizon 4 label rows inside the split"):
        prepare(row_frame(100), TaskConfig(), split, 4, 10)
    # Three rows of horizon 3 are enough when the inputs may come from before the split.
    data = prepare(row_frame(100), TaskConfig(), attrs.evolve(split), 3, 10)
    assert data.n_windows("val") == 1
