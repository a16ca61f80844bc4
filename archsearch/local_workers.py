"""Several worker processes on this machine: concurrent trials per GPU, or ``workers.processes``.

Small models leave a GPU mostly idle (SPEC.md: launch-bound), so ``run`` on CUDA starts several
worker processes per GPU, each seeing only its own device (``CUDA_VISIBLE_DEVICES``), sharing the
study through the storage exactly as distributed workers do. Budgets run one after another, each
with as many workers per GPU as its most memory-hungry trial fits (``archsearch.gpu.plan_workers``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from archsearch.config import Config, structure, to_dict

log = logging.getLogger("archsearch")


def _max_batch(config: Config) -> int:
    spec = config.training_search_space.get("batch_size")
    if spec is None:
        return config.training.batch_size
    if spec.type == "categorical":
        return int(max(spec.choices))
    return int(spec.high)


def plan(config: Config, cells: list[Any], datasets: dict[int, Any]) -> list[Any] | None:
    """The worker slots for ``cells`` (one budget's), or None to run in this process."""
    from archsearch import gpu
    from archsearch.engine import model_spec

    w = config.workers
    if w.processes is not None:
        if w.processes <= 1:
            return None
        return [gpu.WorkerSlot(device_id=-1, index=i, env={}, local_index=i) for i in range(w.processes)]
    device = config.training.device
    if not (device == "auto" or device.startswith("cuda")):
        return None
    ids = list(w.devices) if w.devices else gpu.visible_devices()
    if not ids:
        return None
    # The most memory any trial of these cells may take: activations grow with width x depth, not
    # with the parameter count, so every architecture is estimated (closed forms: microseconds).
    batch, micro = _max_batch(config), config.training.micro_batch_size
    trial_bytes = max(
        gpu.estimate_trial_memory(
            a, model_spec(config, datasets[c.horizon]), batch, micro, variant=config.model.variant
        )
        for c in cells
        for a in c.architectures
    )
    largest = max(a.param_count for c in cells for a in c.architectures)
    free = {i: gpu.free_memory(i) for i in ids}
    slots = gpu.plan_workers(ids, w.per_gpu, free, trial_bytes, param_count=largest)
    return slots if len(slots) > 1 else None


def _worker(slot: Any, raw: dict[str, Any], source: str, file_horizons: tuple[int, ...] = ()) -> None:
    """One worker process: the engine on the given config, log lines tagged with the slot."""
    from archsearch.engine import Engine

    logger = logging.getLogger("archsearch")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [worker {slot.index}] %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    config = structure(raw, source, file_horizons)
    Engine(config, worker=slot.index).run()


def run_budget(config: Config, budget: int | None, slots: list[Any]) -> None:
    """Run one budget's cells (all cells when ``budget`` is None) with one process per slot."""
    from archsearch import gpu
    from archsearch.engine import available_cores
    from archsearch.errors import ArchsearchError

    raw = to_dict(config)
    if budget is not None:
        raw["budgets"] = [budget]
    raw["workers"]["processes"] = 1  # the workers themselves run in one process each
    if raw["training"].get("cpu_threads") is None:  # share the cores rather than oversubscribe them
        raw["training"]["cpu_threads"] = max(1, available_cores() // len(slots))
    devices = sorted({s.device_id for s in slots})
    where = "CPU" if devices == [-1] else f"GPU {', '.join(map(str, devices))}"
    log.info("%d worker processes on %s", len(slots), where)
    outcomes = gpu.run_workers(slots, _worker, (raw, config.source, config.file_horizons))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise ArchsearchError(
            f"{len(failed)} of {len(slots)} worker processes failed; the first: worker {failed[0].slot.index}: "
            f"{failed[0].error}. Completed trials are in the storage; run the same command to resume."
        )
