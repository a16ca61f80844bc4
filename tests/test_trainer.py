"""The trainer: it learns, it is deterministic, and it fails the way a search engine needs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from archsearch.architecture import Architecture
from archsearch.data.sources import DataConfig, load_frame
from archsearch.data.splits import SplitConfig
from archsearch.data.tasks import TaskConfig, loss_function
from archsearch.data.windows import PreparedData, prepare
from archsearch.device import resolve_device
from archsearch.errors import ArchsearchError, TrialFailed
from archsearch.plugins.patchtst import build as build_patchtst
from archsearch.plugins.patchtst_ci import build as build_patchtst_ci
from archsearch.training.schedules import epoch_rates, make_scheduler
from archsearch.training.settings import EpochResult, LRSchedule, TrainConfig
from archsearch.training.steps import accumulate_gradients, retry_on_oom
from archsearch.training.trainer import autocast_dtype, evaluate, seed_everything, train, warmup_cosine


@pytest.fixture(autouse=True)
def one_thread():
    """Small models train fastest on one thread, and much faster than on two when another process
    shares the two cores (intra-op threads then wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BUILDERS = {"patchtst": build_patchtst, "patchtst-ci": build_patchtst_ci}
SMALL = Architecture(d_model=16, n_layers=2, n_heads=2, d_ff=32)


def small_data(
    kind: str = "threshold", rows: int = 400, features: int = 6, context: int = 20, horizon: int = 3
):
    frame = load_frame(DataConfig(synthetic_rows=rows, synthetic_features=features))
    return prepare(frame, TaskConfig(kind=kind), SplitConfig(), horizon=horizon, context_length=context)


def make_model(
    variant: str, data: PreparedData, arch: Architecture = SMALL, seed: int = 0, **options
) -> nn.Module:
    seed_everything(seed)
    options = {"patch_len": 5, "stride": 5, "dropout": 0.0, **options}
    return BUILDERS[variant](arch, data.model_spec(**options))


def fast(**options) -> TrainConfig:
    return TrainConfig(**{"learning_rate": 3e-3, "epochs": 2, "batch_size": 32, "warmup_steps": 0, **options})


# --- learning -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["patchtst", "patchtst-ci"])
@pytest.mark.parametrize("kind", ["threshold", "forecast"])
def test_overfits_a_tiny_batch(variant: str, kind: str) -> None:
    context, horizon = 20, 3
    frame = load_frame(DataConfig(synthetic_rows=200, synthetic_features=5))
    per = context + horizon
    split = SplitConfig(
        method="rows", train_rows=(0, per + 15), val_rows=(100, 100 + per), test_rows=(150, 150 + per)
    )
    data = prepare(frame, TaskConfig(kind=kind, threshold=0.005), split, horizon, context)
    assert data.n_windows("train") == 16
    if kind == "threshold":
        assert 0 < data.y_train.sum() < 16  # both classes to tell apart
    model = make_model(variant, data, Architecture(32, 2, 4, 64))
    result = train(model, data, TrainConfig(learning_rate=3e-3, epochs=80, batch_size=16, warmup_steps=0))
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert last <= 0.1 * first, f"{variant}/{kind}: loss fell from {first:.4f} to only {last:.4f}"


def test_patchtst_beats_majority_class_on_synthetic_threshold() -> None:
    data = prepare(load_frame(DataConfig()), TaskConfig(), SplitConfig(), horizon=5, context_length=60)
    model = make_model("patchtst", data, Architecture(32, 2, 4, 64), patch_len=10, stride=5)
    cfg = TrainConfig(learning_rate=3e-3, epochs=4, batch_size=128, warmup_steps=10)
    result = train(model, data, cfg)
    assert result.best_val_loss < 0.95 * data.baseline_loss
    assert result.val_metrics["auc"] > 0.65
    assert result.val_metrics["accuracy"] > max(
        result.val_metrics["positive_rate"], 1 - result.val_metrics["positive_rate"]
    )
    # The model holds the best epoch's weights, and the test split is scored with them.
    assert evaluate(model, data, "val")[0] == pytest.approx(result.best_val_loss, rel=1e-5)
    assert evaluate(model, data, "test")[0] == pytest.approx(result.test_loss, rel=1e-5)
    assert set(result.test_metrics) == {"accuracy", "auc", "positive_rate", "predicted_positive_rate"}


def test_patchtst_ci_beats_last_value_on_synthetic_forecast() -> None:
    data = prepare(
        load_frame(DataConfig()), TaskConfig(kind="forecast"), SplitConfig(), horizon=5, context_length=30
    )
    model = make_model("patchtst-ci", data, Architecture(16, 1, 4, 32), patch_len=10, stride=5)
    result = train(model, data, TrainConfig(learning_rate=1e-2, epochs=4, batch_size=128, warmup_steps=10))
    assert result.best_val_loss < 0.9 * data.baseline_loss
    assert result.baseline_loss == data.baseline_loss
    assert 0 < result.val_metrics["mae"] < 1


# --- determinism and micro-batching -----------------------------------------------------------


def test_same_seed_same_losses_other_seed_differs() -> None:
    data = small_data()
    runs = []
    for seed in (0, 0, 1):
        model = make_model("patchtst", data, seed=seed, dropout=0.2)
        runs.append((train(model, data, fast(seed=seed)), model.state_dict()))
    (a, state_a), (b, state_b), (c, _) = runs
    assert [(h["train_loss"], h["val_loss"]) for h in a.history] == [
        (h["train_loss"], h["val_loss"]) for h in b.history
    ]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert a.history[0]["train_loss"] != c.history[0]["train_loss"]


@pytest.mark.parametrize("variant", ["patchtst", "patchtst-ci"])
def test_micro_batches_give_the_full_batch_gradient(variant: str) -> None:
    data = small_data("forecast")
    model = make_model(variant, data, norm="layer")
    twin = copy.deepcopy(model)
    x, y = data.batch("train", torch.arange(30))
    loss_fn = loss_function("forecast")
    full = accumulate_gradients(model, x, y, loss_fn, micro_batch_size=30)
    parts = accumulate_gradients(twin, x, y, loss_fn, micro_batch_size=7)  # 7, 7, 7, 7, 2
    assert parts.item() == pytest.approx(full.item(), rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_micro_batched_training_matches_full_batches() -> None:
    data = small_data()
    full = train(make_model("patchtst", data), data, fast())
    micro = train(make_model("patchtst", data), data, fast(micro_batch_size=8))
    assert micro.micro_batch_size == 8
    for h_full, h_micro in zip(full.history, micro.history, strict=True):
        assert h_micro["train_loss"] == pytest.approx(h_full["train_loss"], rel=1e-4)
        assert h_micro["val_loss"] == pytest.approx(h_full["val_loss"], rel=1e-4)


# --- out of memory, non-finite losses, callbacks, early stopping ------------------------------


class FakeOOM(nn.Module):
    """Raises CUDA's out-of-memory error for training batches larger than ``limit``."""

    def __init__(self, model: nn.Module, limit: int) -> None:
        super().__init__()
        self.model = model
        self.limit = limit
        self.refused: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > self.limit:
            self.refused.append(x.shape[0])
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fake, batch {x.shape[0]})")
        return self.model(x)


def test_out_of_memory_halves_the_micro_batch_and_completes() -> None:
    data = small_data()
    model = FakeOOM(make_model("patchtst", data), limit=8)
    result = train(model, data, fast())
    assert model.refused == [32, 16]  # halved twice on the first step, then kept at 8
    assert result.micro_batch_size == 8 and result.oom_retries == 1
    reference = train(make_model("patchtst", data), data, fast(micro_batch_size=8))
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in reference.history]


