"""A tabular benchmark of real training results, and cheap replays of search strategies on it.

``generate`` trains every architecture of a small budget's band on real data (SPY, threshold task)
under several training configurations and seeds, with archsearch's own data pipeline and trainer,
and appends one CSV row per training (it resumes: rows already there are skipped). Replays then
let samplers, encodings and allocations choose (architecture, training configuration) pairs and
read the result from the table, so hundreds of searches cost seconds.
"""

from __future__ import annotations

import csv
import itertools
import math
import time
from pathlib import Path
from statistics import fmean
from typing import Any

import attrs

from archsearch.architecture import Architecture, ArchSpace, ModelSpec

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "benchmarks" / "data" / "architectures_spy_100K.csv"
SPY = REPO.parent / "shared" / "data" / "SPY_daily.csv"
COMMAND = "python -m archsearch bench architectures --generate"

BUDGET = 100_000
HORIZON = 3
EPOCHS = 5
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
BATCH_SIZES = (128,)
SEEDS = (0, 1)
SPACE = ArchSpace(
    d_model=(16, 24, 32, 48, 64, 96, 128),
    n_layers=(1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24),
    n_heads=(2, 4),
    d_ff_ratios=(2, 4),
    head_rule="head-dim-64",
)
FIELDS = (
    "arch",
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "param_count",
    "learning_rate",
    "batch_size",
    "seed",
    "val_loss",
    "train_loss",
    "best_epoch",
    "duration_s",
)


def table_setup(data_path: Path = SPY) -> tuple[Any, list[Architecture]]:
    from archsearch.budget_grid import get_architectures_for_budget
    from archsearch.data import DataConfig, load_frame
    from archsearch.dataset import prepare
    from archsearch.splits import SplitConfig
    from archsearch.tasks import TaskConfig

    frame = load_frame(DataConfig(source=str(data_path), derived_features=True))
    data = prepare(frame, TaskConfig(kind="threshold", threshold=0.01), SplitConfig(), HORIZON, 60)
    archs = get_architectures_for_budget(BUDGET, SPACE, ModelSpec(num_features=data.num_features))
    return data, archs


def generate(path: Path = TABLE, data_path: Path = SPY, log: Any = print) -> Path:
    """Train every (architecture, learning rate, batch size, seed) of the table; resumable."""
    import torch

    from archsearch.plugins.patchtst import build
    from archsearch.trainer import TrainConfig, seed_everything, train

    torch.set_num_threads(1)
    data, archs = table_setup(data_path)
    done: set[tuple[str, str, str, str]] = set()
    if path.exists():
        with path.open(newline="") as f:
            done = {(r["arch"], r["learning_rate"], r["batch_size"], r["seed"]) for r in csv.DictReader(f)}
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        jobs = list(itertools.product(archs, LEARNING_RATES, BATCH_SIZES, SEEDS))
        for i, (arch, lr, batch, seed) in enumerate(jobs):
            if (arch.key, str(lr), str(batch), str(seed)) in done:
                continue
            seed_everything(seed)
            model = build(arch, ModelSpec(num_features=data.num_features, dropout=0.1))
            config = TrainConfig(
                learning_rate=lr,
                epochs=EPOCHS,
                batch_size=batch,
                weight_decay=1e-4,
                warmup_steps=0,
                dropout=0.1,
                seed=seed,
                device="cpu",
            )
            start = time.perf_counter()
            result = train(model, data, config)
            row = {
                "arch": arch.key,
                **arch.as_dict(),
                "learning_rate": lr,
                "batch_size": batch,
                "seed": seed,
                "val_loss": result.best_val_loss,
                "train_loss": result.train_loss,
                "best_epoch": result.best_epoch,
                "duration_s": round(time.perf_counter() - start, 2),
            }
            writer.writerow(row)
            f.flush()
            log(
                f"[{i + 1}/{len(jobs)}] {arch.key} lr={lr} batch={batch} seed={seed}: val {result.best_val_loss:.5f}"
            )
    return path


@attrs.frozen
class Table:
    """The mean val loss of each (architecture, configuration) over seeds, and per seed."""

    archs: list[Architecture]
    configs: list[tuple[float, int]]
    by_seed: dict[tuple[str, tuple[float, int]], list[float]]

    @property
    def optimum(self) -> float:
        return min(fmean(v) for v in self.by_seed.values())

    def value(self, arch: Architecture, config: tuple[float, int], seed: int) -> float:
        values = self.by_seed[(arch.key, config)]
        return values[seed % len(values)]


def load_table(path: Path = TABLE) -> Table:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    archs: dict[str, Architecture] = {}
    by_seed: dict[tuple[str, tuple[float, int]], list[float]] = {}
    configs: set[tuple[float, int]] = set()
    for r in sorted(rows, key=lambda r: int(r["seed"])):
        arch = Architecture(
            int(r["d_model"]), int(r["n_layers"]), int(r["n_heads"]), int(r["d_ff"]), int(r["param_count"])
        )
        archs[arch.key] = arch
        config = (float(r["learning_rate"]), int(r["batch_size"]))
        configs.add(config)
        by_seed.setdefault((arch.key, config), []).append(float(r["val_loss"]))
    complete = {k for k in archs if all((k, c) in by_seed for c in configs)}
    ordered = sorted((archs[k] for k in complete), key=lambda a: (a.param_count, a.key))
    return Table(ordered, sorted(configs), {k: v for k, v in by_seed.items() if k[0] in complete})


