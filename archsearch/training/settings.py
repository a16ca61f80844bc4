"""The settings and results of training one trial, without torch (the config reads them).

:class:`TrainConfig` holds the defaults of the config's ``training`` keys; :class:`EpochResult`
and :class:`TrainResult` are what :func:`archsearch.training.trainer.train` reports.
"""

from __future__ import annotations

from typing import Any

import attrs

#: Keep the best weights on the host when the model is larger than this many bytes.
BEST_ON_HOST_BYTES = 1 << 30


def _positive(instance: object, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _non_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


def _fraction(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must lie in [0, 1), got {value}")


@attrs.frozen
class TrainConfig:
    """Training parameters of one trial. Its defaults are also the defaults of the config's
    ``training`` keys.

    ``dropout`` is informational here (the model is built with it). ``patience`` stops training
    after that many epochs without a better validation loss. ``micro_batch_size`` splits each batch
    into micro-batches whose gradients add up to the full batch's (an out-of-memory error on CUDA
    halves it). ``eval_batch_size`` (default ``max(batch_size, 1024)``) bounds evaluation chunks.
    ``cuda_graphs`` captures each training step as a CUDA graph on CUDA (ignored elsewhere; see
    :class:`archsearch.training.steps.GraphedStep`).
    """

    learning_rate: float = attrs.field(default=1e-3, validator=_positive)
    epochs: int = attrs.field(default=20, validator=_positive)
    batch_size: int = attrs.field(default=64, validator=_positive)
    weight_decay: float = attrs.field(default=1e-4, validator=_non_negative)
    warmup_steps: int = attrs.field(default=0, validator=_non_negative)
    dropout: float = attrs.field(default=0.1, validator=_fraction)
    grad_clip: float | None = attrs.field(default=1.0, validator=_positive)
    patience: int | None = attrs.field(default=None, validator=_positive)
    seed: int = 0
    device: str = "auto"
    micro_batch_size: int | None = attrs.field(default=None, validator=_positive)
    eval_batch_size: int | None = attrs.field(default=None, validator=_positive)
    cuda_graphs: bool = True
    #: ``torch.compile`` the model (off by default: compiling per architecture took 23-154 s on
    #: an H100, more than a short trial saves). Its cost is reported as ``TrainResult.compile_s``;
    #: a compiled model is not also captured in a CUDA graph.
    compile: bool = False


@attrs.frozen
class EpochResult:
    """What :func:`archsearch.training.trainer.train` reports after each epoch (epochs count from 1)."""

    epoch: int
    train_loss: float
    val_loss: float
    metrics: dict[str, float]


@attrs.frozen
class TrainResult:
    """The outcome of :func:`archsearch.training.trainer.train`. Losses and metrics are those of the
    best epoch (lowest validation loss); the model is left holding that epoch's weights.
    ``samples_per_s`` counts training samples over the time spent in training steps (evaluation
    excluded). ``step_kind`` is ``"graphed"`` or ``"eager"`` (``eager_reason`` says why); a graphed
    step drops the ``dropped_per_epoch`` samples of the ragged last batch of every epoch."""

    best_val_loss: float
    train_loss: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    val_metrics: dict[str, float]
    test_loss: float
    test_metrics: dict[str, float]
    duration_s: float
    samples_per_s: float
    device: str
    micro_batch_size: int
    stopped_early: bool
    baseline_loss: float
    oom_retries: int = 0
    step_kind: str = "eager"
    eager_reason: str = ""
    #: Seconds the first training step took with ``compile`` on (compilation happens there).
    compile_s: float = 0.0
    dropped_per_epoch: int = 0

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)
