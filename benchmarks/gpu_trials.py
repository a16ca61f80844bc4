"""Trials at GPU speed: the naive loop against archsearch's trainer, one trial and K per GPU.

Run on a machine with one CUDA GPU (SPEC.md's table was measured on an H100 80GB)::

    python benchmarks/gpu_trials.py --out runs/gpu_trials            # about 6-7 minutes
    python benchmarks/gpu_trials.py --out runs/gpu_trials --quick    # about 2 minutes

For each architecture of SPEC.md's table (``patchtst``, 20 synthetic features, context 60, patch
10, stride 5, 11 patches, binary threshold task) and each batch size (64 and 256), on the same card
in the same run:

- ``naive``: fp32, a host ``DataLoader`` over materialised windows (each batch copied to the GPU),
  ``AdamW`` (default for-each), one trial at a time: SPEC.md's baseline.
- ``trainer``: archsearch's training step (data resident on the device, bf16 autocast, fused AdamW,
  clipping, warmup-cosine schedule), with CUDA graphs off (``eager``) and on (``graphs``).
- ``workers``: K concurrent processes of the graphed trainer on the one GPU (``spawn``, released
  together by a barrier, each training a fixed number of steps under a time cap); samples/s is the
  sum over the workers (``aggregate`` in the JSON: all samples over the slowest worker's time).
  K is what :func:`archsearch.search.workers.plan_workers` picks ("auto"), and also 8 for models under 5M
  parameters (``--quick``: the 1.6M model at batch 256 only).

Every measurement runs ``warmup`` untimed steps, then at most ``steps`` timed steps and stops early
after ``cap_s`` seconds; a global budget (420 s, ``--quick`` 100 s) skips what would not fit, with a
reason, as is an out-of-memory error. The naive loop keeps PyTorch's default fp32 matmul precision
(no TF32). Model FLOP utilisation: ``6 * params * 11 tokens * samples/s`` against an 800 TFLOP/s
bf16 peak. The ``peak GiB`` column is ``torch.cuda.max_memory_allocated`` of the single-trial rows,
beside :func:`archsearch.training.memory.estimate_trial_memory` for the same step (no context, no evaluation).
Writes ``gpu_trials.json`` and ``gpu_trials.md`` to ``--out`` and prints the table.

Without CUDA it prints "no CUDA device: nothing measured" and exits 0. ``--cpu-smoke`` runs the whole
flow on the CPU with tiny models, 2 steps and K=2 (a test of the script, not a measurement);
``--smoke`` does the same on the GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from archsearch.architecture import Architecture, ModelSpec
from archsearch.data.sources import DataConfig, load_frame
from archsearch.data.splits import SplitConfig
from archsearch.data.tasks import TaskConfig, loss_function
from archsearch.data.windows import PreparedData, prepare
from archsearch.plugins.patchtst import build, estimate
from archsearch.search.workers import (
    WorkerSlot,
    launch_bound_workers,
    plan_workers,
    run_workers,
    spawn_context,
)
from archsearch.training.memory import GiB, estimate_trial_memory, free_memory, measured_peak_memory
from archsearch.training.settings import TrainConfig
from archsearch.training.steps import is_out_of_memory, make_step
from archsearch.training.trainer import make_optimizer, seed_everything, warmup_cosine

PEAK_BF16_FLOPS = 800e12
NUM_FEATURES, CONTEXT, HORIZON = 20, 60, 5
SPEC = ModelSpec(num_features=NUM_FEATURES, context_length=CONTEXT, patch_len=10, stride=5, dropout=0.1)
TOKENS = SPEC.num_patches  # 11

# Heads: the most that keep 64 dimensions per head (the parameter count does not depend on them).
ARCHITECTURES = {
    "d128 L8 ff512": Architecture(128, 8, 2, 512),
    "d64 L48 ff256": Architecture(64, 48, 2, 256),
    "d512 L6 ff2048": Architecture(512, 6, 8, 2048),
    "d1024 L16 ff4096": Architecture(1024, 16, 16, 4096),
}
SMOKE_ARCHITECTURES = {"d16 L2 ff32": Architecture(16, 2, 2, 32), "d32 L2 ff64": Architecture(32, 2, 2, 64)}
#: SPEC.md's H100 measurements (PyTorch 2.11), samples/s, for the report.
REFERENCE = {
    "d128 L8 ff512": {"naive_b64": 2351, "device_bf16_fused_b256": 8520, "compiled_b256": 16705},
    "d64 L48 ff256": {"naive_b64": 437, "device_bf16_fused_b256": 1439, "compiled_b256": 2458},
    "d512 L6 ff2048": {"naive_b64": 2742, "device_bf16_fused_b256": 11565, "compiled_b256": 14690},
    "d1024 L16 ff4096": {"naive_b64": 1116, "device_bf16_fused_b256": 4637},
    "8 x d128 L8 ff512": {"workers_b256": 63878},
}

MODES: dict[str, dict[str, Any]] = {
    "full": {
        "archs": list(ARCHITECTURES),
        "batches": (64, 256),
        "warmup": 5,
        "steps": 1000,
        "cap_s": 4.0,
        "worker_cap_s": 5.0,
        "budget_s": 420.0,
        "reserve_s": 150.0,
        "rows": 12_000,
        "workers_for": list(ARCHITECTURES),
        "worker_batches": (64, 256),
    },
    "quick": {
        "archs": ["d128 L8 ff512", "d512 L6 ff2048"],
        "batches": (64, 256),
        "warmup": 3,
        "steps": 400,
        "cap_s": 2.0,
        "worker_cap_s": 3.0,
        "budget_s": 100.0,
        "reserve_s": 40.0,
        "rows": 6_000,
        "workers_for": ["d128 L8 ff512"],
        "worker_batches": (256,),
    },
    "smoke": {
        "archs": list(SMOKE_ARCHITECTURES),
        "batches": (8, 16),
        "warmup": 1,
        "steps": 2,
        "cap_s": 5.0,
        "worker_cap_s": 5.0,
        "budget_s": 120.0,
        "reserve_s": 0.0,
        "rows": 800,
        "workers_for": list(SMOKE_ARCHITECTURES),
        "worker_batches": (8, 16),
        "workers": 2,
    },
}


def arch_of(name: str) -> Architecture:
    return ARCHITECTURES.get(name) or SMOKE_ARCHITECTURES[name]


def make_data(rows: int) -> PreparedData:
    frame = load_frame(DataConfig(synthetic_rows=rows, synthetic_features=NUM_FEATURES))
    return prepare(frame, TaskConfig(), SplitConfig(), horizon=HORIZON, context_length=CONTEXT)


def new_model(arch: Architecture, device: torch.device) -> torch.nn.Module:
    seed_everything(0)
    with torch.device(device):  # initialise on the device (a 200M model is slow to build on the host)
        return build(arch, SPEC)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def timed_steps(step: Any, device: torch.device, warmup: int, steps: int, cap_s: float, batch: int) -> dict:
    """Run ``warmup`` untimed then up to ``steps`` timed calls of ``step(i)``, stopping after
    ``cap_s`` seconds (checked every 4 steps; the device is synchronised before the clock stops)."""
    for i in range(warmup):
        step(i)
    _sync(device)
    start = time.perf_counter()
    done = 0
    while done < steps:
        step(warmup + done)
        done += 1
        if done % 4 == 0 and time.perf_counter() - start > cap_s:
            break
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"steps": done, "elapsed_s": elapsed, "samples_per_s": done * batch / elapsed}


def naive(arch: Architecture, data: PreparedData, batch: int, device: torch.device, mode: dict) -> dict:
    """SPEC.md's baseline: fp32, host DataLoader over materialised windows, default AdamW."""
    from torch.utils.data import DataLoader, TensorDataset

    model = new_model(arch, device).train()
    x, y = data.x_train.clone(), data.y_train.clone()  # materialised windows, on the host
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    batches = iter(loader)

    def step(i: int) -> None:
        nonlocal batches
        try:
            xb, yb = next(batches)
        except StopIteration:
            batches = iter(loader)
            xb, yb = next(batches)
        xb, yb = xb.to(device), yb.to(device)
        optimizer.zero_grad()
        loss_fn(model(xb), yb).backward()
        optimizer.step()

    return timed_steps(step, device, mode["warmup"], mode["steps"], mode["cap_s"], batch)