def test_retry_on_oom_unit() -> None:
    calls: list[int] = []
    cleanups: list[int] = []

    def step(size: int) -> str:
        calls.append(size)
        if size > 3:
            raise torch.cuda.OutOfMemoryError("fake")
        return f"ran at {size}"

    assert retry_on_oom(step, 16, cleanup=lambda: cleanups.append(1)) == ("ran at 2", 2)
    assert calls == [16, 8, 4, 2] and len(cleanups) == 3

    def always(size: int) -> None:
        raise torch.cuda.OutOfMemoryError("fake")

    with pytest.raises(TrialFailed, match=r"out of memory at micro-batch 1 \(training step\)"):
        retry_on_oom(always, 5)
    sizes: list[int] = []

    def mps(size: int) -> int:
        sizes.append(size)
        if size > 4:
            raise RuntimeError("MPS backend out of memory (fake)")
        return size

    assert retry_on_oom(mps, 10) == (2, 2) and sizes == [10, 5, 2]
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other runtime errors pass through
        retry_on_oom(lambda size: (_ for _ in ()).throw(RuntimeError("shape mismatch")), 4)
    with pytest.raises(ValueError, match="not an OOM"):
        retry_on_oom(lambda size: (_ for _ in ()).throw(ValueError("not an OOM")), 4)


class NaNAfter(nn.Module):
    """Outputs NaN from the ``n``-th training forward pass on."""

    def __init__(self, model: nn.Module, n: int) -> None:
        super().__init__()
        self.model = model
        self.n = n
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.n:
                return out * float("nan")
        return out


