"""Windows of a loaded frame, split in time, scaled with training statistics, ready to train on.

:func:`prepare` keeps the scaled series once and each split's window end rows, so memory stays at
the size of the data; :meth:`PreparedData.batch` gathers the windows of a batch by index (on the
device the data lives on, with no DataLoader).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import pandas as pd
import torch

from archsearch.architecture import HeadKind, ModelSpec
from archsearch.data.sources import LoadedFrame
from archsearch.data.splits import (
    SPLITS,
    Range,
    SplitConfig,
    reaches_back,
    rows_needed,
    split_ranges,
    window_ends,
)
from archsearch.data.tasks import TaskConfig, TaskKind, constant_bce, threshold_labels
from archsearch.errors import DataError


@attrs.frozen(eq=False)
class PreparedData:
    """Scaled series, per-split window ends and labels, and what a model needs to know.

    ``series`` is ``[rows, num_features]`` float32, scaled by ``scaler_mean``/``scaler_std``
    (fit on the training rows). ``ends[split]`` are the window end rows; ``labels[split]`` is
    ``[windows, 1]`` (threshold) or ``[windows, horizon, n_targets]`` (forecast, scaled).
    ``baseline_loss`` is the validation loss of the trivial predictor: the training positive rate
    (BCE) or the last value repeated (MSE). ``split_info`` says what each split covers.
    """

    series: torch.Tensor
    ends: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    task_kind: TaskKind
    context_length: int
    horizon: int
    head: HeadKind
    n_outputs: int
    n_targets: int
    target_channels: tuple[int, ...]
    feature_names: tuple[str, ...]
    target_name: str
    scaler_mean: np.ndarray
    scaler_std: np.ndarray
    split_info: dict[str, dict[str, Any]]
    baseline_loss: float
    source: str
    offsets: torch.Tensor = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        offsets = torch.arange(-self.context_length + 1, 1, device=self.series.device)
        object.__setattr__(self, "offsets", offsets)

    @property
    def num_features(self) -> int:
        return self.series.shape[1]

    @property
    def device(self) -> torch.device:
        return self.series.device

    def n_windows(self, split: str) -> int:
        return int(self.ends[split].shape[0])

    def batch(self, split: str, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``[b, context_length, num_features]`` and labels of the windows ``index`` of a split
        (all windows when ``index`` is None)."""
        ends = self.ends[split] if index is None else self.ends[split][index]
        y = self.labels[split] if index is None else self.labels[split][index]
        return self.series[ends[:, None] + self.offsets], y

    def to(self, device: torch.device | str) -> PreparedData:
        """The same data on ``device`` (returns ``self`` when it is there already)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" is the current device: cuda:N
            device = torch.device("cuda", torch.cuda.current_device())
        if self.series.device == device:
            return self
        return attrs.evolve(
            self,
            series=self.series.to(device),
            ends={k: v.to(device) for k, v in self.ends.items()},
            labels={k: v.to(device) for k, v in self.labels.items()},
        )

    @property
    def x_train(self) -> torch.Tensor:
        return self.batch("train")[0]

    @property
    def y_train(self) -> torch.Tensor:
        return self.labels["train"]

    @property
    def y_val(self) -> torch.Tensor:
        return self.labels["val"]

    def model_spec(self, **options: Any) -> ModelSpec:
        """A :class:`ModelSpec` with this data's shape and head; ``options`` set the rest
        (``patch_len``, ``stride``, ``dropout``, ...)."""
        return ModelSpec(
            num_features=self.num_features,
            context_length=self.context_length,
            head=self.head,
            n_outputs=self.n_outputs,
            n_targets=self.n_targets,
            target_channels=self.target_channels,
            **options,
        )


def prepare(
    frame: LoadedFrame, task: TaskConfig, split: SplitConfig, horizon: int, context_length: int
) -> PreparedData:
    """Split ``frame`` in time, scale it with training statistics and label every window."""
    if horizon < 1 or context_length < 1:
        raise ValueError(f"horizon and context_length must be positive, got {horizon} and {context_length}")
    ranges = split_ranges(frame.n_rows, split, frame.dates, frame.source)
    all_ends = {
        name: window_ends(ranges[name], context_length, horizon, reaches_back(split, name)) for name in SPLITS
    }
    _check_split_rows(frame, split, ranges, all_ends, context_length, horizon)
    values = frame.frame.to_numpy(dtype=np.float64)
    mean, std, scaled = _scale(values, ranges["train"])
    target_index = frame.column_index(frame.target_name)
    if task.kind == "threshold":
        channels = (target_index,)
    else:
        channels = tuple(frame.column_index(n) for n in task.targets) if task.targets else (target_index,)
    ends, labels = _windows(frame, task, all_ends, values, scaled, channels, horizon)
    baseline = _baseline_loss(task, scaled, ends, labels, channels)
    return PreparedData(
        series=torch.from_numpy(scaled),
        ends={k: torch.from_numpy(v) for k, v in ends.items()},
        labels={k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in labels.items()},
        task_kind=task.kind,
        context_length=context_length,
        horizon=horizon,
        head=task.head,
        n_outputs=1 if task.kind == "threshold" else horizon,
        n_targets=len(channels),
        target_channels=channels,
        feature_names=frame.feature_names,
        target_name=frame.target_name,
        scaler_mean=mean,
        scaler_std=std,
        split_info=_split_info(frame, ranges, ends),
        baseline_loss=baseline,
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


def _scale(values: np.ndarray, train: Range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training rows' mean and std (1 for a constant column) and the values scaled by them."""
    train_start, train_end = train
    mean = values[train_start:train_end].mean(axis=0)
    std = values[train_start:train_end].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return mean, std, ((values - mean) / std).astype(np.float32)


def _windows(
    frame: LoadedFrame,
    task: TaskConfig,
    ends: dict[str, np.ndarray],
    values: np.ndarray,
    scaled: np.ndarray,
    channels: tuple[int, ...],
    horizon: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each split's window end rows (``ends``) and labels: threshold labels of the unscaled target,
    or the scaled future values of the target ``channels``."""
    if task.kind == "threshold":
        prices = values[:, channels[0]]
    labels: dict[str, np.ndarray] = {}
    for name in SPLITS:
        if task.kind == "threshold":
            e = ends[name]
            if (prices[e] <= 0).any():
                i = int(e[np.flatnonzero(prices[e] <= 0)[0]])
                raise DataError(
                    f"{frame.source}: the threshold task needs a positive target; column '{frame.target_name}' is "
                    f"{prices[i]} at row {i}. Use kind: forecast, or a price column as the target."
                )
            labels[name] = threshold_labels(prices, e, horizon, task.threshold, task.rule)[:, None]
        else:
            future = ends[name][:, None] + np.arange(1, horizon + 1)
            labels[name] = scaled[future][:, :, list(channels)]
    return ends, labels


def _baseline_loss(
    task: TaskConfig,
    scaled: np.ndarray,
    ends: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    channels: tuple[int, ...],
) -> float:
    """The validation loss of the trivial predictor: the training positive rate (BCE) or the last
    value repeated (MSE)."""
    if task.kind == "threshold":
        return constant_bce(labels["train"], labels["val"])
    last = scaled[ends["val"]][:, None, list(channels)]
    return float(np.mean((labels["val"] - last) ** 2, dtype=np.float64))


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
