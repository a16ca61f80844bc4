"""The ``overhead`` suite: the archsearch loop (config, plugins, sinks, allocation, records)
against a raw Optuna loop with the same sampler and parameters, both on a null objective, with
in-memory and SQLite storage. Per-trial time is the interval between consecutive finished trials;
the suite reports both medians and their ratio."""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import attrs

from archsearch.plugin.registry import SinkPlugin
from archsearch.plugin.spec import hookimpl

_STAMPS: list[float] = []


class _TimingSink:
    def trial_finished(self, record: dict[str, Any], cell: Any) -> None:
        if not record.get("replayed"):
            _STAMPS.append(time.perf_counter())

    def cell_finished(self, cell: Any) -> None:
        pass

    def close(self) -> None:
        pass


@hookimpl
def archsearch_register_sinks() -> list[SinkPlugin]:
    return [SinkPlugin("bench-timing", lambda output_dir, config: _TimingSink())]


@attrs.frozen
class NullResult:
    best_val_loss: float
    train_loss: float = 0.0
    best_epoch: int = 0
    epochs_run: int = 0
    val_metrics: dict = attrs.Factory(dict)
    test_loss: float = 0.0
    device: str = "none"
    samples_per_s: float = 0.0


def _value(arch_key: str, lr: float, batch: int) -> float:
    """A deterministic stand-in loss with structure for the sampler to find."""
    return (hash(arch_key) % 97) / 97 + abs(lr - 4e-4) * 500 + (batch == 64) * 0.1


def null_train(model: Any, data: Any, config: Any, on_epoch: Any = None) -> NullResult:
    return NullResult(_value(str(model), config.learning_rate, config.batch_size))


#: The training parameters every null-objective benchmark searches (the SPEC's ranges).
SPACE = {
    "learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-3},
    "epochs": {"type": "categorical", "choices": [50, 75, 100]},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128, 256]},
    "weight_decay": {"type": "log_uniform", "low": 1e-5, "high": 1e-3},
    "warmup_steps": {"type": "categorical", "choices": [100, 200, 300, 500]},
}


def null_config(
    experiment: str,
    n_trials: int,
    output: Path,
    storage: str | None = None,
    sinks: tuple[str, ...] = ("csv", "json"),
) -> dict[str, Any]:
    """The null-objective benchmarks' cell (2M, horizon 1, synthetic data, TPE, :data:`SPACE`, no
    confirmation: the engine's cost per search trial), as a raw config."""
    raw = {
        "experiment": experiment,
        "budgets": ["2M"],
        "horizons": [1],
        "data": {"source": "synthetic", "synthetic_rows": 600},
        "training_search_space": SPACE,
        "n_trials": n_trials,
        "confirm": None,
        "sampler": {"name": "tpe", "seed": 0},
        "output_dir": str(output),
        "sinks": list(sinks),
        "training": {"device": "cpu"},
    }
    if storage is not None:
        raw["storage"] = storage
    return raw


def _config(n_trials: int, storage: str, output: Path) -> Any:
    """The null cell without coverage allocation: archsearch's trials then ask the sampler exactly
    what the raw loop's do (same seed, same parameters, same values), so the difference is the
    engine's alone. (Coverage queues each architecture once first: a different sequence for the
    sampler, and per queued trial its enqueueing and a claim write.)"""
    from archsearch.config import structure

    raw = null_config("overhead", n_trials, output, storage, ("csv", "json", "bench-timing"))
    return structure({**raw, "allocation": {"strategy": "none"}})


def archsearch_loop(n_trials: int, storage: str, output: Path) -> list[float]:
    from archsearch.plugin.manager import get_plugin_manager
    from archsearch.search.engine import Engine

    config = _config(n_trials, storage, output)
    _STAMPS.clear()
    plugins = get_plugin_manager([__name__], autoload=False)
    engine = Engine(config, plugins=plugins, train_fn=null_train, build_fn=lambda arch, spec: arch.key)
    engine.datasets()  # data loading is set-up, not per-trial work
    start = time.perf_counter()
    engine.run()
    stamps = [start, *_STAMPS]
    return [b - a for a, b in itertools.pairwise(stamps)]


