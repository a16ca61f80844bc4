"""GPU trials: memory estimate, worker planning, the graphed training step and the GPU benchmark.

Everything here runs on the CPU: CUDA functions are monkeypatched and CUDA graph capture is
replaced by a fake that runs the captured body as its replay. The tests marked ``needs a CUDA
device`` check the same things on a real GPU.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import archsearch.training.trainer as trainer
from archsearch.architecture import Architecture, ModelSpec
from archsearch.data.sources import DataConfig, load_frame
from archsearch.data.splits import SplitConfig
from archsearch.data.tasks import TaskConfig, loss_function
from archsearch.data.windows import PreparedData, prepare
from archsearch.errors import ArchsearchError
from archsearch.plugins.patchtst import build as build_patchtst
from archsearch.plugins.patchtst_ci import build as build_patchtst_ci
from archsearch.search.workers import (
    WorkerSlot,
    launch_bound_workers,
    physical_device,
    plan_workers,
    run_workers,
)
from archsearch.training.memory import (
    CUBLAS_WORKSPACE_BYTES,
    CUDA_CONTEXT_BYTES,
    GiB,
    estimate_trial_memory,
    free_memory,
    measured_peak_memory,
    trial_memory_breakdown,
    visible_devices,
)
from archsearch.training.settings import TrainConfig
from archsearch.training.steps import EagerStep, GraphedStep, make_step
from archsearch.training.trainer import make_optimizer, seed_everything, train

REPO = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
BUILDERS = {"patchtst": build_patchtst, "patchtst-ci": build_patchtst_ci}
SPEC20 = ModelSpec(num_features=20)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- memory estimate ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["patchtst", "patchtst-ci"])
def test_states_equal_the_tensors_of_a_trained_model(variant: str) -> None:
    """Weights, gradients and AdamW state are exactly 4 + 4 + 8 bytes per parameter (the fused
    AdamW's per-tensor step counters aside)."""
    arch = Architecture(32, 2, 4, 64)
    spec = ModelSpec(num_features=5, context_length=30)
    model = BUILDERS[variant](arch, spec)
    optimizer = make_optimizer(list(model.parameters()), TrainConfig(), torch.device("cpu"))
    model(torch.randn(4, 30, 5)).sum().backward()
    optimizer.step()
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for k, v in s.items() if k != "step"]
    parts = trial_memory_breakdown(arch, spec, 4, amp=False, variant=variant)
    assert parts.param_count == sum(p.numel() for p in params)
    assert parts.params == nbytes(params)
    assert parts.gradients == nbytes(p.grad for p in params)
    assert parts.optimizer == nbytes(state)
    assert parts.amp_weights == 0
    assert (
        trial_memory_breakdown(arch, spec, 4, amp=True, variant=variant).amp_weights == 2 * parts.param_count
    )
    # The best epoch's weights stay on the device below BEST_ON_HOST_BYTES (1 GiB), not above.
    assert parts.best_weights == parts.params
    huge = trial_memory_breakdown(Architecture(2048, 40, 32, 8192), spec, 4, variant=variant)
    assert huge.best_weights == 0
    assert parts.library_workspace == 2 * CUBLAS_WORKSPACE_BYTES
    assert trial_memory_breakdown(arch, spec, 4, variant=variant, graphs=False).library_workspace == (
        CUBLAS_WORKSPACE_BYTES
    )


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd saves for backward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


@pytest.mark.parametrize("variant", ["patchtst", "patchtst-ci"])
@pytest.mark.parametrize("arch", [Architecture(64, 4, 2, 256), Architecture(128, 2, 4, 512)])
def test_activations_match_what_autograd_saves(variant: str, arch: Architecture) -> None:
    """fp32 on the CPU (no dropout: CPU masks are fp32, CUDA's one byte): the estimate is 0-30% above
    the bytes autograd actually keeps."""
    spec = ModelSpec(num_features=20, dropout=0.0)
    model = BUILDERS[variant](arch, spec).train()
    measured = saved_activation_bytes(model, torch.randn(8, 60, 20))
    estimated = trial_memory_breakdown(arch, spec, 8, amp=False, variant=variant).activations
    assert measured <= estimated <= 1.3 * measured, (measured, estimated)


