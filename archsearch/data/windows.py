"""Windows of a loaded frame, split in time, scaled with training statistics, ready to train on.

:func:`prepare` keeps the scaled series once and each split's window end rows, so memory stays at
the size of the data; :meth:`PreparedData.batch` gathers the windows of a batch by index (on the
device the data lives on, with no DataLoader).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch

from archsearch.architecture import HeadKind, ModelSpec
from archsearch.data.shape import describe
from archsearch.data.sources import LoadedFrame
from archsearch.data.splits import SPLITS, Range, SplitConfig
from archsearch.data.tasks import TaskConfig, TaskKind, constant_bce, threshold_labels


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
    #: The same trivial predictor's loss on the test split (reported beside a winner's test loss).
    baseline_test_loss: float = float("nan")
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
    """Split ``frame`` in time, scale it with training statistics and label every window (the
    checks and the windows are :func:`~archsearch.data.shape.describe`'s)."""
    shape = describe(frame, task, split, horizon, context_length)
    values = frame.frame.to_numpy(dtype=np.float64)
    mean, std, scaled = _scale(values, shape.ranges["train"])
    channels = shape.target_channels
    labels = _labels(task, shape.ends, values, scaled, channels, horizon)
    baseline = _baseline_loss(task, scaled, shape.ends, labels, channels)
    baseline_test = _baseline_loss(task, scaled, shape.ends, labels, channels, "test")
    return PreparedData(
        series=torch.from_numpy(scaled),
        ends={k: torch.from_numpy(v) for k, v in shape.ends.items()},
        labels={k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in labels.items()},
        task_kind=task.kind,
        context_length=context_length,
        horizon=horizon,
        head=shape.head,
        n_outputs=shape.n_outputs,
        n_targets=shape.n_targets,
        target_channels=channels,
        feature_names=frame.feature_names,
        target_name=frame.target_name,
        scaler_mean=mean,
        scaler_std=std,
        split_info=shape.split_info,
        baseline_loss=baseline,
        source=frame.source,
        baseline_test_loss=baseline_test,
    )


def _scale(values: np.ndarray, train: Range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training rows' mean and std (1 for a constant column) and the values scaled by them."""
    train_start, train_end = train
    mean = values[train_start:train_end].mean(axis=0)
    std = values[train_start:train_end].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return mean, std, ((values - mean) / std).astype(np.float32)


def _labels(
    task: TaskConfig,
    ends: dict[str, np.ndarray],
    values: np.ndarray,
    scaled: np.ndarray,
    channels: tuple[int, ...],
    horizon: int,
) -> dict[str, np.ndarray]:
    """Each split's labels: threshold labels of the unscaled target (positive, as ``describe``
    checked), or the scaled future values of the target ``channels``."""
    labels: dict[str, np.ndarray] = {}
    for name in SPLITS:
        if task.kind == "threshold":
            prices = values[:, channels[0]]
            labels[name] = threshold_labels(prices, ends[name], horizon, task.threshold, task.rule)[:, None]
        else:
            future = ends[name][:, None] + np.arange(1, horizon + 1)
            labels[name] = scaled[future][:, :, list(channels)]
    return labels


def _baseline_loss(
    task: TaskConfig,
    scaled: np.ndarray,
    ends: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    channels: tuple[int, ...],
    split: str = "val",
) -> float:
    """The loss of the trivial predictor on ``split``: the training positive rate (BCE) or the
    last value repeated (MSE)."""
    if task.kind == "threshold":
        return constant_bce(labels["train"], labels[split])
    last = scaled[ends[split]][:, None, list(channels)]
    return float(np.mean((labels[split] - last) ** 2, dtype=np.float64))