def raw_optuna_loop(n_trials: int, storage: str, output: Path) -> list[float]:
    import optuna

    from archsearch.space.grid import get_architectures_for_budget

    config = _config(n_trials, storage, output)
    from archsearch.space.encodings import make_encoding

    encoding = make_encoding(config.architecture.encoding, get_architectures_for_budget("2M"))
    space = config.training_search_space
    # The sampler archsearch builds for one process (multivariate TPE, constant_liar off: Optuna's
    # default turns it on, which writes a system attribute per trial that archsearch does not).
    options = config.sampler.factory_options(shared=False)
    study = optuna.create_study(
        study_name="raw",
        storage=None if storage == "memory" else storage,
        sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, **options),
    )

    def objective(trial: optuna.Trial) -> float:
        arch = encoding.suggest(trial)  # the same parameters as archsearch's trials
        values = {name: spec.suggest(trial, name) for name, spec in space.items()}
        return _value(arch.key, values["learning_rate"], values["batch_size"])

    stamps = [time.perf_counter()]
    study.optimize(objective, n_trials=n_trials, callbacks=[lambda s, t: stamps.append(time.perf_counter())])
    return [b - a for a, b in itertools.pairwise(stamps)]


#: The trial counts the rows are read at: each loop runs once to the largest, and a row at N
#: reads its first N trials (the same as a run of N: same seed, same sampler, same suggestions).
QUICK_COUNTS = (200, 1000)
FULL_COUNTS = (200, 1000, 10_000)


def _median_ms(times: list[float]) -> float:
    return median(times) * 1e3 if times else float("nan")


