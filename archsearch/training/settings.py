"""The settings and results of training one trial, without torch (the config reads them).

:class:`TrainConfig` holds the defaults of the config's ``training`` keys; :class:`EpochResult`
and :class:`TrainResult` are what :func:`archsearch.training.trainer.train` reports.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import attrs

#: Keep the best weights on the host when the model is larger than this many bytes.
BEST_ON_HOST_BYTES = 1 << 30
ScheduleKind = Literal["cosine", "constant", "exponential", "onecycle"]
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)
Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def _positive(instance: object, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _non_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


def _fraction(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must lie in [0, 1), got {value}")


def _one_of(choices: tuple[str, ...]):
    def check(instance: object, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}; got {value!r}")

    return check


#: The keys of one schedule kind, and their values when not given.
SCHEDULE_KEYS: dict[str, dict[str, float | int]] = {
    "exponential": {"gamma": 0.9, "hold_epochs": 1},
    "onecycle": {"pct_start": 0.3},
}


@attrs.frozen
class LRSchedule:
    """How the learning rate moves over training (``training.lr_schedule``), per optimizer step.

    - ``cosine`` (the default): ``warmup_steps`` of linear warmup, then a cosine from the base rate
      down to 0 (reached just after the last step).
    - ``constant``: the base rate after the warmup.
    - ``exponential``: epochs ``1..hold_epochs`` at the base rate, every later epoch at the
      previous one's rate times ``gamma`` (epoch ``k`` trains at ``lr * gamma ** max(0, k -
      hold_epochs)``); the official PatchTST ETTh1 script's ``type3`` is ``gamma 0.9,
      hold_epochs 4``; the default ``hold_epochs`` 1 is torch's ``ExponentialLR`` stepped per
      epoch. The warmup, when set, multiplies its first steps.
    - ``onecycle``: torch's ``OneCycleLR`` stepped per batch (the official ``TST`` schedule): up
      from ``lr / 25`` to ``lr`` over the first ``pct_start`` of the steps, then a cosine down to
      ``lr / 25e4``; it has its own warm-up, so ``warmup_steps`` must be 0. The momentum is not
      cycled (a captured CUDA graph could not follow it).

    A key of another kind must not be set; a kind's own keys default to :data:`SCHEDULE_KEYS`.
    """

    kind: ScheduleKind = attrs.field(default="cosine", validator=_one_of(SCHEDULE_KINDS))
    gamma: float | None = None
    hold_epochs: int | None = None
    pct_start: float | None = None

    def __attrs_post_init__(self) -> None:
        own = SCHEDULE_KEYS.get(self.kind, {})
        for kind, keys in SCHEDULE_KEYS.items():
            for key in keys:
                if key not in own and getattr(self, key) is not None:
                    raise ValueError(
                        f"{key} must not be set with kind {self.kind} (it is a key of kind {kind})"
                    )
        for key, default in own.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, default)
        if self.gamma is not None and not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be a number in (0, 1], got {self.gamma}")
        if self.hold_epochs is not None and not self.hold_epochs >= 0:
            raise ValueError(f"hold_epochs must be a whole number >= 0, got {self.hold_epochs}")
        if self.pct_start is not None and not 0 < self.pct_start < 1:
            raise ValueError(f"pct_start must be a number in (0, 1), got {self.pct_start}")


def _as_schedule(value: LRSchedule | dict[str, Any]) -> LRSchedule:
    """A schedule from itself or from its mapping (``attrs.asdict`` of the config's training keys)."""
    return value if isinstance(value, LRSchedule) else LRSchedule(**value)


@attrs.frozen
class TrainConfig:
    """Training parameters of one trial. Its defaults are also the defaults of the config's
    ``training`` keys.

    ``dropout`` is informational here (the model is built with it). ``patience`` stops training
    after that many epochs without a better validation loss. ``micro_batch_size`` splits each batch
    into micro-batches whose gradients add up to the full batch's (an out-of-memory error on CUDA
    halves it). ``eval_batch_size`` (default ``max(batch_size, 1024)``) bounds evaluation chunks.
    ``cuda_graphs`` captures each training step as a CUDA graph on CUDA (ignored elsewhere; see
    :class:`archsearch.training.steps.GraphedStep`). ``lr_schedule`` is an :class:`LRSchedule`
    (or its mapping). ``drop_last`` leaves out the ragged last batch of every epoch on every
    device (evaluation always scores every window). ``precision``: ``auto`` is bf16 autocast on
    CUDA (where the device has bf16) and fp32 elsewhere; ``bf16`` autocasts on any device.
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
    #: Seed Python, NumPy and torch with ``seed`` before training. The engine seeds them once per
    #: trial, before building the model, and turns this off (``torch.manual_seed`` costs ms on CUDA).
    seed_rngs: bool = True
    device: str = "auto"
    micro_batch_size: int | None = attrs.field(default=None, validator=_positive)
    eval_batch_size: int | None = attrs.field(default=None, validator=_positive)
    cuda_graphs: bool = True
    #: ``torch.compile`` the model (off by default: compiling per architecture took 23-154 s on
    #: an H100, more than a short trial saves). Its cost is reported as ``TrainResult.compile_s``;
    #: a compiled model is not also captured in a CUDA graph.
    compile: bool = False
    lr_schedule: LRSchedule = attrs.field(default=LRSchedule(), converter=_as_schedule)
    drop_last: bool = True
    precision: Precision = attrs.field(default="auto", validator=_one_of(PRECISIONS))

    def __attrs_post_init__(self) -> None:
        if self.lr_schedule.kind == "onecycle" and self.warmup_steps:
            raise ValueError(warmup_with_onecycle(self.warmup_steps))


def warmup_with_onecycle(warmup_steps: int) -> str:
    """The problem of a warmup beside ``onecycle``, which warms up by itself (``pct_start``)."""
    return (
        f"warmup_steps must be 0 with lr_schedule kind onecycle (it warms up over pct_start of the "
        f"steps), got {warmup_steps}"
    )


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
    excluded). ``step_kind`` is ``"graphed"`` or ``"eager"`` (``eager_reason`` says why); with
    ``drop_last`` every epoch leaves out the ``dropped_per_epoch`` samples of its ragged last batch.
    ``precision`` is what the forward passes ran in: ``"bf16"`` (autocast) or ``"fp32"``."""

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
    precision: str = "fp32"

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)
