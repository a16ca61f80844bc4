"""Train one model on prepared data: AdamW, warmup then cosine, clipping, early stopping.

The loop indexes the data tensors directly on the training device (no DataLoader): on CUDA the
whole dataset is moved there once and the forward pass runs under bf16 autocast; AdamW is fused
on CUDA and on the CPU.
The loss is accumulated on the device and read once per epoch (and every ``SYNC_EVERY`` steps to
catch a non-finite loss early), so the host never waits on the device per step.

One optimizer step is a :class:`Step` made by :func:`make_step`. On CUDA (``TrainConfig.cuda_graphs``,
the default) it is a :class:`GraphedStep`: forward, backward, clipping and the AdamW update are
captured once as a CUDA graph and replayed, one launch per step instead of hundreds, which is what
bounds small models on a large GPU. Shapes must then be static, so the ragged last batch of an
epoch is dropped (``TrainResult.dropped_per_epoch``). Anything that prevents capture (micro-batching,
a failing capture, another device) falls back to the :class:`EagerStep`, with the reason in
``TrainResult.eager_reason``; on the CPU the eager step is the loop as it always was.

Reproducibility: :func:`seed_everything` seeds Python, NumPy and torch; the engine calls it before
building the model, and :func:`train` calls it again with ``TrainConfig.seed`` before training and
shuffles with its own ``torch.Generator``, so on the CPU the same model, data and config give
identical losses.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import attrs
import numpy as np
import torch

from archsearch.dataset import PreparedData
from archsearch.errors import ArchsearchError, TrialFailed
from archsearch.tasks import loss_function, task_metrics

T = TypeVar("T")
log = logging.getLogger("archsearch")

#: Errors that halve the micro-batch and retry (a test may raise one on the CPU), besides any
#: ``RuntimeError`` whose message says "out of memory".
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)
#: Steps between checks for a non-finite loss (each check waits for the device once).
SYNC_EVERY = 64
#: Keep the best weights on the host when the model is larger than this many bytes.
BEST_ON_HOST_BYTES = 1 << 30
#: Steps run on a side stream before a CUDA graph is captured (they create the optimizer state and
#: the library workspaces); their effect on weights, optimizer state and RNG is undone.
GRAPH_WARMUP_ITERS = 3
#: torch < 2.4's schedulers replace a tensor learning rate (``group["lr"] = value``) instead of
#: filling it in place, so a captured step would keep the first value: no CUDA graphs there.
SCHEDULER_FILLS_TENSOR_LR = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 4)


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
    ``cuda_graphs`` captures each training step as a CUDA graph on CUDA (ignored elsewhere; see
    :class:`GraphedStep`).
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
    cuda_graphs: bool = True
    #: ``torch.compile`` the model (off by default: compiling per architecture took 23-154 s on
    #: an H100, more than a short trial saves). Its cost is reported as ``TrainResult.compile_s``;
    #: a compiled model is not also captured in a CUDA graph.
    compile: bool = False


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
    training samples over the time spent in training steps (evaluation excluded). ``step_kind`` is
    ``"graphed"`` or ``"eager"`` (``eager_reason`` says why); a graphed step drops the
    ``dropped_per_epoch`` samples of the ragged last batch of every epoch."""

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


class Step(Protocol):
    """One training step on a batch: zero the gradients, forward, backward, clip, optimizer step.

    Returns the batch's mean loss as a detached device tensor (a graphed step returns the same
    tensor every call, overwritten by the next call: copy it before then)."""

    kind: str
    static_shapes: bool
    micro_batch_size: int
    oom_retries: int

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


def _clip(params: list[torch.nn.Parameter], grad_clip: float | None) -> None:
    # The foreach norm and the clamped scale stay on the device (no host sync), so this is also
    # capturable in a CUDA graph.
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)