class TrainerRun:
    """archsearch's training step as :func:`archsearch.training.trainer.train` builds it, on device data."""

    def __init__(
        self, arch: Architecture, data: PreparedData, batch: int, device: torch.device, graphs: bool
    ) -> None:
        self.device, self.batch, self.data = device, batch, data
        cuda = device.type == "cuda"
        amp = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
        cfg = TrainConfig(learning_rate=3e-4, batch_size=batch, warmup_steps=10, cuda_graphs=graphs)
        self.model = new_model(arch, device).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(params, cfg, device, capturable=graphs and cuda)
        # Before the step, as in train(): the capture's optimizer steps then pass its hook.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(10, 10_000))
        started = time.perf_counter()
        sample_x, sample_y = data.batch("train", torch.arange(batch, device=device))
        self.step = make_step(
            self.model,
            self.optimizer,
            loss_function(data.task_kind),
            sample_x,
            sample_y,
            graphs,
            cfg.grad_clip,
            None,
            amp,
        )
        _sync(device)
        self.setup_s = time.perf_counter() - started
        self.generator = torch.Generator().manual_seed(0)
        self.n = data.n_windows("train")
        self.order = torch.randperm(self.n, generator=self.generator).to(device)
        self.pos = 0
        self.losses = torch.zeros(4096, device=device)

    def __call__(self, i: int) -> None:
        if self.pos + self.batch > self.n:
            self.order = torch.randperm(self.n, generator=self.generator).to(self.device)
            self.pos = 0
        x, y = self.data.batch("train", self.order[self.pos : self.pos + self.batch])
        self.pos += self.batch
        self.losses[i % 4096] = self.step(x, y)
        self.scheduler.step()

    def info(self) -> dict:
        return {
            "step_kind": self.step.kind,
            "eager_reason": getattr(self.step, "reason", ""),
            "setup_s": round(self.setup_s, 3),
            "finite": bool(torch.isfinite(self.losses).all()),
        }