def growth_rows(storage_kind: str, times: dict[str, list[float]], counts: tuple[int, ...]) -> list[dict]:
    """One row per trial count: the median per-trial time over the first N trials, and over the
    last fifth of them (the cost at N, which grows with the study), for both loops."""
    rows = []
    for n in counts:
        raw, ours = times["raw optuna"][:n], times["archsearch"][:n]
        tail = n - max(n // 5, 1)
        rows.append(
            {
                "storage": storage_kind,
                "trials": n,
                "raw_optuna_ms": _median_ms(raw),
                "archsearch_ms": _median_ms(ours),
                "ratio": median(ours) / median(raw),
                "raw_tail_ms": _median_ms(raw[tail:]),
                "archsearch_tail_ms": _median_ms(ours[tail:]),
                "tail_ratio": median(ours[tail:]) / median(raw[tail:]),
                "raw_total_s": sum(raw),
                "archsearch_total_s": sum(ours),
            }
        )
    return rows


def growth_plot(times: dict[str, dict[str, list[float]]]) -> Any:
    """Per-trial cost (median in bins of trial numbers, log-spaced) against the trial count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {"raw optuna": "--", "archsearch": "-"}
    for storage_kind, loops in times.items():
        for loop, series in loops.items():
            n = len(series)
            edges = np.unique(np.geomspace(1, n + 1, 25).astype(int))
            x = [np.sqrt(a * b) for a, b in itertools.pairwise(edges)]
            y = [median(series[a - 1 : b - 1]) * 1e3 for a, b in itertools.pairwise(edges)]
            ax.plot(x, y, styles[loop], marker=".", label=f"{loop}, {storage_kind}")
    ax.set(xscale="log", yscale="log", xlabel="trial number", ylabel="time per trial (ms, median in bin)")
    ax.set_title("Per-trial cost against trial count: null objective, TPE")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def _markdown(rows: list[dict]) -> str:
    lines = [
        "| storage | trials | raw Optuna, median per trial | archsearch, median per trial | ratio "
        "| at N: raw / archsearch (last fifth) | ratio at N | totals (raw / archsearch) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['storage']} | {r['trials']:,} | {r['raw_optuna_ms']:.2f} ms | {r['archsearch_ms']:.2f} ms "
            f"| {r['ratio']:.3f}x | {r['raw_tail_ms']:.2f} / {r['archsearch_tail_ms']:.2f} ms "
            f"| {r['tail_ratio']:.3f}x | {r['raw_total_s']:.1f} s / {r['archsearch_total_s']:.1f} s |"
            for r in rows
        ),
        "",
        "Null objective, TPE (multivariate, seed 0), the architecture plus five training parameters;"
        " archsearch without coverage allocation, with the csv and json sinks. Target: <= 1.05x. Each loop"
        " runs once to the largest count; a row at N reads its first N trials (the median over them),"
        " and the cost at N is the median over its last fifth.",
    ]
    return "\n".join(lines)


#: The headline ratio: pairs of loops of ``PAIR_TRIALS`` trials, raw Optuna then archsearch, run in
#: turn, so that a drift of the machine (its disk above all: each SQLite commit waits for it) hits
#: both loops of a pair alike; the ratio is the median over the pairs of each pair's ratio.
PAIR_TRIALS = 200
QUICK_PAIRS, FULL_PAIRS = 3, 7
LOOPS = (("raw optuna", raw_optuna_loop), ("archsearch", archsearch_loop))


def _place(tmp: Path, name: str, storage_kind: str) -> tuple[Path, str]:
    """A loop's output folder (made) and its storage URL: ``memory``, or SQLite in the folder."""
    out = tmp / name.replace(" ", "-")
    out.mkdir(parents=True)
    return out, "memory" if storage_kind == "memory" else f"sqlite:///{out / 'db.sqlite'}"


def paired_rows(tmp: Path, pairs: int) -> list[dict]:
    """Per storage: both loops' median per-trial time over the pairs, the median of the pairs'
    ratios (and their range), and the ratio of CPU time per trial (the whole loop, set-up included,
    the process's threads together)."""
    rows = []
    for storage_kind in ("memory", "sqlite"):
        wall: dict[str, list[float]] = {loop: [] for loop, _ in LOOPS}
        cpu: dict[str, list[float]] = {loop: [] for loop, _ in LOOPS}
        for i in range(pairs):
            for loop, fn in LOOPS:
                out, storage = _place(tmp, f"pair{i}-{storage_kind}-{loop}", storage_kind)
                started = time.process_time()
                wall[loop].append(median(fn(PAIR_TRIALS, storage, out)))
                cpu[loop].append((time.process_time() - started) / PAIR_TRIALS)
        ratios = [a / r for r, a in zip(wall["raw optuna"], wall["archsearch"], strict=True)]
        cpu_ratios = [a / r for r, a in zip(cpu["raw optuna"], cpu["archsearch"], strict=True)]
        rows.append(
            {
                "storage": storage_kind,
                "trials": PAIR_TRIALS,
                "pairs": pairs,
                "raw_optuna_ms": _median_ms(wall["raw optuna"]),
                "archsearch_ms": _median_ms(wall["archsearch"]),
                "ratio": median(ratios),
                "ratio_low": min(ratios),
                "ratio_high": max(ratios),
                "cpu_ratio": median(cpu_ratios),
            }
        )
    return rows


def _paired_markdown(rows: list[dict]) -> str:
    lines = [
        "| storage | trials | pairs | raw Optuna, median per trial | archsearch, median per trial "
        "| ratio (median of pairs) | range | CPU time ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['storage']} | {r['trials']:,} | {r['pairs']} | {r['raw_optuna_ms']:.2f} ms "
            f"| {r['archsearch_ms']:.2f} ms | {r['ratio']:.3f}x | {r['ratio_low']:.3f}-{r['ratio_high']:.3f}x "
            f"| {r['cpu_ratio']:.3f}x |"
            for r in rows
        ),
        "",
        f"Each pair: raw Optuna, then archsearch, {PAIR_TRIALS} trials each, the same seeds and"
        " parameters (archsearch without coverage allocation: both ask the sampler the same)."
        " Target: <= 1.05x.",
    ]
    return "\n".join(lines)


def suite(quick: bool) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counts = QUICK_COUNTS if quick else FULL_COUNTS
    n = max(counts)
    rows: list[dict] = []
    times: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for storage_kind in ("memory", "sqlite"):
            times[storage_kind] = {}
            for loop, fn in LOOPS:
                out, storage = _place(Path(tmp), f"{storage_kind}-{loop}", storage_kind)
                times[storage_kind][loop] = fn(n, storage, out)
            rows += growth_rows(storage_kind, times[storage_kind], counts)
        pairs = paired_rows(Path(tmp), QUICK_PAIRS if quick else FULL_PAIRS)
    return {
        "rows": rows,
        "pairs": pairs,
        "markdown": _paired_markdown(pairs) + "\n\n" + _markdown(rows),
        "plots": {"overhead_growth.png": growth_plot(times)},
    }
