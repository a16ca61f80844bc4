"""Worker throughput: N processes sharing one storage, each running a sleep-based objective.

Throughput is finished trials per second between the first trial's start and the last trial's
end (process start-up, which imports torch, is excluded)."""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

from archsearch.bench.overhead import NullResult


def _sleep_train(seconds: float):
    def train(model: Any, data: Any, config: Any, on_epoch: Any = None) -> NullResult:
        time.sleep(seconds)
        return NullResult(best_val_loss=config.learning_rate * 1000)

    return train


def config_for(storage: str, output: Path, n_trials: int) -> dict[str, Any]:
    return {
        "experiment": "throughput",
        "budgets": ["8K"],
        "horizons": [2],
        "tolerance": 0.6,
        "data": {"source": "synthetic", "synthetic_rows": 500},
        "model": {"context_length": 20, "patch_len": 5, "stride": 5},
        "architecture": {"d_model": [8, 16, 24], "n_layers": [1, 2, 3], "n_heads": [2], "d_ff_ratios": [2]},
        "training": {"device": "cpu"},
        "training_search_space": {"learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-2}},
        "n_trials": n_trials,
        "sampler": {"name": "random", "seed": 0},
        "storage": storage,
        "output_dir": str(output),
        "workers": {"heartbeat_interval": 1.0, "grace_period": 10.0},
    }


def _worker(raw: dict[str, Any], seconds: float, barrier: Any) -> None:
    from archsearch.config import structure
    from archsearch.search.engine import Engine

    engine = Engine(structure(raw), train_fn=_sleep_train(seconds), build_fn=lambda arch, spec: None)
    engine.datasets()
    barrier.wait()
    engine.run()


def throughput(workers: int, n_trials: int, seconds: float, storage: str, output: Path) -> dict[str, Any]:
    """Run ``workers`` processes to ``n_trials`` trials; trials per second and the counts."""
    import optuna

    raw = config_for(storage, output, n_trials)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        procs = [ctx.Process(target=_worker, args=(raw, seconds, barrier)) for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    from archsearch.config import structure
    from archsearch.storage import make_storage

    study = optuna.load_study(study_name="throughput_8K_h2", storage=make_storage(structure(raw)))
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"workers": workers, "complete": len(done), "seconds": span, "trials_per_s": len(done) / span}


def suite(quick: bool) -> dict:
    rows = []
    n, seconds = (24, 0.5) if quick else (64, 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2, 8):
            journal = Path(tmp) / f"w{workers}.journal"
            rows.append(throughput(workers, n, seconds, f"journal:{journal}", Path(tmp) / f"out{workers}"))
    base = rows[0]["trials_per_s"]
    lines = [
        f"Sleep objective ({seconds} s per trial), {n} trials, journal-file storage, one machine.",
        "",
        "| workers | complete | span | trials/s | vs 1 worker |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {r['workers']} | {r['complete']} | {r['seconds']:.1f} s | {r['trials_per_s']:.2f} | {r['trials_per_s'] / base:.2f}x |"
            for r in rows
        ),
        "",
        "Target: 8 workers >= 6x one.",
    ]
    return {"rows": rows, "markdown": "\n".join(lines), "plots": {}}