def test_estimate_grows_with_batch_layers_and_width() -> None:
    base = Architecture(128, 8, 4, 512)
    m = functools.partial(estimate_trial_memory, spec=SPEC20)
    assert m(base, batch_size=64) < m(base, batch_size=256) < m(base, batch_size=1024 * 4)
    assert m(base, batch_size=256) < m(Architecture(128, 16, 4, 512), batch_size=256)
    assert m(base, batch_size=256) < m(Architecture(256, 8, 4, 1024), batch_size=256)
    assert m(base, batch_size=256, variant="patchtst") < m(base, batch_size=256, variant="patchtst-ci")
    # Micro-batches shrink activations only; fp32 activations are larger than bf16 ones.
    big = Architecture(1024, 16, 16, 4096)
    full = trial_memory_breakdown(big, SPEC20, 4096)
    micro = trial_memory_breakdown(big, SPEC20, 4096, micro_batch_size=256)
    assert micro.states == full.states and micro.activations < full.activations / 10
    assert full.activations < trial_memory_breakdown(big, SPEC20, 4096, amp=False).activations
    no_context = estimate_trial_memory(base, SPEC20, 256, include_context=False)
    assert m(base, batch_size=256) - no_context == CUDA_CONTEXT_BYTES
    # With CUDA graphs the training activations stay reserved while evaluation runs.
    eager = trial_memory_breakdown(base, SPEC20, 256, graphs=False)
    train_part = eager.activations + eager.backward_transient
    graphed = trial_memory_breakdown(base, SPEC20, 256)
    # ...and the graph's side stream has a cuBLAS workspace of its own.
    side = CUBLAS_WORKSPACE_BYTES
    assert graphed.total - eager.total == min(eager.eval_activations, train_part) + side
    assert full.as_dict()["total"] == full.total == estimate_trial_memory(big, SPEC20, 4096)
    with pytest.raises(ValueError, match="variant must be one of"):
        estimate_trial_memory(base, SPEC20, 64, variant="lstm")


def test_estimate_is_in_a_sane_range() -> None:
    """A 1.6M model at batch 256 is mostly context and workspace; a 202M one a few GiB; a 2B one
    the tens of GiB that SPEC.md measured (43 GB)."""
    small = estimate_trial_memory(Architecture(128, 8, 2, 512), SPEC20, 256)
    assert CUDA_CONTEXT_BYTES + 2 * CUBLAS_WORKSPACE_BYTES < small < 1 * GiB
    mid = estimate_trial_memory(Architecture(1024, 16, 16, 4096), SPEC20, 256)
    assert 3 * GiB < mid < 8 * GiB
    huge = estimate_trial_memory(Architecture(2048, 40, 32, 8192), SPEC20, 256)
    assert 30 * GiB < huge < 60 * GiB


# --- devices and worker planning ---------------------------------------------------------------


