"""Train one model on prepared data: AdamW, warmup then cosine, clipping, early stopping.

The loop indexes the data tensors directly on the training device (no DataLoader): on CUDA the
whole dataset is moved there once and the forward pass runs under bf16 autocast; AdamW is fused
on CUDA and on the CPU.
The loss is accumulated on the device and read once per epoch (and every ``SYNC_EVERY`` steps to
catch a non-finite loss early), so the host never waits on the device per step.

Reproducibility: :func:`seed_everything` seeds Python, NumPy and torch; the engine calls it before
building the model, and :func:`train` calls it again with ``TrainConfig.seed`` before training and
shuffles with its own ``torch.Generator``, so on the CPU the same model, data and config give
identical losses.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import numpy as np
import torch

from archsearch.dataset import PreparedData
from archsearch.errors import ArchsearchError, TrialFailed
from archsearch.tasks import loss_function, task_metrics

T = TypeVar("T")

#: Errors that halve the micro-batch and retry (a test may raise one on the CPU), besides any
#: ``RuntimeError`` whose message says "out of memory".
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)
#: Steps between checks for a non-finite loss (each check waits for the device once).
SYNC_EVERY = 64
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
    """Training parameters of one trial.

    ``dropout`` is informational here (the model is built with it). ``patience`` stops training
    after that many epochs without a better validation loss. ``micro_batch_size`` splits each batch
    into micro-batches whose gradients add up to the full batch's (an out-of-memory error on CUDA
    halves it). ``eval_batch_size`` (default ``max(batch_size, 1024)``) bounds evaluation chunks.
    """

    learning_rate: float = attrs.field(default=1e-3, validator=_positive)
    epochs: int = attrs.field(default=50, validator=_positive)
    batch_size: int = attrs.field(default=64, validator=_positive)
    weight_decay: float = attrs.field(default=1e-4, validator=_non_negative)
    warmup_steps: int = attrs.field(default=100, validator=_non_negative)
    dropout: float = attrs.field(default=0.1, validator=_fraction)
    grad_clip: float | None = attrs.field(default=1.0, validator=_positive)
    patience: int | None = attrs.field(default=None, validator=_positive)
    seed: int = 0
    device: str = "auto"
    micro_batch_size: int | None = attrs.field(default=None, validator=_positive)
    eval_batch_size: int | None = attrs.field(default=None, validator=_positive)


@attrs.frozen
class EpochResult:
    """What :func:`train` reports after each epoch (epochs count from 1)."""

    epoch: int
    train_loss: float
    val_loss: float
    metrics: dict[str, float]


@attrs.frozen
class TrainResult:
    """The outcome of :func:`train`. Losses and metrics are those of the best epoch (lowest
    validation loss); the model is left holding that epoch's weights. ``samples_per_s`` counts
    training samples over the time spent in training steps (evaluation excluded)."""

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

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then the CPU; otherwise the named device, which must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ArchsearchError(
            f"device {name!r} is not a device name (use auto, cpu, cuda, cuda:1 or mps)."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArchsearchError(f"device {name!r} was asked for, but this torch build sees no CUDA device.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ArchsearchError(f"device {name!r} was asked for, but MPS is not available here.")
    return device


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor for step ``s`` (from 0): ``(s + 1) / warmup_steps`` during warmup, then a
    cosine from 1 down to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def retry_on_oom(
    step: Callable[[int], T],
    micro_batch_size: int,
    cleanup: Callable[[], None] | None = None,
    what: str = "training step",
) -> tuple[T, int]:
    """Run ``step(micro_batch_size)``; on an out-of-memory error halve the size, call ``cleanup``
    and retry. Returns the result and the size that worked; raises :class:`TrialFailed` when even
    a micro-batch of 1 runs out of memory."""
    size = micro_batch_size
    while True:
        try:
            return step(size), size
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            if size <= 1:
                raise TrialFailed(f"out of memory at micro-batch 1 ({what})") from exc
        # Outside the except block, so the failed attempt's tensors are already released.
        size = max(1, size // 2)
        if cleanup is not None:
            cleanup()


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's ``OutOfMemoryError``, or a ``RuntimeError`` that says it ran out of memory (MPS)."""
    return isinstance(exc, OOM_ERRORS) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def accumulate_gradients(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    micro_batch_size: int,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Backpropagate the mean loss of ``(x, y)`` in micro-batches of at most ``micro_batch_size``,
    each loss weighted by its share of the batch, so the gradients equal the full batch's (exactly
    so for models without BatchNorm). Returns the batch's mean loss, detached, on the device."""
    n = x.shape[0]

    def autocast() -> contextlib.AbstractContextManager:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=amp_dtype)

    if micro_batch_size >= n:
        with autocast():
            out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        return loss.detach()
    total = torch.zeros((), device=x.device)
    for start in range(0, n, micro_batch_size):
        xs, ys = x[start : start + micro_batch_size], y[start : start + micro_batch_size]
        with autocast():
            out = model(xs)
        loss = loss_fn(out, ys) * (xs.shape[0] / n)
        loss.backward()
        total += loss.detach()
    return total


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    data: PreparedData,
    split: str,
    batch_size: int = 1024,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Model outputs (float32, on the data's device) for every window of ``split``, in eval mode."""
    was_training = model.training
    model.eval()
    outputs = []
    try:
        n = data.n_windows(split)
        for start in range(0, n, batch_size):
            x, _ = data.batch(split, slice(start, start + batch_size))
            with torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                outputs.append(model(x).float())
    finally:
        model.train(was_training)
    return torch.cat(outputs)


def evaluate(
    model: torch.nn.Module,
    data: PreparedData,
    split: str = "val",
    batch_size: int = 1024,
    amp_dtype: torch.dtype | None = None,
) -> tuple[float, dict[str, float]]:
    """The task loss and metrics of ``model`` on ``split`` (model and data on the same device)."""
    outputs, used = retry_on_oom(
        lambda size: predict(model, data, split, size, amp_dtype),
        batch_size,
        _free_cuda,
        f"evaluating {split}",
    )
    del used
    y = data.labels[split]
    loss = float(loss_function(data.task_kind)(outputs, y))
    return loss, task_metrics(data.task_kind, outputs, y)


def _free_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW, fused on CUDA and the CPU (one kernel for all parameters: on the CPU about 4x faster
    than the default for-each version), the default elsewhere or where this torch lacks it."""
    if device.type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def train(
    model: torch.nn.Module,
    data: PreparedData,
    cfg: TrainConfig,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` and return the best epoch's result (see :class:`TrainResult`).

    ``on_epoch`` is called after every epoch; an exception it raises (such as
    ``optuna.TrialPruned``) propagates unchanged. A non-finite training or validation loss raises
    :class:`TrialFailed`.
    """
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    data = data.to(device)
    model.to(device)
    cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg, device)
    n_train = data.n_windows("train")
    batch_size = min(cfg.batch_size, n_train)
    steps_per_epoch = math.ceil(n_train / batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.warmup_steps, steps_per_epoch * cfg.epochs)
    )
    loss_fn = loss_function(data.task_kind)
    generator = torch.Generator().manual_seed(cfg.seed)
    micro = min(cfg.micro_batch_size or batch_size, batch_size)
    eval_batch = cfg.eval_batch_size or max(cfg.batch_size, 1024)
    sizes = np.full(steps_per_epoch, batch_size, dtype=np.float64)
    sizes[-1] = n_train - batch_size * (steps_per_epoch - 1)
    best_on_host = sum(t.numel() * t.element_size() for t in model.state_dict().values()) > BEST_ON_HOST_BYTES

    def cleanup() -> None:
        optimizer.zero_grad(set_to_none=True)
        _free_cuda()

    history: list[dict[str, float]] = []
    best_val, best_epoch, best_state = math.inf, 0, None
    train_time, oom_retries, stopped_early = 0.0, 0, False
    for epoch in range(1, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=generator).to(device)
        step_losses = torch.zeros(steps_per_epoch, device=device)
        checked = 0
        for step in range(steps_per_epoch):
            x, y = data.batch("train", order[step * batch_size : (step + 1) * batch_size])

            def run_step(size: int, x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = accumulate_gradients(model, x, y, loss_fn, size, amp_dtype)
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                return loss

            loss, size = retry_on_oom(run_step, micro, cleanup)
            if size != micro:
                oom_retries += 1
                micro = size
            scheduler.step()
            step_losses[step] = loss
            if (step + 1) % SYNC_EVERY == 0:
                _check_finite(step_losses[checked : step + 1], epoch, checked)
                checked = step + 1
        losses = step_losses.cpu().numpy()
        _check_finite(torch.from_numpy(losses[checked:]), epoch, checked)
        train_time += time.perf_counter() - epoch_start
        train_loss = float((losses * sizes).sum() / n_train)

        val_loss, metrics = evaluate(model, data, "val", eval_batch, amp_dtype)
        if not math.isfinite(val_loss):
            raise TrialFailed(f"non-finite validation loss at epoch {epoch}")
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                **metrics,
                "lr": scheduler.get_last_lr()[0],
                "duration_s": time.perf_counter() - epoch_start,
            }
        )
        if val_loss < best_val:
            best_val, best_epoch = val_loss, epoch
            best_state = {
                k: v.detach().to("cpu" if best_on_host else v.device, copy=True)
                for k, v in model.state_dict().items()
            }
        if on_epoch is not None:
            on_epoch(EpochResult(epoch, train_loss, val_loss, dict(metrics)))
        if cfg.patience is not None and epoch - best_epoch >= cfg.patience:
            stopped_early = True
            break

    assert best_state is not None
    model.load_state_dict(best_state)
    if data.n_windows("test"):
        test_loss, test_metrics = evaluate(model, data, "test", eval_batch, amp_dtype)
    else:
        test_loss, test_metrics = math.nan, {}
    best = history[best_epoch - 1]
    return TrainResult(
        best_val_loss=best_val,
        train_loss=best["train_loss"],
        best_epoch=best_epoch,
        epochs_run=len(history),
        history=history,
        val_metrics={
            k: v for k, v in best.items() if k not in ("epoch", "train_loss", "val_loss", "lr", "duration_s")
        },
        test_loss=test_loss,
        test_metrics=test_metrics,
        duration_s=time.perf_counter() - started,
        samples_per_s=n_train * len(history) / train_time if train_time > 0 else math.nan,
        device=str(device),
        micro_batch_size=micro,
        stopped_early=stopped_early,
        baseline_loss=data.baseline_loss,
        oom_retries=oom_retries,
    )


def _check_finite(losses: torch.Tensor, epoch: int, offset: int) -> None:
    bad = (~torch.isfinite(losses)).nonzero()
    if bad.numel():
        raise TrialFailed(f"non-finite training loss at epoch {epoch} step {offset + int(bad[0, 0]) + 1}")
