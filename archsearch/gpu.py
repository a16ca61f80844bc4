"""GPU sizing for trials: how much memory one trial takes, and how many trials share one GPU.

A small PatchTST does not keep a modern GPU busy: its training step is hundreds of tiny kernels,
so the GPU waits on kernel launches, not on arithmetic (SPEC.md: eight concurrent 1.6M-parameter
trials on one H100 trained 27x faster in total than one naive loop). Two remedies live here and in
:mod:`archsearch.trainer`: CUDA graphs there (one launch per step), and several worker processes
per GPU here. :func:`estimate_trial_memory` says what one trial needs, :func:`free_memory` what a
device has, and :func:`plan_workers` how many trials go on each device; :func:`run_workers` starts
them (``spawn``; each with its ``CUDA_VISIBLE_DEVICES``).

Everything that touches CUDA goes through ``torch.cuda`` functions looked up at call time, so tests
on a machine without a GPU monkeypatch them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_module
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from archsearch.architecture import Architecture, ModelSpec
from archsearch.errors import ArchsearchError
from archsearch.trainer import BEST_ON_HOST_BYTES

log = logging.getLogger("archsearch")

GiB = 1 << 30
MiB = 1 << 20
#: Per process on a CUDA device, outside the tensors: the CUDA context (about 300-500 MB on an
#: H100 with the torch kernels loaded) and caching-allocator slack.
#: ``torch.cuda.max_memory_allocated`` does not see the context; ``nvidia-smi`` does.
CUDA_CONTEXT_BYTES = 500 * MiB
#: A cuBLAS workspace, which torch takes from its caching allocator (so it counts in
#: ``max_memory_allocated``): 32 MiB per stream on Hopper (4 MiB before). A trial uses the
#: default stream, and with CUDA graphs also the trainer's one side stream (warm-up and capture).
CUBLAS_WORKSPACE_BYTES = 32 * MiB
#: Bytes per element of the AdamW state: ``exp_avg`` and ``exp_avg_sq``, both fp32.
ADAMW_STATE_BYTES = 8
#: Launch-bound heuristic of :func:`launch_bound_workers`: (below this many parameters, workers).
LAUNCH_BOUND_WORKERS: tuple[tuple[float, int], ...] = ((5e6, 8), (50e6, 4), (500e6, 2))
VARIANTS = ("patchtst", "patchtst-ci")


@attrs.frozen
class MemoryEstimate:
    """The parts of :func:`estimate_trial_memory`, in bytes (see there for the formula)."""

    param_count: int
    params: int
    gradients: int
    optimizer: int
    amp_weights: int
    best_weights: int
    activations: int
    backward_transient: int
    eval_activations: int
    data: int
    library_workspace: int
    context: int
    graphs: bool = True

    @property
    def states(self) -> int:
        """Weights, gradients, AdamW state and the bf16 weight copies: there all the time."""
        return self.params + self.gradients + self.optimizer + self.amp_weights

    @property
    def total(self) -> int:
        train = self.activations + self.backward_transient
        # A CUDA graph keeps its activations in a private pool that evaluation cannot reuse.
        working = train + self.eval_activations if self.graphs else max(train, self.eval_activations)
        return self.states + self.best_weights + working + self.data + self.library_workspace + self.context

    def as_dict(self) -> dict[str, int]:
        return {**attrs.asdict(self), "states": self.states, "total": self.total}


def _param_count(arch: Architecture, spec: ModelSpec, variant: str) -> int:
    if variant == "patchtst":
        from archsearch.plugins.patchtst import estimate
    elif variant == "patchtst-ci":
        from archsearch.plugins.patchtst_ci import estimate
    else:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return estimate(arch, spec)


def _layer_shape(arch: Architecture, spec: ModelSpec, variant: str, batch: int) -> tuple[int, int, bool]:
    """(sequences, tokens per sequence, residual attention) that the encoder sees for ``batch``."""
    if variant == "patchtst-ci":
        from archsearch.plugins.patchtst_ci import num_patches

        return batch * spec.num_features, num_patches(spec), spec.res_attention
    return batch, spec.num_patches, False


def trial_memory_breakdown(
    arch: Architecture,
    spec: ModelSpec,
    batch_size: int,
    micro_batch_size: int | None = None,
    amp: bool = True,
    variant: str = "patchtst",
    eval_batch_size: int | None = None,
    data_bytes: int = 0,
    include_context: bool = True,
    graphs: bool = True,
) -> MemoryEstimate:
    """The parts of :func:`estimate_trial_memory`; its keyword options are these arguments."""
    if batch_size < 1 or (micro_batch_size is not None and micro_batch_size < 1):
        raise ValueError(f"batch sizes must be positive, got {batch_size} and {micro_batch_size}")
    P = arch.param_count or _param_count(arch, spec, variant)
    d, ff, h, n_layers = arch.d_model, arch.d_ff, arch.n_heads, arch.n_layers
    e = 2 if amp else 4  # bytes of a matmul output (bf16 under autocast)
    mask = 1 if spec.dropout > 0 else 0  # a dropout mask is one byte per element
    b = min(micro_batch_size or batch_size, batch_size)
    seqs, n, res_attention = _layer_shape(arch, spec, variant, b)
    tokens = seqs * n
    # Saved for backward, per token and layer: two fp32 residual-stream inputs of the norms (8d);
    # the inputs of the QKV, output and first feed-forward linears, the QKV output (3d), the
    # attention output (d) and two d_ff tensors (GELU input, second linear input) at e bytes;
    # three dropout masks (d, d_ff, d).
    per_token = 8 * d + e * (7 * d + 2 * ff) + mask * (2 * d + ff)
    # Per sequence and layer: fused attention keeps only the log-sum-exp, counted as a full fp32
    # score matrix to stay on the safe side; residual attention (patchtst-ci) keeps the fp32
    # softmax, its bf16 copy and the dropout mask.
    per_seq = h * n * n * ((4 + e + mask) if res_attention else 4)
    layer = tokens * per_token + seqs * per_seq
    if variant == "patchtst-ci":
        c, length = spec.num_features, spec.context_length
        series = b * (length + spec.stride) * c * 4 * 4  # input, RevIN steps, padded series
        patches = seqs * n * spec.patch_len * (4 + e)
        head_in = seqs * (n if spec.head == "forecast" else 1) * d * e
        edges = series + patches + tokens * 4 * d + head_in
    else:
        patch_in = spec.patch_len * spec.num_features
        edges = b * spec.context_length * spec.num_features * 4 + b * n * patch_in * (4 + e)
        edges += tokens * (4 * d + e * d)  # final norm input, head input
    activations = n_layers * layer + edges
    # Backward holds the gradients of about one layer's activations besides the saved ones.
    backward_transient = layer
    # Evaluation (no grad, default batch max(batch, 1024) like the trainer): one layer's tensors
    # live at a time: the fp32 residual, norm output and a copy (12d), QKV, attention and output
    # (4d) and two d_ff tensors at e bytes; attention scores in fp32.
    eval_b = eval_batch_size or max(batch_size, 1024)
    eval_seqs, _, _ = _layer_shape(arch, spec, variant, eval_b)
    eval_activations = eval_seqs * n * (12 * d + e * (4 * d + 2 * ff)) + eval_seqs * h * n * n * 4
    return MemoryEstimate(
        param_count=P,
        params=4 * P,
        gradients=4 * P,
        optimizer=ADAMW_STATE_BYTES * P,
        amp_weights=2 * P if amp else 0,
        best_weights=4 * P if 4 * P <= BEST_ON_HOST_BYTES else 0,
        activations=activations,
        backward_transient=backward_transient,
        eval_activations=eval_activations,
        data=data_bytes,
        library_workspace=(2 if graphs else 1) * CUBLAS_WORKSPACE_BYTES,
        context=CUDA_CONTEXT_BYTES if include_context else 0,
        graphs=graphs,
    )


def estimate_trial_memory(
    arch: Architecture,
    spec: ModelSpec,
    batch_size: int,
    micro_batch_size: int | None = None,
    **options: Any,
) -> int:
    """Peak device bytes of one trial of :func:`archsearch.trainer.train` (an upper-side estimate).

    With ``P`` parameters (exact, from the variant's estimator), ``d`` = d_model, ``f`` = d_ff,
    ``h`` heads, ``L`` layers, ``e`` = 2 bytes under bf16 autocast (``amp``) else 4, ``m`` = 1 when
    dropout > 0 else 0, ``b`` = the micro-batch (or batch), ``S`` sequences = ``b`` (``patchtst``) or
    ``b * num_features`` (``patchtst-ci``: every channel is a sequence) and ``N`` tokens each
    (num_patches; one more with end padding)::

        states      = 4P weights + 4P gradients + 8P AdamW (exp_avg, exp_avg_sq; fp32)
                      + 2P bf16 weight copies (amp only)
        layer       = S*N * (8d + e*(7d + 2f) + m*(2d + f))     saved for backward per layer
                      + S * h*N^2 * (4, or 4 + e + m with residual attention)
        activations = L * layer + inputs, patches and head input
        transient   = layer                                   (activation gradients in backward)
        eval        = S_eval*N * (12d + e*(4d + 2f)) + S_eval*h*N^2*4   (no grad, one layer live)
        working     = activations + transient + eval    with CUDA graphs (``graphs``, the
                      trainer's default on CUDA: the graph's pool keeps the training activations)
                    = max(activations + transient, eval) without
        best        = 4P, the best epoch's weights (kept on the device up to 1 GiB; before
                      training the same room holds the capture's snapshot of the weights)
        total       = states + best + working + data_bytes
                      + cuBLAS workspaces (32 MiB per stream: 2 streams with graphs, else 1)
                      + CUDA_CONTEXT_BYTES (500 MiB, per process; include_context=False drops it)

    Gradients are counted although the eager step frees them between steps: a CUDA-graphed step
    keeps them. ``micro_batch_size`` shrinks the activations, not the states. The context term is
    what ``torch.cuda.max_memory_allocated`` does not show, nor does it show the graph pool's
    freed blocks: compare it with ``include_context=False, graphs=False``. The keyword
    ``options`` (``amp``, ``variant``, ``eval_batch_size``, ``data_bytes``, ``include_context``,
    ``graphs``) are :func:`trial_memory_breakdown`'s.
    """
    return trial_memory_breakdown(arch, spec, batch_size, micro_batch_size, **options).total


def measured_peak_memory(device: torch.device | str) -> int | None:
    """``torch.cuda.max_memory_allocated`` of a CUDA device; None for any other device."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return int(torch.cuda.max_memory_allocated(device))


def visible_devices() -> list[int]:
    """The CUDA device indices this process sees (``0..device_count-1``; torch applies
    ``CUDA_VISIBLE_DEVICES``, so index 0 is the first device listed there). Empty without CUDA."""
    if not torch.cuda.is_available():
        return []
    return list(range(torch.cuda.device_count()))


def free_memory(device_id: int) -> int:
    """Free bytes on CUDA device ``device_id`` (``torch.cuda.mem_get_info``; other processes'
    allocations count as used)."""
    free, _total = torch.cuda.mem_get_info(device_id)
    return int(free)


def launch_bound_workers(param_count: int | None, max_per_gpu: int = 8) -> int:
    """Workers worth running on one GPU when launches, not memory, bound a trial: 8 below 5M
    parameters, 4 below 50M, 2 below 500M, else 1 (never above ``max_per_gpu``; unknown size:
    ``max_per_gpu``)."""
    if param_count is None:
        return max_per_gpu
    for limit, workers in LAUNCH_BOUND_WORKERS:
        if param_count < limit:
            return min(workers, max_per_gpu)
    return min(1, max_per_gpu)


def physical_device(device_id: int, environ: dict[str, str] | None = None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` entry that names torch device ``device_id`` for a child process:
    the id itself, or the ``device_id``-th entry of this process's own ``CUDA_VISIBLE_DEVICES``."""
    env = os.environ if environ is None else environ
    listed = [s.strip() for s in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if s.strip()]
    if "CUDA_VISIBLE_DEVICES" in env and device_id < len(listed):
        return listed[device_id]
    return str(device_id)


@attrs.frozen
class WorkerSlot:
    """One worker process: ``index`` counts over all devices, ``local_index`` on its device; ``env``
    is what the process adds to its environment (``CUDA_VISIBLE_DEVICES``, so it sees only its
    device, as ``cuda:0``)."""

    device_id: int
    index: int
    env: dict[str, str] = attrs.field(factory=dict)
    local_index: int = 0


def plan_workers(
    device_ids: Sequence[int],
    workers_per_gpu: int | None,
    free_bytes: dict[int, int],
    trial_bytes: int,
    max_per_gpu: int = 8,
    param_count: int | None = None,
) -> list[WorkerSlot]:
    """Worker slots for ``device_ids``.

    ``workers_per_gpu=None`` ("auto") puts ``min(max_per_gpu, free // trial_bytes,
    launch_bound_workers(param_count))`` workers on each device (at least one when one fits);
    an explicit count is used as given (a warning is logged when the estimate says it does not
    fit). Raises :class:`ArchsearchError` naming the device, its free memory and the estimate when
    not even one trial fits on a device, or when there is no device.
    """
    if not device_ids:
        raise ArchsearchError("no CUDA device is visible, so there is nowhere to put GPU workers.")
    if trial_bytes < 1:
        raise ValueError(f"trial_bytes must be positive, got {trial_bytes}")
    if workers_per_gpu is not None and workers_per_gpu < 1:
        raise ArchsearchError(f"workers_per_gpu must be at least 1 (or auto), got {workers_per_gpu}.")
    if max_per_gpu < 1:
        raise ValueError(f"max_per_gpu must be positive, got {max_per_gpu}")
    slots: list[WorkerSlot] = []
    for device in device_ids:
        free = free_bytes[device]
        fit = free // trial_bytes
        if fit < 1:
            raise ArchsearchError(
                f"GPU {device} has {free / GiB:.2f} GiB free, but one trial needs about "
                f"{trial_bytes / GiB:.2f} GiB (estimate: weights, gradients, AdamW state, activations "
                "and the CUDA context). Use a smaller batch_size or micro_batch_size, or free the device."
            )
        if workers_per_gpu is None:
            count = max(1, min(max_per_gpu, fit, launch_bound_workers(param_count, max_per_gpu)))
        else:
            count = workers_per_gpu
            if count > fit:
                log.warning(
                    "GPU %s: %d workers asked for, but only %d trials of about %.2f GiB fit in %.2f GiB free",
                    device,
                    count,
                    fit,
                    trial_bytes / GiB,
                    free / GiB,
                )
        for local in range(count):
            env = {"CUDA_VISIBLE_DEVICES": physical_device(device)}
            slots.append(WorkerSlot(device, len(slots), env, local))
    return slots


@attrs.frozen
class WorkerOutcome:
    """What one worker of :func:`run_workers` returned (``ok``) or the traceback it raised."""

    slot: WorkerSlot
    ok: bool
    result: Any = None
    error: str = ""


def _worker_entry(slot: WorkerSlot, target: Callable[..., Any], args: tuple[Any, ...], results: Any) -> None:
    os.environ.update(slot.env)
    try:
        outcome = WorkerOutcome(slot, True, target(slot, *args))
    except BaseException:  # noqa: BLE001 - reported to the parent, which decides
        outcome = WorkerOutcome(slot, False, error=traceback.format_exc())
    results.put(outcome)


def spawn_context() -> multiprocessing.context.SpawnContext:
    """The ``spawn`` multiprocessing context :func:`run_workers` uses (CUDA cannot be forked);
    make barriers and queues for its workers with it."""
    return multiprocessing.get_context("spawn")


def run_workers(
    slots: Sequence[WorkerSlot],
    target: Callable[..., Any],
    args: tuple[Any, ...] = (),
    timeout_s: float | None = None,
) -> list[WorkerOutcome]:
    """Run ``target(slot, *args)`` in one spawned process per slot, each with ``slot.env`` applied
    before it touches CUDA; return the outcomes in slot order. ``target`` and ``args`` must pickle
    (a module-level function). A worker that has not answered after ``timeout_s`` is terminated and
    reported as failed."""
    ctx = spawn_context()
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_entry, args=(slot, target, args, results), daemon=True) for slot in slots
    ]
    for proc in procs:
        proc.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    outcomes: dict[int, WorkerOutcome] = {}
    while len(outcomes) < len(slots):
        wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
        try:
            outcome = results.get(timeout=wait)
            outcomes[outcome.slot.index] = outcome
            continue
        except queue_module.Empty:
            pass
        dead = [s for s, p in zip(slots, procs, strict=True) if s.index not in outcomes and not p.is_alive()]
        if dead and all(not p.is_alive() for p in procs):
            try:  # a result may still be in flight from a process that just exited
                while True:
                    outcome = results.get(timeout=0.5)
                    outcomes[outcome.slot.index] = outcome
            except queue_module.Empty:
                pass
            for s in dead:
                outcomes.setdefault(s.index, WorkerOutcome(s, False, error="worker exited without a result"))
        if deadline is not None and time.monotonic() >= deadline:
            for s in slots:
                outcomes.setdefault(s.index, WorkerOutcome(s, False, error=f"no result after {timeout_s} s"))
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    return [outcomes[s.index] for s in slots]