# -- replays ---------------------------------------------------------------------------------------
@attrs.frozen
class Strategy:
    """A way to search: a sampler, an architecture encoding, and whether coverage comes first."""

    label: str
    sampler: str
    encoding: str
    coverage: bool
    options: tuple[tuple[str, Any], ...] = ()


STRATEGIES = (
    Strategy("random", "random", "index", False),
    Strategy("tpe, index (the plan's arch_idx)", "tpe", "index", False),
    Strategy("tpe, structured", "tpe", "structured", False),
    Strategy("coverage + tpe, index", "tpe", "index", True),
    Strategy("coverage + tpe, structured", "tpe", "structured", True),
    Strategy("skopt (ET), structured", "skopt", "structured", False, (("base_estimator", "ET"),)),
)


def replay(table: Table, strategy: Strategy, seed: int, n_trials: int, plugins: Any) -> list[float]:
    """Regret of the recommended (best observed) pair after each trial: its mean val loss over
    the table's seeds minus the table's best mean."""
    import optuna

    from archsearch.encodings import make_encoding
    from archsearch.engine import coverage_order

    encoding = make_encoding(strategy.encoding, table.archs)
    sampler = plugins.sampler(strategy.sampler).factory(dict(strategy.options), seed)
    study = optuna.create_study(sampler=sampler)
    if strategy.coverage:
        for arch in coverage_order(table.archs, 1):
            study.enqueue_trial(encoding.params(arch))
    lrs = sorted({c[0] for c in table.configs})
    batch = table.configs[0][1]
    optimum = table.optimum
    best_seen, best_true, regrets = math.inf, math.inf, []
    for _ in range(n_trials):
        trial = study.ask()
        arch = encoding.suggest(trial)
        lr = trial.suggest_categorical("learning_rate", lrs)
        observed = table.value(arch, (lr, batch), seed + trial.number)
        study.tell(trial, observed)
        if observed < best_seen:
            best_seen = observed
            best_true = fmean(table.by_seed[(arch.key, (lr, batch))])
        regrets.append(best_true - optimum)
    return regrets


def suite(quick: bool, path: Path = TABLE) -> dict:
    import optuna

    from archsearch.plugin_manager import get_plugin_manager

    if not path.exists():
        from archsearch.errors import ArchsearchError

        raise ArchsearchError(
            f"the tabular benchmark {path} is missing; create it with `{COMMAND}` (about an hour on 2 cores)"
        )
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = load_table(path)
    plugins = get_plugin_manager(autoload=False)
    n_trials = 40
    seeds = 8 if quick else 30
    curves: dict[str, list[list[float]]] = {}
    rows = []
    import warnings

    for strategy in STRATEGIES:
        n = max(3, seeds // 4) if strategy.sampler == "skopt" else seeds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs = [replay(table, strategy, s, n_trials, plugins) for s in range(n)]
        curves[strategy.label] = runs
        row = {"strategy": strategy.label, "seeds": n}
        for at in (10, 20, 30, 40):
            values = sorted(r[at - 1] for r in runs)
            row[f"regret@{at}"] = values[len(values) // 2]
            row[f"found@{at}"] = sum(v == 0 for v in values) / len(values)
        rows.append(row)
    n_pairs = len(table.archs) * len(table.configs)
    lines = [
        f"Table: {path.name}: {len(table.archs)} architectures x {len(table.configs)} training configurations"
        f" ({n_pairs} pairs) x 2 seeds, SPY threshold task, budget 100K; best mean val loss {table.optimum:.5f}.",
        "A replay observes one seed's result per trial and recommends its best observation; regret is that"
        " pair's mean val loss minus the best mean. Median over replay seeds; 'found' is the share of replays"
        " whose recommendation is the best pair.",
        "",
        "| strategy | seeds | regret@10 | regret@20 | regret@30 | regret@40 | found@20 | found@40 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['strategy']} | {r['seeds']} | {r['regret@10']:.5f} | {r['regret@20']:.5f} | {r['regret@30']:.5f}"
            f" | {r['regret@40']:.5f} | {r['found@20']:.0%} | {r['found@40']:.0%} |"
            for r in rows
        ),
    ]
    return {"rows": rows, "markdown": "\n".join(lines), "plots": {"architectures.png": _plot(curves)}}


def _plot(curves: dict[str, list[list[float]]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, runs in curves.items():
        data = np.array(runs)
        x = np.arange(1, data.shape[1] + 1)
        ax.plot(x, np.mean(data, axis=0), label=label)
    ax.set_xlabel("trials")
    ax.set_ylabel("mean regret (val BCE)")
    ax.set_title("Replays on the tabular benchmark (SPY, 100K budget)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