def measure_trainer(
    arch: Architecture, data: PreparedData, batch: int, device: torch.device, graphs: bool, mode: dict
) -> dict:
    run = TrainerRun(arch, data, batch, device, graphs)
    result = timed_steps(run, device, mode["warmup"], mode["steps"], mode["cap_s"], batch)
    return {**result, **run.info()}


def worker_main(slot: WorkerSlot, cases: list[dict], common: dict, barrier: Any) -> list[dict]:
    """One of K concurrent workers: for every case, build and capture, wait for the others, train
    the timed steps, wait for the others again (so no one builds while others are timed)."""
    torch.set_num_threads(1)
    device = torch.device(common["device"])
    data = make_data(common["rows"]).to(device)
    mode = common["mode"]
    out = []
    for case in cases:
        row: dict[str, Any] = {"case": case["key"]}
        run = None
        try:
            run = TrainerRun(arch_of(case["arch"]), data, case["batch"], device, graphs=True)
            for i in range(mode["warmup"]):
                run(i)
            _sync(device)
        except Exception as exc:  # noqa: BLE001 - reported in the row; the barrier must still be met
            row["error"] = _error(exc)
            run = None
        try:
            barrier.wait(timeout=common["barrier_s"])
            if run is not None:
                row.update(timed_steps(run, device, 0, mode["steps"], mode["worker_cap_s"], case["batch"]))
                row.update(run.info())
        except Exception as exc:  # noqa: BLE001
            row["error"] = _error(exc)
        with contextlib.suppress(Exception):
            barrier.wait(timeout=common["barrier_s"])
        del run
        _free(device)
        out.append(row)
    return out


def _error(exc: BaseException) -> str:
    if is_out_of_memory(exc):
        return "out of memory"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def flops(params: int, samples_per_s: float) -> tuple[float, float]:
    """(TFLOP/s, model FLOP utilisation against the bf16 peak)."""
    per_s = 6 * params * TOKENS * samples_per_s
    return per_s / 1e12, per_s / PEAK_BF16_FLOPS


