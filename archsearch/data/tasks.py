"""What a model is asked to predict: a threshold event (binary) or the next values (forecast).

The threshold task labels a window ending at row ``t`` with 1 when the target price rises by at
least ``threshold`` (a fraction: 0.01 is 1%) within ``horizon`` steps: rule ``max`` compares the
highest of the next ``horizon`` values with the current one, rule ``end`` the value ``horizon``
steps ahead. It is scored with binary cross-entropy on logits. The forecast task predicts the next
``horizon`` values of the target channels on the training-scaler scale, scored with MSE (MAE is
reported too). The horizon is set per search cell, not here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import attrs
import numpy as np

from archsearch.architecture import HeadKind

if TYPE_CHECKING:  # torch is imported where it is used: reading a config stays fast
    import torch

TaskKind = Literal["threshold", "forecast"]


def _one_of(*choices: str):
    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}; got {value!r}")

    return check


def _finite(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not math.isfinite(value) or value <= -1:
        raise ValueError(f"{attribute.name} must be a finite fraction above -1 (0.01 is 1%), got {value}")


@attrs.frozen
class TaskConfig:
    """The prediction task. ``targets`` names the forecast channels (empty: the data's target)."""

    kind: TaskKind = attrs.field(default="threshold", validator=_one_of("threshold", "forecast"))
    threshold: float = attrs.field(default=0.01, validator=_finite)
    rule: Literal["max", "end"] = attrs.field(default="max", validator=_one_of("max", "end"))
    targets: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.targets and self.kind != "forecast":
            raise ValueError(
                "targets applies to kind: forecast only (the threshold task labels the data target)"
            )
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets lists a column twice: {list(self.targets)}")

    @property
    def head(self) -> HeadKind:
        return "classification" if self.kind == "threshold" else "forecast"


def threshold_labels(
    prices: np.ndarray, ends: np.ndarray, horizon: int, threshold: float, rule: str = "max"
) -> np.ndarray:
    """1.0 where the price rises by at least ``threshold`` within ``horizon`` steps after each end row.

    ``prices[ends + horizon]`` must exist; ``prices`` must be positive at ``ends``.
    """
    ends = np.asarray(ends, dtype=np.int64)
    now = prices[ends]
    if rule == "max":
        future = np.lib.stride_tricks.sliding_window_view(prices[1:], horizon)  # future[t] = prices[t+1..t+h]
        ahead = future[ends].max(axis=1)
    elif rule == "end":
        ahead = prices[ends + horizon]
    else:
        raise ValueError(f"rule must be 'max' or 'end', got {rule!r}")
    return (ahead / now - 1.0 >= threshold).astype(np.float32)


def loss_function(kind: TaskKind) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The mean training loss of a task: BCE on logits (threshold) or MSE (forecast), in float32."""
    import torch.nn.functional as F

    if kind == "threshold":
        return lambda out, y: F.binary_cross_entropy_with_logits(out.float(), y)
    if kind == "forecast":
        return lambda out, y: F.mse_loss(out.float(), y)
    raise ValueError(f"kind must be 'threshold' or 'forecast', got {kind!r}")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U), ties averaged; NaN with one class only."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel() > 0.5
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average rank (1-based) over each run of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    stops = np.r_[starts[1:], scores.size]
    average = (starts + stops + 1) / 2.0
    ranks[order] = np.repeat(average, stops - starts)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def task_metrics(kind: TaskKind, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Metrics beside the loss: accuracy, AUC and positive rates (threshold) or MAE (forecast)."""
    out = outputs.detach().float().cpu()
    y = targets.detach().float().cpu()
    if kind == "threshold":
        predicted = out > 0
        truth = y > 0.5
        return {
            "accuracy": float((predicted == truth).float().mean()),
            "auc": roc_auc(out.numpy(), y.numpy()),
            "positive_rate": float(truth.float().mean()),
            "predicted_positive_rate": float(predicted.float().mean()),
        }
    return {"mae": float((out - y).abs().mean())}


def constant_bce(train_labels: np.ndarray, labels: np.ndarray) -> float:
    """BCE of always predicting the training positive rate (the best constant, a majority-class prior)."""
    p = float(np.clip(np.mean(train_labels), 1e-6, 1 - 1e-6))
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * math.log(p) + (1 - y) * math.log(1 - p)).mean())
