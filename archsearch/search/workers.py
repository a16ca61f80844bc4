"""Several worker processes on this machine: concurrent trials per GPU, or ``workers.processes``.

Small models leave a GPU mostly idle (SPEC.md: launch-bound; eight concurrent 1.6M-parameter
trials on one H100 trained 27x faster in total than one naive loop), so ``run`` on CUDA starts
several worker processes per GPU, each seeing only its own device (``CUDA_VISIBLE_DEVICES``),
sharing the study through the storage exactly as distributed workers do. Budgets run one after
another, each with as many workers per GPU as its most memory-hungry trial fits
(:func:`plan_workers`, from :func:`archsearch.training.memory.estimate_trial_memory`);
:func:`run_workers` starts them (``spawn``; each with its ``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from archsearch.config import Config, to_dict
from archsearch.device import may_use_cuda
from archsearch.errors import ArchsearchError
from archsearch.search.matrix import model_spec
from archsearch.search.objective import available_cores
from archsearch.training import memory

log = logging.getLogger("archsearch")
GiB = memory.GiB


def _max_batch(config: Config) -> int:
    spec = config.training_search_space.get("batch_size")
    if spec is None:
        return config.training.batch_size
    if spec.type == "categorical":
        return int(max(spec.choices))
    return int(spec.high)


def plan(config: Config, cells: list[Any], datasets: dict[int, Any]) -> list[WorkerSlot] | None:
    """The worker slots for ``cells`` (one budget's), or None to run in this process."""
    w = config.workers
    if w.processes is not None:
        if w.processes <= 1:
            return None
        return [WorkerSlot(device_id=-1, index=i, env={}, local_index=i) for i in range(w.processes)]
    if not may_use_cuda(config.training.device):
        return None
    ids = list(w.devices) if w.devices else memory.visible_devices()
    if not ids:
        return None
    # The most memory any trial of these cells may take: activations grow with width x depth, not
    # with the parameter count, so every architecture is estimated (closed forms: microseconds).
    batch, micro = _max_batch(config), config.training.micro_batch_size
    trial_bytes = max(
        memory.estimate_trial_memory(
            a,
            model_spec(config, datasets[c.horizon]),
            batch,
            micro,
            variant=config.model.variant,
            amp=config.training.precision != "fp32",
        )
        for c in cells
        for a in c.architectures
    )
    largest = max(a.param_count for c in cells for a in c.architectures)
    free = {i: memory.free_memory(i) for i in ids}
    slots = plan_workers(ids, w.per_gpu, free, trial_bytes, param_count=largest)
    return slots if len(slots) > 1 else None


def run_budget(
    config: Config, budget: int | None, slots: list[WorkerSlot], target: Callable[..., Any]
) -> None:
    """Run one budget's cells (all cells when ``budget`` is None) with one process per slot, each
    calling ``target(slot, raw_config, source, file_horizons)`` (the engine's
    :func:`~archsearch.search.engine.run_worker`)."""
    raw = to_dict(config)
    if budget is not None:
        raw["budgets"] = [budget]
    raw["workers"]["processes"] = 1  # the workers themselves run in one process each
    if raw["training"].get("cpu_threads") is None:  # share the cores rather than oversubscribe them
        raw["training"]["cpu_threads"] = max(1, available_cores() // len(slots))
    devices = sorted({s.device_id for s in slots})
    where = "CPU" if devices == [-1] else f"GPU {', '.join(map(str, devices))}"
    log.info("%d worker processes on %s", len(slots), where)
    outcomes = run_workers(slots, target, (raw, config.source, config.file_horizons))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise ArchsearchError(
            f"{len(failed)} of {len(slots)} worker processes failed; the first: worker {failed[0].slot.index}: "
            f"{failed[0].error}. Completed trials are in the storage; run the same command to resume."
        )


LAUNCH_BOUND_WORKERS: tuple[tuple[float, int], ...] = ((5e6, 8), (50e6, 4), (500e6, 2))


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
    exit_with_parent()
    try:
        outcome = WorkerOutcome(slot, True, target(slot, *args))
    except ArchsearchError as exc:  # one paragraph (a storage outage past its limit): no traceback
        outcome = WorkerOutcome(slot, False, error=str(exc))
    except BaseException:  # noqa: BLE001 - reported to the parent, which decides
        outcome = WorkerOutcome(slot, False, error=traceback.format_exc())
    parent = multiprocessing.parent_process()
    if parent is None or parent.is_alive():  # no one to tell after the parent died
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
    reported as failed.

    Signals reach every process: a SIGINT or SIGTERM to this one while they run is passed on to
    each worker (:func:`forwarding_stops`), and each worker stops when this process dies
    (:func:`exit_with_parent`). A worker that a forwarded signal ended before it could answer (it
    was still starting) is reported as stopped, not failed."""
    ctx = spawn_context()
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_entry, args=(slot, target, args, results), daemon=True) for slot in slots
    ]
    with forwarding_stops(procs) as received:
        try:
            for proc in procs:
                proc.start()
                if received:  # a stop came while the others started
                    _signal(proc, signal.SIGTERM)
            outcomes = _collect(slots, procs, results, timeout_s)
        finally:
            for proc in procs:
                if proc.pid is None:
                    continue
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=5)
    if received:
        for s, o in outcomes.items():
            if not o.ok and o.error == NO_RESULT:
                outcomes[s] = WorkerOutcome(o.slot, True, error="stopped by a signal before it had started")
    return [outcomes[s.index] for s in slots]


NO_RESULT = "worker exited without a result"


def _collect(
    slots: Sequence[WorkerSlot], procs: list[Any], results: Any, timeout_s: float | None
) -> dict[int, WorkerOutcome]:
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
                outcomes.setdefault(s.index, WorkerOutcome(s, False, error=NO_RESULT))
        if deadline is not None and time.monotonic() >= deadline:
            for s in slots:
                outcomes.setdefault(s.index, WorkerOutcome(s, False, error=f"no result after {timeout_s} s"))
    return outcomes


def _signal(proc: Any, signum: int) -> None:
    if proc.pid is not None and proc.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)


@contextlib.contextmanager
def forwarding_stops(procs: Sequence[Any]) -> Iterator[list[int]]:
    """While the block runs, a SIGINT or SIGTERM to this process is passed on to ``procs``, then
    handled here as before (the engine's :class:`~archsearch.search.stop.StopRequest`: the run
    stops after its workers have). The first is passed on as SIGTERM, which stops a worker the way
    the first Ctrl-C does (finish the trial, write, exit) and does nothing more to a worker that the
    terminal's Ctrl-C reached too; a second SIGINT (abort) is passed on as itself, unless the
    terminal delivered it to the workers already. Yields the signals received.

    POSIX only: on Windows a console's Ctrl-C reaches every process attached to it, and no other
    process can send a catchable SIGTERM; outside the main thread signals cannot be handled."""
    received: list[int] = []
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous: dict[int, Any] = {}

    def forward(signum: int, frame: Any) -> None:
        first = not received
        received.append(signum)
        if first or (signum == signal.SIGINT and not _terminal_reached_workers()):
            for proc in procs:
                _signal(proc, signal.SIGTERM if first else signum)
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:  # SIGTERM's default: this process ends (its workers stop)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, forward)
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _terminal_reached_workers() -> bool:
    """Whether this process group is its terminal's foreground group: the terminal then sent its
    Ctrl-C to the workers (the same group) as well."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def exit_with_parent() -> None:
    """Make this spawned worker stop when its parent dies, as SIGTERM stops it (finish the trial,
    write, exit; at once before the engine's stop handling is in place): Linux's
    ``PR_SET_PDEATHSIG`` (through ctypes), else a thread that waits on the parent's sentinel
    (``multiprocessing.parent_process()``: every platform)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if _parent_death_signal():
        if os.getppid() != parent.pid:  # it died before the request was made
            signal.raise_signal(signal.SIGTERM)
        return
    threading.Thread(target=_wait_for_parent, args=(parent,), name="archsearch-parent", daemon=True).start()


def _parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _wait_for_parent(parent: Any) -> None:
    parent.join()  # returns when the parent's sentinel closes: it has exited
    log.warning("the parent process %s has gone; stopping", parent.pid)
    signal.raise_signal(signal.SIGTERM)