class EagerStep:
    """The step as ordinary PyTorch calls, in micro-batches of ``micro_batch_size`` (halved and
    retried on out-of-memory, see :func:`retry_on_oom`). ``reason`` says why it is not graphed."""

    kind = "eager"
    static_shapes = False

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        micro_batch_size: int,
        grad_clip: float | None = None,
        amp_dtype: torch.dtype | None = None,
        reason: str = "",
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.micro_batch_size = micro_batch_size
        self.grad_clip = grad_clip
        self.amp_dtype = amp_dtype
        self.reason = reason
        self.oom_retries = 0

    def _cleanup(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        _free_cuda()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def run(size: int) -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            loss = accumulate_gradients(self.model, x, y, self.loss_fn, size, self.amp_dtype)
            _clip(self.params, self.grad_clip)
            self.optimizer.step()
            return loss

        loss, size = retry_on_oom(run, self.micro_batch_size, self._cleanup)
        if size != self.micro_batch_size:
            self.oom_retries += 1
            self.micro_batch_size = size
        return loss


@functools.cache
def _device_side_stream(device: int) -> Any:
    return torch.cuda.Stream(device)


def _side_stream() -> Any:
    """One side stream per device and process, for every warm-up and capture: cuBLAS keeps a
    workspace (32 MiB on Hopper) per stream it has run on and never frees it, so a fresh stream
    per trial would grow a worker process by that much with every trial."""
    return _device_side_stream(torch.cuda.current_device())


@contextlib.contextmanager
def cuda_side_stream() -> Iterator[None]:
    """Run the block on the side stream, which waits for, and is waited on by, the current one
    (warm-up before capture must not run on the default stream)."""
    stream = _side_stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        yield
    torch.cuda.current_stream().wait_stream(stream)


def cuda_graph_capture(body: Callable[[], None]) -> Callable[[], None]:
    """Capture ``body`` as a CUDA graph (``torch.cuda.graph``) on the warm-up's side stream (so
    the library workspaces the warm-up created are the ones the graph uses) and return its
    ``replay``."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=_side_stream()):
        body()
    return graph.replay


class _Snapshot:
    """Model weights and buffers, optimizer state and learning rates, and the CPU RNG, to undo the
    warm-up steps of a capture. Restoring copies into the same tensors (the graph's addresses)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        state = model.state_dict()
        host = sum(t.numel() * t.element_size() for t in state.values()) > BEST_ON_HOST_BYTES
        self.model = {k: v.detach().to("cpu" if host else v.device, copy=True) for k, v in state.items()}
        self.optimizer = {
            p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for p, s in optimizer.state.items()
        }
        self.lrs = [
            g["lr"].clone() if isinstance(g["lr"], torch.Tensor) else g["lr"] for g in optimizer.param_groups
        ]
        self.rng = torch.random.get_rng_state()

    @torch.no_grad()
    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        model.load_state_dict(self.model)  # copy_ into the existing tensors
        for p, state in optimizer.state.items():
            saved = self.optimizer.get(p, {})
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    # State created by the warm-up goes back to AdamW's initial zeros.
                    if k in saved:
                        v.copy_(saved[k])
                    else:
                        v.zero_()
                elif k in saved:
                    state[k] = saved[k]
        for group, lr in zip(optimizer.param_groups, self.lrs, strict=True):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].copy_(lr)
            else:
                group["lr"] = lr
        torch.random.set_rng_state(self.rng)


class GraphedStep:
    """The whole step (forward under bf16 autocast, backward, clipping, ``optimizer.step``) captured
    once as a CUDA graph on static input/target buffers; each call copies the batch into the buffers
    and replays the graph.

    Before capture, ``warmup_iters`` steps run on the sample batch on a side stream (they create
    the optimizer state), then everything they changed is put back: weights and buffers, optimizer
    state, learning rates, the CPU RNG, so training starts from the same weights as an eager one
    (with dropout, not the same masks: the warm-up advanced the CUDA generator).
    The optimizer must be capturable (``AdamW(..., capturable=True)`` with the learning rate as a
    device tensor: the scheduler updates it in place). Dropout is graph-safe: the CUDA RNG's philox
    offset advances on every replay. BatchNorm running statistics update in place on replay.
    ``capture(body) -> replay`` and ``side_stream()`` default to CUDA's and may be replaced (tests
    on the CPU pass fakes: a capture that runs ``body`` and returns it as the replay).
    """

    kind = "graphed"
    static_shapes = True
    oom_retries = 0

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        sample_x: torch.Tensor,
        sample_y: torch.Tensor,
        grad_clip: float | None = None,
        amp_dtype: torch.dtype | None = None,
        warmup_iters: int = GRAPH_WARMUP_ITERS,
        capture: Callable[[Callable[[], None]], Callable[[], None]] = cuda_graph_capture,
        side_stream: Callable[[], contextlib.AbstractContextManager] = cuda_side_stream,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.grad_clip = grad_clip
        self.amp_dtype = amp_dtype
        self.warmup_iters = warmup_iters
        self.static_x = sample_x.detach().clone()
        self.static_y = sample_y.detach().clone()
        self.micro_batch_size = int(sample_x.shape[0])
        self.static_loss = torch.zeros((), device=sample_x.device)
        self.replays = 0
        snapshot = _Snapshot(model, optimizer)
        try:
            with side_stream():
                for _ in range(warmup_iters):
                    optimizer.zero_grad(set_to_none=True)
                    self._body()
            # Gradients allocated inside the capture come from the graph's private pool, and
            # backward writes rather than adds to them on every replay.
            optimizer.zero_grad(set_to_none=True)
            self._replay = capture(self._body)
        except BaseException:
            optimizer.zero_grad(set_to_none=True)
            snapshot.restore(model, optimizer)
            raise
        snapshot.restore(model, optimizer)
        del snapshot
        _free_cuda()  # the warm-up's blocks, cached on the side stream, are not needed again

    def _body(self) -> None:
        # A no-op while capturing (the gradients are None then); zeroes them when a fake capture
        # runs the body again as its replay.
        self.optimizer.zero_grad(set_to_none=False)
        x = self.static_x
        if self.amp_dtype is None:
            out = self.model(x)
        else:  # no weight-cast cache: it would outlive the capture
            with torch.autocast(x.device.type, dtype=self.amp_dtype, cache_enabled=False):
                out = self.model(x)
        loss = self.loss_fn(out, self.static_y)
        loss.backward()
        _clip(self.params, self.grad_clip)
        self.optimizer.step()
        self.static_loss = loss.detach()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != self.static_x.shape or y.shape != self.static_y.shape:
            raise ValueError(
                f"a graphed step takes batches of shape {tuple(self.static_x.shape)}, got {tuple(x.shape)}"
            )
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self._replay()
        self.replays += 1
        return self.static_loss


def make_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sample_x: torch.Tensor,
    sample_y: torch.Tensor,
    use_graphs: bool,
    grad_clip: float | None = None,
    micro_batch_size: int | None = None,
    amp_dtype: torch.dtype | None = None,
    warmup_iters: int = GRAPH_WARMUP_ITERS,
    capture: Callable[[Callable[[], None]], Callable[[], None]] | None = None,
    side_stream: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> EagerStep | GraphedStep:
    """The training step for batches shaped like ``sample_x``/``sample_y``: a :class:`GraphedStep`
    when ``use_graphs`` and the batch is on CUDA (or a ``capture`` is given), the optimizer is
    capturable, there is no micro-batching and capture succeeds; otherwise an :class:`EagerStep`
    whose ``reason`` says why (logged; a failed capture as a warning). ``micro_batch_size``
    defaults to the sample's batch. The model should be in training mode (the graph keeps it)."""
    batch = int(sample_x.shape[0])
    micro = min(micro_batch_size or batch, batch)

    def eager(reason: str) -> EagerStep:
        return EagerStep(model, optimizer, loss_fn, micro, grad_clip, amp_dtype, reason)

    if not use_graphs:
        return eager("CUDA graphs off")
    reason = ""
    if micro < batch:
        reason = f"micro-batching is active (micro-batch {micro} < batch {batch})"
    elif capture is None and sample_x.device.type != "cuda":
        reason = f"not on CUDA ({sample_x.device.type})"
    elif capture is None and not all(g.get("capturable", False) for g in optimizer.param_groups):
        reason = "the optimizer is not capturable (AdamW needs capturable=True)"
    if reason:
        log.debug("training step not graphed: %s", reason)
        return eager(reason)
    try:
        return GraphedStep(
            model,
            optimizer,
            loss_fn,
            sample_x,
            sample_y,
            grad_clip,
            amp_dtype,
            warmup_iters,
            capture or cuda_graph_capture,
            side_stream or cuda_side_stream,
        )
    except Exception as exc:  # noqa: BLE001 - any capture failure falls back to the eager step
        reason = f"graph capture failed: {type(exc).__name__}: {exc}"
    # Outside the except block: its traceback would keep the failed graph (and its pool) alive.
    log.warning("training step not graphed, running eagerly: %s", reason)
    _free_cuda()
    return eager(reason)


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
    seed_everything(cfg.seed)
    data = data.to(device)
    model.to(device)
    cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None

    params = [p for p in model.parameters() if p.requires_grad]
    n_train = data.n_windows("train")
    batch_size = min(cfg.batch_size, n_train)
    micro = min(cfg.micro_batch_size or batch_size, batch_size)
    want_graphs = cfg.cuda_graphs and not cfg.compile and SCHEDULER_FILLS_TENSOR_LR
    graphs = want_graphs and cuda and micro >= batch_size  # what a capture can take
    optimizer = make_optimizer(params, cfg, device, capturable=graphs)
    loss_fn = loss_function(data.task_kind)
    steps_per_epoch = math.ceil(n_train / batch_size)
    # The schedule reads ``steps_per_epoch`` when it runs (a closure), so it follows the change
    # below; it exists before the step so that the capture's optimizer steps go through the
    # scheduler's hook on ``optimizer.step`` (replays do not, and torch would warn).
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(cfg.warmup_steps, steps_per_epoch * cfg.epochs)(s)
    )
    model.train()
    sample_x, sample_y = data.batch("train", torch.arange(batch_size, device=device))
    if cfg.compile:
        # A worker trains many architectures in one process: without a reset each one recompiles
        # on top of the last, until dynamo's recompile limit silently stops compiling.
        torch._dynamo.reset()
    step_model = torch.compile(model) if cfg.compile else model
    train_step = make_step(
        step_model,
        optimizer,
        loss_fn,
        sample_x,
        sample_y,
        want_graphs,
        cfg.grad_clip,
        micro,
        amp_dtype,
    )
    if cfg.compile:
        train_step.reason = "torch.compile is on"
    elif cuda and cfg.cuda_graphs and not SCHEDULER_FILLS_TENSOR_LR:
        train_step.reason = f"torch {torch.__version__} < 2.4 cannot schedule a captured learning rate"
    del sample_x, sample_y
    if train_step.static_shapes:  # a graphed step takes full batches only: drop the ragged one
        steps_per_epoch = n_train // batch_size
    used = min(n_train, steps_per_epoch * batch_size)
    generator = torch.Generator().manual_seed(cfg.seed)
    eval_batch = cfg.eval_batch_size or max(cfg.batch_size, 1024)
    sizes = np.full(steps_per_epoch, batch_size, dtype=np.float64)
    sizes[-1] = used - batch_size * (steps_per_epoch - 1)
    best_on_host = sum(t.numel() * t.element_size() for t in model.state_dict().values()) > BEST_ON_HOST_BYTES

    history: list[dict[str, float]] = []
    compile_s = 0.0
    best_val, best_epoch, best_state = math.inf, 0, None
    train_time, stopped_early = 0.0, False
    for epoch in range(1, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=generator).to(device)
        step_losses = torch.zeros(steps_per_epoch, device=device)
        checked = 0
        for step in range(steps_per_epoch):
            x, y = data.batch("train", order[step * batch_size : (step + 1) * batch_size])
            if cfg.compile and epoch == 1 and step == 0:
                compile_start = time.perf_counter()
                step_losses[step] = train_step(x, y)
                if cuda:
                    torch.cuda.synchronize(device)
                compile_s = time.perf_counter() - compile_start
            else:
                step_losses[step] = train_step(x, y)
            scheduler.step()
            if (step + 1) % SYNC_EVERY == 0:
                _check_finite(step_losses[checked : step + 1], epoch, checked)
                checked = step + 1
        losses = step_losses.cpu().numpy()
        _check_finite(torch.from_numpy(losses[checked:]), epoch, checked)
        train_time += time.perf_counter() - epoch_start - (compile_s if epoch == 1 else 0.0)
        train_loss = float((losses * sizes).sum() / used)

        val_loss, metrics = evaluate(model, data, "val", eval_batch, amp_dtype)
        if not math.isfinite(val_loss):
            raise TrialFailed(f"non-finite validation loss at epoch {epoch}")
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                **metrics,
                "lr": float(scheduler.get_last_lr()[0]),
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
    del best_state
    step_info = {
        "micro_batch_size": train_step.micro_batch_size,
        "oom_retries": train_step.oom_retries,
        "step_kind": train_step.kind,
        "eager_reason": getattr(train_step, "reason", ""),
    }
    if cuda:  # hand the graph's pool and this trial's blocks back to the other workers on the GPU
        optimizer.zero_grad(set_to_none=True)
        del train_step, optimizer, scheduler
        gc.collect()
        _free_cuda()
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
        samples_per_s=used * len(history) / train_time if train_time > 0 else math.nan,
        device=str(device),
        stopped_early=stopped_early,
        baseline_loss=data.baseline_loss,
        compile_s=compile_s,
        dropped_per_epoch=n_train - used,
        **step_info,
    )


def _check_finite(losses: torch.Tensor, epoch: int, offset: int) -> None:
    bad = (~torch.isfinite(losses)).nonzero()
    if bad.numel():
        raise TrialFailed(f"non-finite training loss at epoch {epoch} step {offset + int(bad[0, 0]) + 1}")
