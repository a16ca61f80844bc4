"""Train one model on prepared data: AdamW, a learning-rate schedule, clipping, early stopping.

The loop indexes the data tensors directly on the training device (no DataLoader): on CUDA the
whole dataset is moved there once and, with ``precision: auto``, the forward pass runs under bf16
autocast; AdamW is fused on CUDA and on the CPU. The schedule (:mod:`archsearch.training.schedules`)
steps after every optimizer step. With ``drop_last`` (the default) every epoch leaves out its
ragged last batch, on every device; evaluation scores every window.
The loss is accumulated on the device and read once per epoch (and every ``SYNC_EVERY`` steps to
catch a non-finite loss early), so the host never waits on the device per step.

One optimizer step is a :class:`~archsearch.training.steps.Step` made by
:func:`~archsearch.training.steps.make_step` (a CUDA graph on CUDA, else eager; see
:mod:`archsearch.training.steps`); the settings and results are in :mod:`archsearch.training.settings`.

Reproducibility: :func:`seed_everything` seeds Python, NumPy and torch; :func:`train` calls it with
``TrainConfig.seed`` before training (unless ``seed_rngs`` is off: the engine seeds once per trial,
before building the model) and shuffles with its own ``torch.Generator``, so on the CPU the same
model, data and config give identical losses.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import random
import time
from collections.abc import Callable

import attrs
import numpy as np
import torch

from archsearch.data.tasks import loss_function, task_metrics
from archsearch.data.windows import PreparedData
from archsearch.device import resolve_device
from archsearch.errors import TrialFailed
from archsearch.training.schedules import make_scheduler, warmup_cosine
from archsearch.training.settings import BEST_ON_HOST_BYTES, EpochResult, TrainConfig, TrainResult
from archsearch.training.steps import (
    SCHEDULER_FILLS_TENSOR_LR,
    EagerStep,
    GraphedStep,
    _free_cuda,
    make_step,
    retry_on_oom,
)

#: Steps between checks for a non-finite loss (each check waits for the device once).
SYNC_EVERY = 64
__all__ = ["evaluate", "make_optimizer", "predict", "seed_everything", "train", "warmup_cosine"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (every device).

    Without an accelerator only the CPU generator is seeded: ``torch.manual_seed`` would also queue
    a seeding of each device kind torch was built for (CUDA, XPU, MTIA), each call recording its
    stack for a device that never comes (a millisecond per trial)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if _accelerator():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


@functools.cache
def _accelerator() -> bool:
    """Whether torch sees a device other than the CPU (CUDA, MPS, XPU), which ``manual_seed`` seeds."""
    xpu = getattr(torch, "xpu", None)
    return (
        torch.cuda.is_available()
        or torch.backends.mps.is_available()
        or bool(xpu is not None and xpu.is_available())
    )


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``training.precision`` on ``device`` (None: fp32). ``auto`` is bf16 on
    a CUDA device that has it, else fp32; ``bf16`` raises :class:`TrialFailed` on a CUDA device
    without it."""
    cuda = device.type == "cuda"
    if precision == "fp32":
        return None
    if precision == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise TrialFailed(
                f"precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16"
            )
        return torch.bfloat16
    return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None


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


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device, capturable: bool = False
) -> torch.optim.AdamW:
    """AdamW, fused on CUDA and the CPU (one kernel for all parameters: on the CPU about 4x faster
    than the default for-each version), the default elsewhere or where this torch lacks it.
    ``capturable`` (CUDA): fused and capturable, with the learning rate a device tensor that the
    scheduler updates in place, as a CUDA graph needs."""
    if capturable and device.type == "cuda":
        lr = torch.tensor(cfg.learning_rate, dtype=torch.float32, device=device)
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, fused=True, capturable=True)
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
    if cfg.seed_rngs:
        seed_everything(cfg.seed)
    data = data.to(device)
    model.to(device)
    run = _set_up(model, data, cfg, device)
    best = _Best(model)
    history: list[dict[str, float]] = []
    stopped_early = False
    for epoch in range(1, cfg.epochs + 1):
        result, row = _run_epoch(model, data, cfg, run, epoch)
        history.append(row)
        best.offer(model, epoch, result.val_loss)
        if on_epoch is not None:
            on_epoch(result)
        if cfg.patience is not None and epoch - best.epoch >= cfg.patience:
            stopped_early = True
            break
    return _result(model, data, run, history, best, stopped_early, started)