def test_non_finite_loss_fails_the_trial() -> None:
    data = small_data()
    steps = data.n_windows("train") // 32  # drop_last: full batches only
    model = NaNAfter(make_model("patchtst", data), n=steps + 2)  # epoch 2, step 2
    with pytest.raises(TrialFailed, match=r"^non-finite training loss at epoch 2 step 2$"):
        train(model, data, fast(epochs=3))


def test_callback_sees_every_epoch_and_its_exception_propagates() -> None:
    class Pruned(Exception):
        pass

    seen: list[EpochResult] = []
    raised = Pruned("prune at epoch 2")

    def on_epoch(result: EpochResult) -> None:
        seen.append(result)
        if result.epoch == 2:
            raise raised

    data = small_data()
    with pytest.raises(Pruned) as info:
        train(make_model("patchtst", data), data, fast(epochs=5), on_epoch=on_epoch)
    assert info.value is raised
    assert [r.epoch for r in seen] == [1, 2]
    assert all(math.isfinite(r.train_loss) and math.isfinite(r.val_loss) for r in seen)
    assert set(seen[0].metrics) == {"accuracy", "auc", "positive_rate", "predicted_positive_rate"}


def test_best_epoch_weights_are_restored() -> None:
    data = small_data()
    model = make_model("patchtst", data)

    def spoil(result: EpochResult) -> None:  # runs after the best weights were copied
        if result.epoch == 2:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 3)

    result = train(model, data, fast(epochs=3, learning_rate=1e-4), on_epoch=spoil)
    assert result.best_epoch <= 2 and result.epochs_run == 3
    assert result.history[2]["val_loss"] > result.best_val_loss
    assert evaluate(model, data, "val")[0] == pytest.approx(result.best_val_loss, rel=1e-6)
    assert result.train_loss == result.history[result.best_epoch - 1]["train_loss"]


class Frozen(nn.Module):
    """A model that cannot learn: its only trainable parameter has zero gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.requires_grad_(False)
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + 0 * self.unused


def test_early_stopping() -> None:
    data = small_data()
    result = train(Frozen(make_model("patchtst", data)), data, fast(epochs=10, patience=2))
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert len({h["val_loss"] for h in result.history}) == 1


def test_result_fields_and_schedule() -> None:
    data = small_data()
    cfg = fast(epochs=3, warmup_steps=4, learning_rate=1e-3)
    result = train(make_model("patchtst", data), data, cfg)
    assert result.device == "cpu" and result.duration_s > 0 and result.samples_per_s > 0
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    # "lr" is the rate of each epoch's last step: the cosine over every kept step, near 0 at the end.
    steps = data.n_windows("train") // 32
    factor = warmup_cosine(4, 3 * steps)
    assert [h["lr"] for h in result.history] == pytest.approx(
        [cfg.learning_rate * factor(e * steps - 1) for e in (1, 2, 3)], rel=1e-6
    )
    assert 0 < result.history[-1]["lr"] < 0.01 * cfg.learning_rate
    assert math.isfinite(result.test_loss) and 0 <= result.test_metrics["accuracy"] <= 1
    assert result.as_dict()["best_val_loss"] == result.best_val_loss


def test_warmup_cosine() -> None:
    f = warmup_cosine(4, 14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(9) == pytest.approx(0.5) and f(14) == 0.0 and f(20) == 0.0
    assert all(f(s) >= f(s + 1) for s in range(4, 14))
    assert warmup_cosine(0, 10)(0) == 1.0


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == (
        "cuda" if torch.cuda.is_available() else resolve_device("auto").type
    )
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(
            ArchsearchError, match="device 'cuda' was asked for, but this torch build sees no CUDA"
        ):
            resolve_device("cuda")
    with pytest.raises(ArchsearchError, match="'gpu0' is not a device name"):
        resolve_device("gpu0")


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"learning_rate": 0.0}, "learning_rate must be positive"),
        ({"epochs": 0}, "epochs must be positive"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
        ({"weight_decay": -1e-4}, "weight_decay must not be negative"),
        ({"micro_batch_size": 0}, "micro_batch_size must be positive"),
    ],
)
def test_train_config_validation(options: dict, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        TrainConfig(**options)


def test_compile_is_optional_and_its_time_is_reported(monkeypatch) -> None:
    """``compile=True`` wraps the model with ``torch.compile`` once (stubbed here: compiling on
    the CPU takes a minute), times the first step, and turns CUDA graphs off; results match."""
    compiled = []

    def fake_compile(model):
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    data = small_data()
    plain = train(make_model("patchtst", data), data, fast())
    result = train(make_model("patchtst", data), data, fast(compile=True))
    assert len(compiled) == 1
    assert result.compile_s > 0 and plain.compile_s == 0.0
    assert result.step_kind == "eager" and result.eager_reason == "torch.compile is on"
    assert [h["train_loss"] for h in result.history] == [h["train_loss"] for h in plain.history]


# --- learning-rate schedules, drop_last, precision --------------------------------------------


def flat(pairs: list[tuple[float, float]]) -> list[float]:
    return [r for pair in pairs for r in pair]


def step_rates(cfg: TrainConfig, steps_per_epoch: int, lr: float | torch.Tensor) -> list[float]:
    """The rate of every step under ``make_scheduler``, on an optimizer whose rate is ``lr``."""
    param = nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=lr)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    rates = []
    for _ in range(steps_per_epoch * cfg.epochs):
        if isinstance(lr, torch.Tensor):
            assert optimizer.param_groups[0]["lr"] is lr  # filled in place, never replaced
        rates.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        scheduler.step()
    return rates


def onecycle_rate(lr: float, step: int, total: int, pct_start: float) -> float:
    """torch's OneCycleLR (cosine annealing, two phases, no momentum) written out."""
    start, peak, end = lr / 25, lr, lr / 25 / 1e4
    up_end = pct_start * total - 1
    if step <= up_end:
        a, b, pct = start, peak, step / up_end
    else:
        a, b, pct = peak, end, (step - up_end) / (total - 1 - up_end)
    return b + (a - b) / 2 * (1 + math.cos(math.pi * pct))