class Report:
    def __init__(self, mode_name: str, device: torch.device, budget_s: float) -> None:
        self.mode_name, self.device = mode_name, device
        self.started = time.perf_counter()
        self.budget_s = budget_s
        self.rows: list[dict] = []

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def add(
        self, name: str, batch: int, method: str, workers: int, result: dict | None, note: str = ""
    ) -> dict:
        arch = arch_of(name)
        params = estimate(arch, SPEC)
        row: dict[str, Any] = {
            "arch": name,
            "params": params,
            "batch_size": batch,
            "method": method,
            "workers": workers,
            "samples_per_s": None,
            "skipped": note or None,
        }
        if result is not None:
            row.update(result)
        if row.get("samples_per_s"):
            row["tflops"], row["mfu"] = flops(params, row["samples_per_s"])
        self.rows.append(row)
        done = (
            f"{row['samples_per_s']:,.0f} samples/s"
            if row.get("samples_per_s")
            else f"skipped: {row['skipped']}"
        )
        print(
            f"[{time.perf_counter() - self.started:6.1f}s] {name} b{batch} {method} x{workers}: {done}",
            flush=True,
        )
        return row

    def speedups(self, smallest_batch: int) -> None:
        base = {
            (r["arch"], r["batch_size"]): r["samples_per_s"]
            for r in self.rows
            if r["method"] == "naive" and r.get("samples_per_s")
        }
        for r in self.rows:
            sps = r.get("samples_per_s")
            same = base.get((r["arch"], r["batch_size"]))
            at64 = base.get((r["arch"], smallest_batch))
            r["x_naive_same_batch"] = sps / same if sps and same else None
            r["x_naive_smallest_batch"] = sps / at64 if sps and at64 else None

    def markdown(self) -> str:
        lines = [
            f"# GPU trials ({self.mode_name}) on {device_name(self.device)}",
            "",
            "| arch | params | batch | method | workers | step | samples/s | x naive (same batch) "
            "| x naive (smallest batch) | TFLOP/s | MFU | peak GiB | estimate GiB | note |",
            "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]

        def num(v: float | None, fmt: str) -> str:
            return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

        for r in self.rows:
            note = r.get("skipped") or r.get("eager_reason") or ""
            if r.get("errors"):
                note = f"{note} {r['errors']} worker error(s)".strip()
            lines.append(
                f"| {r['arch']} | {r['params'] / 1e6:.1f}M | {r['batch_size']} | {r['method']} | {r['workers']} "
                f"| {r.get('step_kind', '')} | {num(r.get('samples_per_s'), ',.0f')} "
                f"| {num(r.get('x_naive_same_batch'), '.2f')} | {num(r.get('x_naive_smallest_batch'), '.2f')} "
                f"| {num(r.get('tflops'), '.2f')} | {num(r.get('mfu'), '.2%')} "
                f"| {num(_gib(r.get('peak_bytes')), '.2f')} | {num(_gib(r.get('estimate_bytes')), '.2f')} | {note} |"
            )
        return "\n".join(lines) + "\n"


def _gib(v: int | None) -> float | None:
    return None if v is None else v / GiB


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


def single_rows(report: Report, mode: dict, data: PreparedData, device: torch.device) -> None:
    on_device = data.to(device)
    cuda = device.type == "cuda"
    for name in mode["archs"]:
        arch = arch_of(name)
        for batch in mode["batches"]:
            # What max_memory_allocated can see: no context, no graph-pool slack, no evaluation.
            estimate_bytes = estimate_trial_memory(
                arch, SPEC, batch, amp=cuda, eval_batch_size=1, include_context=False, graphs=False
            )
            naive_estimate = estimate_trial_memory(
                arch, SPEC, batch, amp=False, eval_batch_size=1, include_context=False, graphs=False
            )
            jobs = [
                ("naive", naive_estimate, lambda a=arch, b=batch: naive(a, data, b, device, mode)),
                (
                    "trainer-eager",
                    estimate_bytes,
                    lambda a=arch, b=batch: measure_trainer(a, on_device, b, device, False, mode),
                ),
                (
                    "trainer-graphs",
                    estimate_bytes,
                    lambda a=arch, b=batch: measure_trainer(a, on_device, b, device, True, mode),
                ),
            ]
            for method, est, job in jobs:
                # A measurement takes about cap_s plus set-up; leave room for the worker phase.
                if report.left() < mode["cap_s"] + 5 + mode["reserve_s"]:
                    report.add(name, batch, method, 1, None, "time budget")
                    continue
                _free(device)
                try:
                    result = job()
                    result["peak_bytes"] = measured_peak_memory(device)
                    result["estimate_bytes"] = est
                    report.add(name, batch, method, 1, result)
                except Exception as exc:  # noqa: BLE001 - one failed row must not end the run
                    report.add(name, batch, method, 1, None, _error(exc))
                _free(device)


def worker_rows(report: Report, mode: dict, device: torch.device) -> None:
    """Group the (arch, batch) cases by worker count; one pool of processes per count."""
    _free(device)
    free = free_memory(device.index or 0) if device.type == "cuda" else None
    pools: dict[int, list[dict]] = {}
    for name in mode["workers_for"]:
        arch = arch_of(name)
        params = estimate(arch, SPEC)
        if "workers" in mode:  # smoke: fixed K
            counts = {mode["workers"]}
        else:
            biggest = max(mode["worker_batches"])
            trial = estimate_trial_memory(arch, SPEC, biggest, eval_batch_size=biggest)
            try:
                auto = len(plan_workers([0], None, {0: free}, trial, param_count=params))
            except Exception as exc:  # noqa: BLE001 - nothing fits: a skipped row says so
                for batch in mode["worker_batches"]:
                    report.add(name, batch, "workers", 0, None, str(exc))
                continue
            counts = {auto} | ({8} if params < 5e6 else set())
            print(f"{name}: plan_workers auto -> {auto} (launch bound {launch_bound_workers(params)})")
        for k in counts:
            for batch in mode["worker_batches"]:
                pools.setdefault(k, []).append({"arch": name, "batch": batch, "key": f"{name}|{batch}|{k}"})
    for k, cases in sorted(pools.items(), reverse=True):  # K=8 of the small models first
        per_case = mode["worker_cap_s"] + 10
        needed = 20 + per_case * len(cases)
        if report.left() < min(needed, 20 + per_case):
            for case in cases:
                report.add(case["arch"], case["batch"], "workers", k, None, "time budget")
            continue
        # Drop the cases that would overrun the budget (the pool gets a timeout to match).
        fit = max(1, int((report.left() - 20) // per_case))
        for case in cases[fit:]:
            report.add(case["arch"], case["batch"], "workers", k, None, "time budget")
        cases = cases[:fit]
        if device.type == "cuda":
            slots = plan_workers([device.index or 0], k, {device.index or 0: free}, 1)
        else:
            slots = [WorkerSlot(0, i, {}, i) for i in range(k)]
        barrier = spawn_context().Barrier(k)
        common = {
            "device": "cuda:0" if device.type == "cuda" else "cpu",
            "rows": mode["rows"],
            "mode": mode,
            "barrier_s": 60.0,
        }
        timeout = max(30.0, min(report.left(), 40 + per_case * len(cases)))
        outcomes = run_workers(slots, worker_main, (cases, common, barrier), timeout_s=timeout)
        for case in cases:
            rates, samples, slowest, errors, kinds = [], 0, 0.0, [], set()
            for outcome in outcomes:
                if not outcome.ok:
                    errors.append(outcome.error.strip().splitlines()[-1] if outcome.error else "failed")
                    continue
                row = next(r for r in outcome.result if r["case"] == case["key"])
                if "error" in row or not row.get("samples_per_s"):
                    errors.append(row.get("error", "no samples"))
                    continue
                rates.append(row["samples_per_s"])
                samples += row["steps"] * case["batch"]
                slowest = max(slowest, row["elapsed_s"])
                kinds.add(row["step_kind"])
            result = {
                "samples_per_s": sum(rates) if rates else None,
                "aggregate_samples_per_s": samples / slowest if slowest else None,
                "workers_ok": len(rates),
                "errors": len(errors),
                "error_messages": sorted(set(errors))[:3],
                "step_kind": "/".join(sorted(kinds)),
            }
            note = "" if rates else f"all workers failed: {'; '.join(sorted(set(errors))[:2])}"
            report.add(case["arch"], case["batch"], "workers", k, result, note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_trials.json and .md")
    parser.add_argument("--quick", action="store_true", help="about 2 minutes: 2 models, short caps")
    parser.add_argument("--smoke", action="store_true", help="tiny models, 2 steps, K=2 (tests the flow)")
    parser.add_argument("--cpu-smoke", action="store_true", help="--smoke on the CPU (no GPU needed)")
    args = parser.parse_args(argv)

    if args.cpu_smoke:
        device = torch.device("cpu")
        mode_name = "cpu-smoke"
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: nothing measured")
            return 0
        device = torch.device("cuda:0")
        mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    mode = MODES["smoke" if mode_name.endswith("smoke") else mode_name]
    if device.type == "cpu":
        torch.set_num_threads(1)

    report = Report(mode_name, device, mode["budget_s"])
    data = make_data(mode["rows"])
    print(f"{mode_name} on {device_name(device)}: {data.n_windows('train')} training windows", flush=True)
    single_rows(report, mode, data, device)
    worker_rows(report, mode, device)
    report.speedups(min(mode["batches"]))

    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "mode": mode_name,
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "peak_bf16_flops": PEAK_BF16_FLOPS,
        "tokens_per_sample": TOKENS,
        "settings": {k: v for k, v in mode.items()},
        "elapsed_s": round(time.perf_counter() - report.started, 1),
        "reference_spec_h100": REFERENCE,
        "rows": report.rows,
    }
    (args.out / "gpu_trials.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    table = report.markdown()
    (args.out / "gpu_trials.md").write_text(table)
    print(table)
    print(
        f"wrote {args.out / 'gpu_trials.json'} and {args.out / 'gpu_trials.md'} in {payload['elapsed_s']} s"
    )
    measured = [r for r in report.rows if r.get("samples_per_s")]
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