@attrs.define(eq=False)
class _Run:
    """What :func:`train` sets up once for every epoch, and the times it adds up."""

    device: torch.device
    amp_dtype: torch.dtype | None
    n_train: int
    batch_size: int
    #: Full batches only (the ragged last one left out) with ``drop_last``.
    steps_per_epoch: int
    eval_batch: int
    generator: torch.Generator
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    step: EagerStep | GraphedStep | None = None
    compile_s: float = 0.0
    train_time: float = 0.0
    #: The learning rate of the last step of the latest epoch.
    last_lr: float = math.nan

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def ragged(self) -> bool:
        """Whether the last batch of an epoch is smaller than the others (and is trained on)."""
        return self.used % self.batch_size != 0

    @property
    def used(self) -> int:
        """Training samples per epoch (all of them, unless ``drop_last`` leaves the ragged batch out)."""
        return min(self.n_train, self.steps_per_epoch * self.batch_size)

    @property
    def sizes(self) -> np.ndarray:
        """The number of samples in each step of an epoch."""
        sizes = np.full(self.steps_per_epoch, self.batch_size, dtype=np.float64)
        sizes[-1] = self.used - self.batch_size * (self.steps_per_epoch - 1)
        return sizes


def _set_up(model: torch.nn.Module, data: PreparedData, cfg: TrainConfig, device: torch.device) -> _Run:
    """The optimizer, the learning-rate schedule and the training step (model and data on ``device``).

    ``drop_last`` decides the steps of an epoch on every device. A graphed step takes full batches
    only, so with ``drop_last`` false and a ragged last batch the whole run falls back to the eager
    step (``eager_reason`` says so) rather than mixing the two."""
    n_train = data.n_windows("train")
    batch_size = min(cfg.batch_size, n_train)
    run = _Run(
        device=device,
        amp_dtype=autocast_dtype(cfg.precision, device),
        n_train=n_train,
        batch_size=batch_size,
        steps_per_epoch=n_train // batch_size if cfg.drop_last else math.ceil(n_train / batch_size),
        eval_batch=cfg.eval_batch_size or max(cfg.batch_size, 1024),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    micro = min(cfg.micro_batch_size or batch_size, batch_size)
    want_graphs = cfg.cuda_graphs and not cfg.compile and SCHEDULER_FILLS_TENSOR_LR and not run.ragged
    graphs = want_graphs and run.cuda and micro >= batch_size  # what a capture can take
    run.optimizer = make_optimizer(params, cfg, device, capturable=graphs)
    # Made before the step, so that the capture's optimizer steps go through the scheduler's hook
    # on ``optimizer.step`` (replays do not, and torch would warn); one object on every device.
    run.scheduler = make_scheduler(run.optimizer, cfg, run.steps_per_epoch)
    run.step = _make_train_step(model, data, cfg, run, micro, want_graphs)
    assert not (run.step.static_shapes and run.ragged), "a graphed step cannot take the ragged batch"
    return run


def _make_train_step(
    model: torch.nn.Module, data: PreparedData, cfg: TrainConfig, run: _Run, micro: int, want_graphs: bool
) -> EagerStep | GraphedStep:
    """The training step of :func:`make_step` for ``run``'s batches, on the ``torch.compile``'d
    model when ``cfg.compile``; an eager step that ``cfg`` or this torch keeps from a graph says so."""
    model.train()
    sample_x, sample_y = data.batch("train", torch.arange(run.batch_size, device=run.device))
    if cfg.compile:
        # A worker trains many architectures in one process: without a reset each one recompiles
        # on top of the last, until dynamo's recompile limit silently stops compiling.
        torch._dynamo.reset()
    step_model = torch.compile(model) if cfg.compile else model
    train_step = make_step(
        step_model,
        run.optimizer,
        loss_function(data.task_kind),
        sample_x,
        sample_y,
        want_graphs,
        cfg.grad_clip,
        micro,
        run.amp_dtype,
    )
    if cfg.compile:
        train_step.reason = "torch.compile is on"
    elif run.cuda and cfg.cuda_graphs and not SCHEDULER_FILLS_TENSOR_LR:
        train_step.reason = f"torch {torch.__version__} < 2.4 cannot schedule a captured learning rate"
    elif cfg.cuda_graphs and run.ragged:  # before the device, as micro-batching is
        train_step.reason = (
            f"drop_last is false and the last batch is ragged ({run.n_train % run.batch_size} of "
            f"{run.batch_size}): a graphed step takes full batches only"
        )
    return train_step


def _run_epoch(
    model: torch.nn.Module, data: PreparedData, cfg: TrainConfig, run: _Run, epoch: int
) -> tuple[EpochResult, dict[str, float]]:
    """Train one epoch and evaluate it on the validation split: its result and its history row."""
    epoch_start = time.perf_counter()
    train_loss = _train_epoch(model, data, cfg, run, epoch)
    run.train_time += time.perf_counter() - epoch_start - (run.compile_s if epoch == 1 else 0.0)
    val_loss, metrics = evaluate(model, data, "val", run.eval_batch, run.amp_dtype)
    if not math.isfinite(val_loss):
        raise TrialFailed(f"non-finite validation loss at epoch {epoch}")
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        **metrics,
        "lr": run.last_lr,
        "duration_s": time.perf_counter() - epoch_start,
    }
    return EpochResult(epoch, train_loss, val_loss, dict(metrics)), row