@pytest.mark.parametrize(
    ("schedule", "warmup", "expected"),
    [
        # type3: epochs 1..4 at the base rate, then x0.9 per epoch.
        ({"kind": "exponential", "gamma": 0.9, "hold_epochs": 4}, 0, lambda k, s, n: 0.9 ** max(0, k - 4)),
        # The default hold_epochs 1: torch's ExponentialLR stepped per epoch.
        ({"kind": "exponential", "gamma": 0.5}, 0, lambda k, s, n: 0.5 ** (k - 1)),
        ({"kind": "constant"}, 0, lambda k, s, n: 1.0),
        ({"kind": "constant"}, 6, lambda k, s, n: min(1.0, (s + 1) / 6)),
        (
            {"kind": "exponential", "gamma": 0.8, "hold_epochs": 1},
            3,
            lambda k, s, n: min(1, (s + 1) / 3) * 0.8 ** (k - 1),
        ),
        ({"kind": "cosine"}, 2, lambda k, s, n: warmup_cosine(2, n)(s)),
    ],
    ids=["type3", "exponential", "constant", "constant-warmup", "exponential-warmup", "cosine"],
)
def test_each_schedule_follows_its_formula_per_step(schedule: dict, warmup: int, expected) -> None:
    cfg = TrainConfig(learning_rate=1e-3, epochs=7, warmup_steps=warmup, lr_schedule=schedule)
    steps = 4
    rates = flat(epoch_rates(cfg, steps))
    want = flat(
        [
            tuple(1e-3 * expected(k, s, steps * 7) for s in ((k - 1) * steps, k * steps - 1))
            for k in range(1, 8)
        ]
    )
    assert rates == pytest.approx(want, rel=1e-9)


def test_onecycle_is_torchs_one_cycle_per_batch() -> None:
    cfg = TrainConfig(learning_rate=1e-3, epochs=5, warmup_steps=0, lr_schedule={"kind": "onecycle"})
    steps = 10
    scheduler_rates = flat(epoch_rates(cfg, steps))
    want = flat(
        [
            (onecycle_rate(1e-3, (k - 1) * steps, 50, 0.3), onecycle_rate(1e-3, k * steps - 1, 50, 0.3))
            for k in range(1, 6)
        ]
    )
    assert scheduler_rates == pytest.approx(want, rel=1e-6)
    assert scheduler_rates[0] == pytest.approx(4e-5) and scheduler_rates[-1] == pytest.approx(4e-9)