def test_devices_and_peaks_through_mockable_torch_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert measured_peak_memory("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_devices() == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: ((i + 1) * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 123)
    assert visible_devices() == [0, 1]
    assert [free_memory(i) for i in visible_devices()] == [GiB, 2 * GiB]
    assert measured_peak_memory("cuda:1") == 123


def test_launch_bound_heuristic() -> None:
    assert [launch_bound_workers(p) for p in (1.6e6, 19e6, 202e6, 2e9)] == [8, 4, 2, 1]
    assert launch_bound_workers(1e6, max_per_gpu=3) == 3 and launch_bound_workers(None) == 8


def test_plan_auto_small_models_fill_each_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    slots = plan_workers([0, 1], None, {0: 80 * GiB, 1: 80 * GiB}, GiB, param_count=1_600_000)
    assert [(s.device_id, s.index, s.local_index) for s in slots[:2]] == [(0, 0, 0), (0, 1, 1)]
    assert len(slots) == 16 and slots[8] == WorkerSlot(1, 8, {"CUDA_VISIBLE_DEVICES": "1"}, 0)
    assert {s.env["CUDA_VISIBLE_DEVICES"] for s in slots[:8]} == {"0"}


@pytest.mark.parametrize(
    ("free", "params", "cap", "expected"),
    [
        (10 * GiB, 1_600_000, 8, 3),  # memory bound: 10 // 3
        (80 * GiB, 19_000_000, 8, 4),  # launch bound
        (80 * GiB, 202_000_000, 8, 2),
        (80 * GiB, 2_000_000_000, 8, 1),
        (80 * GiB, 1_600_000, 6, 6),  # max_per_gpu
        (3 * GiB, 2_000_000, 8, 1),  # exactly one fits
    ],
)
def test_plan_auto_takes_the_smallest_bound(free: int, params: int, cap: int, expected: int) -> None:
    slots = plan_workers([0], None, {0: free}, 3 * GiB, max_per_gpu=cap, param_count=params)
    assert len(slots) == expected


def test_plan_explicit_count_is_honoured_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert len(plan_workers([0], 2, {0: 80 * GiB}, GiB, param_count=2e9)) == 2
    with caplog.at_level(logging.WARNING, logger="archsearch"):
        slots = plan_workers([3], 5, {3: 10 * GiB}, 3 * GiB)
    assert len(slots) == 5 and all(s.device_id == 3 for s in slots)
    assert "5 workers asked for, but only 3 trials" in caplog.text


def test_plan_nothing_fits_names_device_free_memory_and_estimate() -> None:
    with pytest.raises(
        ArchsearchError, match=r"GPU 1 has 2\.00 GiB free, but one trial needs about 5\.50 GiB"
    ):
        plan_workers([0, 1], None, {0: 80 * GiB, 1: 2 * GiB}, int(5.5 * GiB))
    with pytest.raises(ArchsearchError, match="no CUDA device is visible"):
        plan_workers([], None, {}, GiB)
    with pytest.raises(ArchsearchError, match="workers_per_gpu must be at least 1"):
        plan_workers([0], 0, {0: 80 * GiB}, GiB)


def test_child_devices_follow_this_process_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert physical_device(1, {"CUDA_VISIBLE_DEVICES": "3,5"}) == "5"
    assert physical_device(1, {}) == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    assert plan_workers([1], 1, {1: 80 * GiB}, GiB)[0].env == {"CUDA_VISIBLE_DEVICES": "7"}


def report_env(slot: WorkerSlot, key: str) -> tuple[int, str | None]:
    if slot.index == 1:
        raise RuntimeError("worker 1 fails on purpose")
    return slot.index, os.environ.get(key)


def test_run_workers_applies_env_and_reports_failures() -> None:
    slots = [WorkerSlot(0, 0, {"ARCHSEARCH_TEST_ENV": "zero"}), WorkerSlot(0, 1, {})]
    first, second = run_workers(slots, report_env, ("ARCHSEARCH_TEST_ENV",), timeout_s=60)
    assert first.ok and first.result == (0, "zero") and first.slot == slots[0]
    assert not second.ok and "worker 1 fails on purpose" in second.error


# --- the training step -------------------------------------------------------------------------


def tiny_data(kind: str = "threshold") -> PreparedData:
    frame = load_frame(DataConfig(synthetic_rows=300, synthetic_features=5))
    return prepare(frame, TaskConfig(kind=kind), SplitConfig(), horizon=3, context_length=20)


def tiny_model(variant: str, data: PreparedData, dropout: float = 0.2, seed: int = 0, **options) -> nn.Module:
    seed_everything(seed)
    spec = data.model_spec(patch_len=5, stride=5, dropout=dropout, **options)
    return BUILDERS[variant](Architecture(16, 2, 2, 32), spec)


class FakeCuda:
    """Stands in for CUDA's capture and side stream: capture runs the body once (as recording) and
    returns it as the replay; ``fail`` makes capture raise after running it."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.captures = 0
        self.in_side_stream = False
        self.side_stream_entries = 0

    def capture(self, body):
        self.captures += 1
        body()
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing (fake)")
        return body

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        self.side_stream_entries += 1
        self.in_side_stream = True
        try:
            yield
        finally:
            self.in_side_stream = False


class Counting(nn.Module):
    def __init__(self, model: nn.Module, fake: FakeCuda) -> None:
        super().__init__()
        self.model, self.fake = model, fake
        self.calls = {"side_stream": 0, "default": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls["side_stream" if self.fake.in_side_stream else "default"] += 1
        return self.model(x)


def batches(data: PreparedData, n: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(data.n_windows("train"), generator=torch.Generator().manual_seed(1))
    return [data.batch("train", order[i * size : (i + 1) * size]) for i in range(n)]


def eager_reference(model: nn.Module, data: PreparedData, steps: list) -> tuple[list[float], nn.Module]:
    optimizer = make_optimizer(list(model.parameters()), TrainConfig(), torch.device("cpu"))
    step = make_step(model.train(), optimizer, loss_function(data.task_kind), *steps[0], False, 1.0)
    torch.manual_seed(123)
    return [step(x, y).item() for x, y in steps], model


def test_factory_picks_the_eager_step_on_the_cpu_and_says_why() -> None:
    data = tiny_data()
    model = tiny_model("patchtst", data)
    optimizer = make_optimizer(list(model.parameters()), TrainConfig(), torch.device("cpu"))
    x, y = data.batch("train", torch.arange(16))
    loss_fn = loss_function("threshold")
    step = make_step(model, optimizer, loss_fn, x, y, True)
    assert isinstance(step, EagerStep) and step.reason == "not on CUDA (cpu)" and not step.static_shapes
    assert make_step(model, optimizer, loss_fn, x, y, False).reason == "CUDA graphs off"
    fake = FakeCuda()
    micro = make_step(model, optimizer, loss_fn, x, y, True, micro_batch_size=4, capture=fake.capture)
    assert isinstance(micro, EagerStep) and micro.micro_batch_size == 4
    assert micro.reason == "micro-batching is active (micro-batch 4 < batch 16)" and fake.captures == 0


@pytest.mark.parametrize(("variant", "options"), [("patchtst", {}), ("patchtst-ci", {"norm": "batch"})])
def test_graphed_step_replays_on_static_buffers_and_matches_eager(variant: str, options: dict) -> None:
    """With the fake capture the graphed step runs on the CPU: warm-up on the side stream, capture,
    state put back, then each call copies into the same static buffers and replays. Losses, weights
    and BatchNorm statistics equal the eager step's exactly (dropout included: the RNG is restored)."""
    data = tiny_data()
    steps = batches(data, 5, 16)
    reference, ref_model = eager_reference(tiny_model(variant, data, **options), data, steps)

    fake = FakeCuda()
    model = Counting(tiny_model(variant, data, **options), fake).train()
    initial = copy.deepcopy(model.state_dict())
    optimizer = make_optimizer(list(model.parameters()), TrainConfig(), torch.device("cpu"))
    torch.manual_seed(123)
    rng = torch.random.get_rng_state()
    step = make_step(
        model,
        optimizer,
        loss_function("threshold"),
        *steps[0],
        True,
        1.0,
        None,
        None,
        2,
        fake.capture,
        fake.side_stream,
    )
    assert isinstance(step, GraphedStep) and step.static_shapes and step.warmup_iters == 2
    assert model.calls == {"side_stream": 2, "default": 1}  # two warm-up steps, one capture
    assert fake.captures == 1 and fake.side_stream_entries == 1
    # Warm-up and capture left no trace: weights, buffers, optimizer state, RNG.
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    assert all(not v.any() for s in optimizer.state.values() for v in s.values())
    assert torch.equal(torch.random.get_rng_state(), rng)

    static_x, static_y = step.static_x, step.static_y
    losses = []
    for x, y in steps:
        losses.append(step(x, y).item())
        assert step.static_x is static_x and torch.equal(static_x, x) and torch.equal(static_y, y)
    assert step.replays == 5 and model.calls["default"] == 6
    assert losses == reference
    ref_state = ref_model.state_dict()
    for k, v in model.model.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    with pytest.raises(ValueError, match=r"a graphed step takes batches of shape \(16, 20, 5\)"):
        step(*data.batch("train", torch.arange(8)))


def test_failed_capture_falls_back_to_eager_from_the_untouched_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = tiny_data()
    steps = batches(data, 3, 16)
    reference, _ = eager_reference(tiny_model("patchtst", data), data, steps)
    fake = FakeCuda(fail=True)
    model = tiny_model("patchtst", data).train()
    optimizer = make_optimizer(list(model.parameters()), TrainConfig(), torch.device("cpu"))
    torch.manual_seed(123)
    with caplog.at_level(logging.WARNING, logger="archsearch"):
        step = make_step(
            model,
            optimizer,
            loss_function("threshold"),
            *steps[0],
            True,
            grad_clip=1.0,
            capture=fake.capture,
            side_stream=fake.side_stream,
        )
    assert isinstance(step, EagerStep)
    assert (
        step.reason
        == "graph capture failed: RuntimeError: operation not permitted when stream is capturing (fake)"
    )
    assert "running eagerly" in caplog.text and fake.captures == 1
    assert [step(x, y).item() for x, y in steps] == reference


def test_train_reports_the_step_and_drops_the_ragged_batch_when_graphed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = tiny_data()
    n_train = data.n_windows("train")
    cfg = TrainConfig(learning_rate=3e-3, epochs=2, batch_size=32, warmup_steps=0)
    assert n_train % 32
    eager = train(tiny_model("patchtst", data), data, cfg)
    # drop_last (the default) leaves the ragged batch out on the CPU too: one config, one training.
    assert (eager.step_kind, eager.eager_reason, eager.dropped_per_epoch) == (
        "eager",
        "not on CUDA (cpu)",
        n_train % 32,
    )
    off = train(tiny_model("patchtst", data), data, attrs_evolve(cfg, cuda_graphs=False))
    assert off.eager_reason == "CUDA graphs off"
    assert [h["train_loss"] for h in off.history] == [h["train_loss"] for h in eager.history]

    fake = FakeCuda()
    monkeypatch.setattr(
        trainer, "make_step", functools.partial(make_step, capture=fake.capture, side_stream=fake.side_stream)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "lr_scheduler.step() before optimizer.step()"
        graphed = train(tiny_model("patchtst", data), data, cfg)
    assert graphed.step_kind == "graphed" and graphed.eager_reason == ""
    assert graphed.dropped_per_epoch == n_train % 32 and fake.captures == 1
    assert graphed.epochs_run == 2 and all(math.isfinite(h["train_loss"]) for h in graphed.history)
    # The same schedule over the same kept steps as the eager run.
    assert [h["lr"] for h in graphed.history] == pytest.approx([h["lr"] for h in eager.history], rel=1e-6)


@pytest.mark.parametrize(
    "schedule",
    [{"kind": "exponential", "gamma": 0.9, "hold_epochs": 1}, {"kind": "onecycle", "pct_start": 0.4}],
    ids=["exponential", "onecycle"],
)
def test_graphed_training_follows_every_schedule(monkeypatch: pytest.MonkeyPatch, schedule: dict) -> None:
    """The graphed step reads the rate the one scheduler object writes, as the eager step does."""
    data = tiny_data()
    cfg = TrainConfig(learning_rate=3e-3, epochs=3, batch_size=32, warmup_steps=0, lr_schedule=schedule)
    eager = train(tiny_model("patchtst", data), data, cfg)
    fake = FakeCuda()
    monkeypatch.setattr(
        trainer, "make_step", functools.partial(make_step, capture=fake.capture, side_stream=fake.side_stream)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graphed = train(tiny_model("patchtst", data), data, cfg)
    assert graphed.step_kind == "graphed" and fake.captures == 1
    assert [h["lr"] for h in graphed.history] == pytest.approx([h["lr"] for h in eager.history], rel=1e-6)
    assert len({h["lr"] for h in graphed.history}) == 3


def test_drop_last_false_trains_every_window_eagerly_when_the_last_batch_is_ragged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A graphed step takes full batches only: with drop_last false and a ragged last batch the
    run falls back to the eager step and says why; with no ragged batch it stays graphed."""
    fake = FakeCuda()
    monkeypatch.setattr(
        trainer, "make_step", functools.partial(make_step, capture=fake.capture, side_stream=fake.side_stream)
    )
    data = tiny_data()
    n_train = data.n_windows("train")
    cfg = TrainConfig(learning_rate=3e-3, epochs=1, batch_size=32, warmup_steps=0, drop_last=False)
    ragged = train(tiny_model("patchtst", data), data, cfg)
    assert (ragged.step_kind, ragged.dropped_per_epoch, fake.captures) == ("eager", 0, 0)
    assert ragged.eager_reason == (
        f"drop_last is false and the last batch is ragged ({n_train % 32} of 32): "
        "a graphed step takes full batches only"
    )
    divisor = next(b for b in range(16, 64) if n_train % b == 0)
    whole = train(tiny_model("patchtst", data), data, attrs_evolve(cfg, batch_size=divisor))
    assert (whole.step_kind, whole.dropped_per_epoch, fake.captures) == ("graphed", 0, 1)


def attrs_evolve(cfg: TrainConfig, **changes) -> TrainConfig:
    import attrs

    return attrs.evolve(cfg, **changes)


# --- the benchmark script ----------------------------------------------------------------------


def run_benchmark(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_trials.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.mark.slow
def test_benchmark_cpu_smoke_writes_every_row(tmp_path: Path) -> None:
    done = run_benchmark("--cpu-smoke", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_trials.json").read_text())
    assert report["mode"] == "cpu-smoke" and report["tokens_per_sample"] == 11
    rows = {(r["arch"], r["batch_size"], r["method"], r["workers"]): r for r in report["rows"]}
    methods = [("naive", 1), ("trainer-eager", 1), ("trainer-graphs", 1), ("workers", 2)]
    expected = {(a, b, m, k) for a in ("d16 L2 ff32", "d32 L2 ff64") for b in (8, 16) for m, k in methods}
    assert set(rows) == expected
    for key, row in rows.items():
        assert row["samples_per_s"] > 0 and row["mfu"] > 0 and not row["skipped"], key
    assert rows[("d16 L2 ff32", 8, "trainer-graphs", 1)]["eager_reason"] == "not on CUDA (cpu)"
    assert rows[("d16 L2 ff32", 16, "workers", 2)]["workers_ok"] == 2
    assert rows[("d16 L2 ff32", 16, "naive", 1)]["x_naive_same_batch"] == 1.0
    table = (tmp_path / "gpu_trials.md").read_text()
    assert table.count("\n| d") == 16 and "| workers | 2 |" in table
    assert table in done.stdout


def test_most_at_once_counts_overlapping_trials() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gpu_run import most_at_once
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert most_at_once([]) == 0
    assert most_at_once([(0, 1), (1, 2), (2, 3)]) == 1  # one ends as the next starts
    assert most_at_once([(0, 10), (1, 2), (1.5, 3), (5, 6)]) == 3


@pytest.mark.slow
def test_gpu_run_dry_run_on_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu_run.py's whole flow (two real runs of the CLI, the summary) on the CPU."""
    done = subprocess.run(
        [
            sys.executable,
            "-P",
            "benchmarks/gpu_run.py",
            *("--out", str(tmp_path), "--device", "cpu"),
            *("--trials", "6", "--single", "3"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    auto, single = summary["runs"]
    assert auto["workers"]["processes"] == 2 and single["workers"]["processes"] == 1
    assert auto["trials_complete"] == 6 and single["trials_complete"] == 3
    assert 1 <= auto["trials_at_once"] <= 2 and single["trials_at_once"] == 1
    assert auto["step_kinds"] == ["eager"] and auto["devices"] == ["cpu"]
    assert auto["trials_per_hour"] > 0 and summary["speedup_trials_per_hour"] > 0
    assert "2 worker processes on CPU" in (tmp_path / "run.log").read_text()
    rows = (tmp_path / "run_trials.csv").read_text().splitlines()
    assert len(rows) == 7 and "step_kind" in rows[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_benchmark_without_cuda_measures_nothing(tmp_path: Path) -> None:
    done = run_benchmark("--out", str(tmp_path / "out"), timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "no CUDA device: nothing measured"
    assert not (tmp_path / "out").exists()


# --- on a CUDA device --------------------------------------------------------------------------


def cuda_batches(data: PreparedData, n: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.cuda(), y.cuda()) for x, y in batches(data, n, size)]


@needs_cuda
def test_graph_capture_equals_eager_losses_on_cuda() -> None:
    data = tiny_data()
    steps = cuda_batches(data, 8, 32)
    cfg = TrainConfig(learning_rate=3e-3)
    device = torch.device("cuda")
    losses = {}
    for graphs in (False, True):
        model = tiny_model("patchtst", data, dropout=0.0).to(device).train()
        optimizer = make_optimizer(list(model.parameters()), cfg, device, capturable=True)
        step = make_step(
            model, optimizer, loss_function("threshold"), *steps[0], graphs, 1.0, None, torch.bfloat16
        )
        assert step.kind == ("graphed" if graphs else "eager")
        losses[graphs] = [step(x, y).item() for x, y in steps]
    torch.testing.assert_close(losses[True], losses[False], rtol=2e-2, atol=1e-3)
    result = train(tiny_model("patchtst", data), data, TrainConfig(epochs=2, batch_size=32, device="cuda"))
    assert result.step_kind == "graphed" and result.dropped_per_epoch == data.n_windows("train") % 32
    assert all(math.isfinite(h["train_loss"]) for h in result.history)


@needs_cuda
@pytest.mark.parametrize(
    ("schedule", "warmup"),
    [({"kind": "cosine"}, 6), ({"kind": "exponential", "gamma": 0.5}, 0), ({"kind": "onecycle"}, 0)],
    ids=["cosine", "exponential", "onecycle"],
)
def test_graphed_training_follows_the_learning_rate_schedule_on_cuda(schedule: dict, warmup: int) -> None:
    """The scheduler updates the captured learning-rate tensor in place (torch >= 2.4): graphed
    and eager training give the same losses and rates under every schedule."""
    data = tiny_data()
    n = data.n_windows("train")
    batch = next(b for b in range(64, 0, -1) if n % b == 0)  # no ragged batch: the same steps
    history = {}
    for graphs in (False, True):
        result = train(
            tiny_model("patchtst", data, dropout=0.0),
            data,
            TrainConfig(
                epochs=4,
                batch_size=batch,
                learning_rate=1e-2,
                warmup_steps=warmup,
                cuda_graphs=graphs,
                device="cuda",
                lr_schedule=schedule,
            ),
        )
        assert result.step_kind == ("graphed" if graphs else "eager")
        history[graphs] = [(h["train_loss"], h["lr"]) for h in result.history]
    torch.testing.assert_close(history[True], history[False], rtol=2e-2, atol=2e-3)


def train_on_worker(slot: WorkerSlot) -> dict:
    data = tiny_data()
    result = train(tiny_model("patchtst", data), data, TrainConfig(epochs=2, batch_size=32, device="cuda"))
    return {
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_count": torch.cuda.device_count(),
        "step_kind": result.step_kind,
        "val_loss": result.best_val_loss,
    }


@needs_cuda
def test_concurrent_workers_on_cuda() -> None:
    slots = plan_workers([0], 2, {0: free_memory(0)}, GiB)
    outcomes = run_workers(slots, train_on_worker, timeout_s=300)
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    for o in outcomes:
        assert o.result["visible"] == physical_device(0) and o.result["device_count"] == 1
        assert o.result["step_kind"] == "graphed" and math.isfinite(o.result["val_loss"])


@needs_cuda
@pytest.mark.parametrize(
    ("arch", "batch"),
    [
        (Architecture(128, 8, 2, 512), 256),
        (Architecture(64, 48, 2, 256), 64),
        (Architecture(512, 6, 8, 2048), 256),
    ],
)
def test_memory_estimate_within_30_percent_of_the_measured_peak(arch: Architecture, batch: int) -> None:
    frame = load_frame(DataConfig(synthetic_rows=4000, synthetic_features=20))
    data = prepare(frame, TaskConfig(), SplitConfig(), horizon=5, context_length=60).to("cuda")
    assert data.to("cuda") is data and data.to("cuda:0") is data, "no second copy"
    # Earlier tests left cuBLAS workspaces in the allocator; the estimate counts this trial's own.
    getattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: None)()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    seed_everything(0)
    model = build_patchtst(arch, data.model_spec(patch_len=10, stride=5))
    # Eager: max_memory_allocated does not see the blocks a graph's private pool keeps.
    train(model, data, TrainConfig(epochs=1, batch_size=batch, device="cuda", cuda_graphs=False))
    peak = measured_peak_memory("cuda") - before
    spec = data.model_spec(patch_len=10, stride=5)
    estimate = estimate_trial_memory(arch, spec, batch, include_context=False, graphs=False)
    assert 0.7 * peak <= estimate <= 1.3 * peak, (peak / GiB, estimate / GiB)
