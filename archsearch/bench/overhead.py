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


def _config(n_trials: int, storage: str, output: Path) -> Any:
    from archsearch.config import structure

    return structure(
        {
            "experiment": "overhead",
            "budgets": ["2M"],
            "horizons": [1],
            "data": {"source": "synthetic", "synthetic_rows": 600},
            "training_search_space": {
                "learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-3},
                "epochs": {"type": "categorical", "choices": [50, 75, 100]},
                "batch_size": {"type": "categorical", "choices": [32, 64, 128, 256]},
                "weight_decay": {"type": "log_uniform", "low": 1e-5, "high": 1e-3},
                "warmup_steps": {"type": "categorical", "choices": [100, 200, 300, 500]},
            },
            "n_trials": n_trials,
            "sampler": {"name": "tpe", "seed": 0},
            "storage": storage,
            "output_dir": str(output),
            "sinks": ["csv", "json", "bench-timing"],
            "training": {"device": "cpu"},
        }
    )


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
    study = optuna.create_study(
        study_name="raw",
        storage=None if storage == "memory" else storage,
        sampler=optuna.samplers.TPESampler(seed=0, multivariate=True),
    )

    def objective(trial: optuna.Trial) -> float:
        arch = encoding.suggest(trial)  # the same parameters as archsearch's trials
        values = {name: spec.suggest(trial, name) for name, spec in space.items()}
        return _value(arch.key, values["learning_rate"], values["batch_size"])

    stamps = [time.perf_counter()]
    study.optimize(objective, n_trials=n_trials, callbacks=[lambda s, t: stamps.append(time.perf_counter())])
    return [b - a for a, b in itertools.pairwise(stamps)]


def suite(quick: bool) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = 200 if quick else 1000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for storage_kind in ("memory", "sqlite"):
            times = {}
            for loop, fn in (("raw optuna", raw_optuna_loop), ("archsearch", archsearch_loop)):
                out = Path(tmp) / f"{storage_kind}-{loop.replace(' ', '-')}"
                storage = "memory" if storage_kind == "memory" else f"sqlite:///{out / 'db.sqlite'}"
                out.mkdir(parents=True, exist_ok=True)
                times[loop] = fn(n, storage, out)
            raw, ours = median(times["raw optuna"]), median(times["archsearch"])
            rows.append(
                {
                    "storage": storage_kind,
                    "trials": n,
                    "raw_optuna_ms": raw * 1e3,
                    "archsearch_ms": ours * 1e3,
                    "ratio": ours / raw,
                    "raw_total_s": sum(times["raw optuna"]),
                    "archsearch_total_s": sum(times["archsearch"]),
                }
            )
    lines = [
        "| storage | trials | raw Optuna, median per trial | archsearch, median per trial | ratio | totals (raw / archsearch) |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['storage']} | {r['trials']} | {r['raw_optuna_ms']:.2f} ms | {r['archsearch_ms']:.2f} ms "
            f"| {r['ratio']:.3f}x | {r['raw_total_s']:.1f} s / {r['archsearch_total_s']:.1f} s |"
            for r in rows
        ),
        "",
        "Null objective, TPE (multivariate, seed 0), the architecture plus five training parameters;"
        " archsearch with coverage allocation and the csv and json sinks. Target: <= 1.05x.",
    ]
    return {"rows": rows, "markdown": "\n".join(lines), "plots": {}}