@pytest.mark.parametrize("kind", ["cosine", "constant", "exponential", "onecycle"])
def test_every_schedule_fills_a_tensor_learning_rate_in_place(kind: str) -> None:
    """A CUDA graph reads the optimizer's learning-rate tensor at its captured address: every
    schedule writes into that tensor, never replaces it, and gives the same rates as with a
    float rate (here a CPU tensor stands in for the capturable optimizer's CUDA one)."""
    cfg = TrainConfig(learning_rate=1e-3, epochs=6, warmup_steps=0, lr_schedule={"kind": kind})
    in_place = step_rates(cfg, 5, torch.tensor(1e-3))
    assert in_place == pytest.approx(step_rates(cfg, 5, 1e-3), rel=1e-6)
    assert in_place[::5] == pytest.approx([first for first, _ in epoch_rates(cfg, 5)], rel=1e-6)
    if kind == "constant":
        assert in_place == pytest.approx([1e-3] * 30)
    else:
        assert len(set(in_place)) > 5


def test_training_follows_the_exponential_schedule() -> None:
    data = small_data()
    cfg = fast(
        epochs=6, learning_rate=1e-3, lr_schedule={"kind": "exponential", "gamma": 0.9, "hold_epochs": 4}
    )
    result = train(make_model("patchtst", data), data, cfg)
    # "lr" is the rate of each epoch's last step: epoch k trains at lr * 0.9 ** max(0, k - 4).
    assert [h["lr"] for h in result.history] == pytest.approx(
        [1e-3 * 0.9 ** max(0, k - 4) for k in range(1, 7)]
    )


def test_drop_last_is_the_same_on_every_device_and_evaluation_scores_every_window() -> None:
    data = small_data()
    n_train = data.n_windows("train")
    assert n_train % 32
    dropped = train(make_model("patchtst", data), data, fast())
    kept = train(make_model("patchtst", data), data, fast(drop_last=False))
    assert (dropped.dropped_per_epoch, kept.dropped_per_epoch) == (n_train % 32, 0)
    assert dropped.history[0]["train_loss"] != kept.history[0]["train_loss"]
    assert kept.eager_reason.startswith("drop_last is false and the last batch is ragged")
    # Evaluation is not batched away: the test loss is that of every test window.
    model = make_model("patchtst", data)
    result = train(model, data, fast(eval_batch_size=7))
    assert evaluate(model, data, "test", batch_size=10_000)[0] == pytest.approx(result.test_loss, rel=1e-5)


def test_precision_is_chosen_and_recorded() -> None:
    data = small_data()
    auto = train(make_model("patchtst", data), data, fast(epochs=1))
    fp32 = train(make_model("patchtst", data), data, fast(epochs=1, precision="fp32"))
    bf16 = train(make_model("patchtst", data), data, fast(epochs=1, precision="bf16"))
    assert (auto.precision, fp32.precision, bf16.precision) == ("fp32", "fp32", "bf16")
    assert auto.history[0]["train_loss"] == fp32.history[0]["train_loss"]
    assert bf16.history[0]["train_loss"] != fp32.history[0]["train_loss"]


def test_autocast_dtype_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype("auto", cuda) == torch.bfloat16 == autocast_dtype("bf16", cuda)
    assert autocast_dtype("fp32", cuda) is None and autocast_dtype("auto", torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Old GPU")
    assert autocast_dtype("auto", cuda) is None
    with pytest.raises(TrialFailed, match="precision bf16: Old GPU does not support bfloat16"):
        autocast_dtype("bf16", cuda)


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"lr_schedule": {"kind": "step"}}, "kind must be one of cosine, constant, exponential, onecycle"),
        ({"lr_schedule": {"kind": "exponential", "gamma": 0.0}}, r"gamma must be a number in \(0, 1\]"),
        (
            {"lr_schedule": {"kind": "exponential", "hold_epochs": -1}},
            "hold_epochs must be a whole number >= 0",
        ),
        ({"lr_schedule": {"kind": "onecycle", "pct_start": 1.0}}, r"pct_start must be a number in \(0, 1\)"),
        (
            {"lr_schedule": {"kind": "constant", "pct_start": 0.3}},
            "pct_start must not be set with kind constant",
        ),
        (
            {"lr_schedule": {"kind": "onecycle"}, "warmup_steps": 5},
            "warmup_steps must be 0 with lr_schedule kind onecycle",
        ),
        ({"precision": "fp16"}, "precision must be one of auto, bf16, fp32"),
    ],
)
def test_new_train_config_validation(options: dict, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        TrainConfig(**options)


def test_schedule_defaults_of_each_kind() -> None:
    assert TrainConfig().lr_schedule == LRSchedule("cosine", None, None, None)
    assert LRSchedule("exponential") == LRSchedule("exponential", gamma=0.9, hold_epochs=1)
    assert LRSchedule("onecycle").pct_start == 0.3
    assert TrainConfig(lr_schedule={"kind": "constant"}).lr_schedule == LRSchedule("constant")
    assert (TrainConfig().drop_last, TrainConfig().precision) == (True, "auto")
