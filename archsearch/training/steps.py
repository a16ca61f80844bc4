"""One optimizer step of training: zero the gradients, forward, backward, clip, AdamW update.

One optimizer step is a :class:`Step` made by :func:`make_step`. On CUDA (``TrainConfig.cuda_graphs``,
the default) it is a :class:`GraphedStep`: forward, backward, clipping and the AdamW update are
captured once as a CUDA graph and replayed, one launch per step instead of hundreds, which is what
bounds small models on a large GPU. Shapes must then be static: a graphed step takes full
batches only, which ``training.drop_last`` (the default, on every device) guarantees; with
``drop_last`` false and a ragged last batch the trainer uses the eager step throughout. Anything
that prevents capture (micro-batching, a failing capture, another device) falls back to the
:class:`EagerStep`, with the reason in ``TrainResult.eager_reason``; on the CPU the eager step is
the loop as it always was. Both steps follow the same learning-rate scheduler object.

An out-of-memory error halves the micro-batch and retries (:func:`retry_on_oom`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import torch

from archsearch.errors import TrialFailed
from archsearch.training.settings import BEST_ON_HOST_BYTES

T = TypeVar("T")
log = logging.getLogger("archsearch")

#: Errors that halve the micro-batch and retry (a test may raise one on the CPU), besides any
#: ``RuntimeError`` whose message says "out of memory".
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)
#: Steps run on a side stream before a CUDA graph is captured (they create the optimizer state and
#: the library workspaces); their effect on weights, optimizer state and RNG is undone.
GRAPH_WARMUP_ITERS = 3
#: torch < 2.4's schedulers replace a tensor learning rate (``group["lr"] = value``) instead of
#: filling it in place, so a captured step would keep the first value: no CUDA graphs there.
SCHEDULER_FILLS_TENSOR_LR = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 4)


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


def _free_cuda() -> None:
    """Hand the cached blocks of freed tensors back to the device (a no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
