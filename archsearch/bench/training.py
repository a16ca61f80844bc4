"""Training throughput: archsearch's trainer against a plain PyTorch loop, on the CPU.

The plain loop is what most training scripts do: a ``DataLoader`` over a ``TensorDataset`` of
materialised windows, fp32, AdamW, BCE. The trainer indexes the series tensor directly (and adds
gradient clipping, the warmup-cosine schedule and the non-finite check). Both train the same
``patchtst`` model (same seed, 20 synthetic features, context 60, 11 patches) on the same number of
windows; samples/s counts training steps only, best of ``repeats`` interleaved runs (the machine
may be shared). Run ``python -m archsearch bench training [--quick]``.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from archsearch.architecture import Architecture
from archsearch.data.sources import DataConfig, load_frame
from archsearch.data.splits import SplitConfig
from archsearch.data.tasks import TaskConfig
from archsearch.data.windows import PreparedData, prepare
from archsearch.plugin.manager import get_plugins
from archsearch.training.settings import TrainConfig
from archsearch.training.trainer import seed_everything, train

ARCHITECTURES = {
    "small": Architecture(d_model=64, n_layers=2, n_heads=4, d_ff=128),
    "2M-class": Architecture(d_model=128, n_layers=8, n_heads=4, d_ff=512),
}
CONTEXT, HORIZON = 60, 5
#: The variant both loops train, reached through the plugin manager like any variant.
PATCHTST = "patchtst"


def windows(steps: int, batch_size: int) -> PreparedData:
    """Synthetic data whose training split holds exactly ``steps * batch_size`` windows."""
    n_train = steps * batch_size
    per = CONTEXT + HORIZON
    rows = n_train + per - 1
    frame = load_frame(DataConfig(synthetic_rows=max(3000, rows + 3 * per)))
    split = SplitConfig(
        method="rows",
        train_rows=(0, rows),
        val_rows=(rows, rows + per + 63),
        test_rows=(rows + per + 63, rows + 2 * per + 63),
    )
    return prepare(frame, TaskConfig(), split, HORIZON, CONTEXT)


def model_for(arch: Architecture, data: PreparedData) -> torch.nn.Module:
    seed_everything(0)
    return get_plugins().variant(PATCHTST).build(arch, data.model_spec(dropout=0.1))


def plain_loop(arch: Architecture, data: PreparedData, batch_size: int) -> float:
    """Samples/s of one epoch of a textbook loop."""
    model = model_for(arch, data)
    x, y = data.x_train.clone(), data.y_train.clone()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    start = time.perf_counter()
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
    return len(x) / (time.perf_counter() - start)


def trainer(arch: Architecture, data: PreparedData, batch_size: int) -> float:
    model = model_for(arch, data)
    cfg = TrainConfig(learning_rate=3e-4, epochs=1, batch_size=batch_size, warmup_steps=0, device="cpu")
    return train(model, data, cfg).samples_per_s


def run(quick: bool = False, repeats: int = 3, threads: int | None = None) -> list[dict]:
    """One row per (architecture, batch size): samples/s of the plain loop and of the trainer
    (``threads``: torch's CPU threads, default torch's own choice)."""
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    for name, arch in ARCHITECTURES.items():
        for batch_size in (64, 256):
            samples = (1024 if name == "small" else 512) * (1 if quick else 4)
            data = windows(max(2, samples // batch_size), batch_size)
            trainer(arch, data, batch_size)  # warm up (first-call imports and allocations)
            plain, ours = [], []
            for _ in range(repeats):
                plain.append(plain_loop(arch, data, batch_size))
                ours.append(trainer(arch, data, batch_size))
            rows.append(
                {
                    "architecture": f"{name} {arch.key}",
                    "params": get_plugins().variant(PATCHTST).estimate(arch, data.model_spec()),
                    "batch_size": batch_size,
                    "windows": data.n_windows("train"),
                    "plain_samples_per_s": max(plain),
                    "trainer_samples_per_s": max(ours),
                    "speedup": max(ours) / max(plain),
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "",
        "| architecture | params | batch | windows | plain loop, samples/s | trainer, samples/s | speedup |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['architecture']} | {r['params'] / 1e6:.2f}M | {r['batch_size']} | {r['windows']} "
            f"| {r['plain_samples_per_s']:,.0f} | {r['trainer_samples_per_s']:,.0f} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def suite(quick: bool) -> dict:
    """The ``training`` suite: our trainer vs a plain loop on the CPU (1 thread, as trials run)."""
    rows = run(quick=quick, repeats=2 if quick else 3, threads=1)
    return {"rows": rows, "markdown": markdown(rows), "plots": {}}