def _train_epoch(
    model: torch.nn.Module, data: PreparedData, cfg: TrainConfig, run: _Run, epoch: int
) -> float:
    """The training steps of one epoch, in a fresh order of the windows: their mean loss. With
    ``cfg.compile`` the first step of the first epoch is timed as ``run.compile_s``; the rate the
    last step trained at is kept as ``run.last_lr`` (read once per epoch: on CUDA a device tensor)."""
    model.train()
    order = torch.randperm(run.n_train, generator=run.generator).to(run.device)
    step_losses = torch.zeros(run.steps_per_epoch, device=run.device)
    checked = 0
    for step in range(run.steps_per_epoch):
        x, y = data.batch("train", order[step * run.batch_size : (step + 1) * run.batch_size])
        if cfg.compile and epoch == 1 and step == 0:
            compile_start = time.perf_counter()
            step_losses[step] = run.step(x, y)
            if run.cuda:
                torch.cuda.synchronize(run.device)
            run.compile_s = time.perf_counter() - compile_start
        else:
            step_losses[step] = run.step(x, y)
        if step == run.steps_per_epoch - 1:
            run.last_lr = float(run.optimizer.param_groups[0]["lr"])
        run.scheduler.step()
        if (step + 1) % SYNC_EVERY == 0:
            _check_finite(step_losses[checked : step + 1], epoch, checked)
            checked = step + 1
    losses = step_losses.cpu().numpy()
    _check_finite(torch.from_numpy(losses[checked:]), epoch, checked)
    return float((losses * run.sizes).sum() / run.used)


class _Best:
    """The epoch with the lowest validation loss so far and a copy of its weights (kept on the host
    when the model is larger than ``BEST_ON_HOST_BYTES``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        self.on_host = state_bytes > BEST_ON_HOST_BYTES
        self.val_loss, self.epoch = math.inf, 0
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, model: torch.nn.Module, epoch: int, val_loss: float) -> None:
        """Keep ``model``'s weights when ``val_loss`` is lower than the best so far."""
        if val_loss < self.val_loss:
            self.val_loss, self.epoch = val_loss, epoch
            self.state = {
                k: v.detach().to("cpu" if self.on_host else v.device, copy=True)
                for k, v in model.state_dict().items()
            }

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best weights into ``model`` and let go of the copy."""
        assert self.state is not None
        model.load_state_dict(self.state)
        self.state = None


def _result(
    model: torch.nn.Module,
    data: PreparedData,
    run: _Run,
    history: list[dict[str, float]],
    best: _Best,
    stopped_early: bool,
    started: float,
) -> TrainResult:
    """Restore the best weights, release the step (on CUDA), evaluate on the test split and report."""
    best.restore(model)
    step_info = {
        "micro_batch_size": run.step.micro_batch_size,
        "oom_retries": run.step.oom_retries,
        "step_kind": run.step.kind,
        "eager_reason": getattr(run.step, "reason", ""),
    }
    if run.cuda:
        _release_step(run)
    if data.n_windows("test"):
        test_loss, test_metrics = evaluate(model, data, "test", run.eval_batch, run.amp_dtype)
    else:
        test_loss, test_metrics = math.nan, {}
    row = history[best.epoch - 1]
    return TrainResult(
        best_val_loss=best.val_loss,
        train_loss=row["train_loss"],
        best_epoch=best.epoch,
        epochs_run=len(history),
        history=history,
        val_metrics={
            k: v for k, v in row.items() if k not in ("epoch", "train_loss", "val_loss", "lr", "duration_s")
        },
        test_loss=test_loss,
        test_metrics=test_metrics,
        duration_s=time.perf_counter() - started,
        samples_per_s=run.used * len(history) / run.train_time if run.train_time > 0 else math.nan,
        device=str(run.device),
        stopped_early=stopped_early,
        baseline_loss=data.baseline_loss,
        compile_s=run.compile_s,
        dropped_per_epoch=run.n_train - run.used,
        precision="bf16" if run.amp_dtype == torch.bfloat16 else "fp32",
        **step_info,
    )


def _release_step(run: _Run) -> None:
    """Hand the graph's pool and this trial's blocks back to the other workers on the GPU."""
    run.optimizer.zero_grad(set_to_none=True)
    run.step = run.optimizer = run.scheduler = None
    gc.collect()
    _free_cuda()


def _check_finite(losses: torch.Tensor, epoch: int, offset: int) -> None:
    bad = (~torch.isfinite(losses)).nonzero()
    if bad.numel():
        raise TrialFailed(f"non-finite training loss at epoch {epoch} step {offset + int(bad[0, 0]) + 1}")
