"""Worker throughput: N processes sharing one storage, each running a sleep-based objective; and
TPE's constant liar against none with four workers (duplicate proposals, best loss found).

Throughput is finished trials per second between the first trial's start and the last trial's
end (process start-up, which imports torch, is excluded)."""

from __future__ import annotations

import math
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
        "confirm": None,  # the engine's cost per search trial: no confirmation stage
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


def _pool(target: Any, raw: dict[str, Any], seconds: float, workers: int, study_name: str) -> Any:
    """Start ``workers`` spawned processes running ``target(raw, seconds, barrier)`` together, wait
    for them, and load the study they shared."""
    import optuna

    from archsearch.config import structure
    from archsearch.storage import make_storage

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        procs = [ctx.Process(target=target, args=(raw, seconds, barrier)) for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    return optuna.load_study(study_name=study_name, storage=make_storage(structure(raw)))


def throughput(workers: int, n_trials: int, seconds: float, storage: str, output: Path) -> dict[str, Any]:
    """Run ``workers`` processes to ``n_trials`` trials; trials per second and the counts."""

    raw = config_for(storage, output, n_trials)
    study = _pool(_worker, raw, seconds, workers, "throughput_8K_h2")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"workers": workers, "complete": len(done), "seconds": span, "trials_per_s": len(done) / span}


#: The constant-liar comparison's search: every value categorical, so a repeated proposal is an
#: exact duplicate (a wasted trial); the loss is 0 at d16-L2, learning rate 1e-3, batch 64 and
#: weight decay 1e-4 (the architectures of ``config_for`` times 7 x 4 x 4 points).
LIAR_SPACE = {
    "learning_rate": {"type": "categorical", "choices": [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2]},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128]},
    "weight_decay": {"type": "categorical", "choices": [1e-6, 1e-5, 1e-4, 1e-3]},
}


def _bowl_train(seconds: float):
    """A sleep, then a bowl-shaped loss of the architecture (the "model") and the training values."""

    def train(model: Any, data: Any, config: Any, on_epoch: Any = None) -> NullResult:
        time.sleep(seconds)
        loss = math.log2(model.d_model / 16) ** 2 + (model.n_layers - 2) ** 2
        loss += math.log10(config.learning_rate / 1e-3) ** 2 + 0.5 * math.log2(config.batch_size / 64) ** 2
        loss += 0.25 * math.log10(config.weight_decay / 1e-4) ** 2
        return NullResult(best_val_loss=loss)

    return train


def _liar_worker(raw: dict[str, Any], seconds: float, barrier: Any) -> None:
    from archsearch.config import structure
    from archsearch.search.engine import Engine

    engine = Engine(
        structure(raw), train_fn=_bowl_train(seconds), build_fn=lambda arch, spec: arch, shared=True
    )
    engine.datasets()
    barrier.wait()
    engine.run()


def constant_liar_run(
    liar: bool, workers: int, n_trials: int, seconds: float, storage: str, output: Path, seed: int
) -> dict[str, Any]:
    """``workers`` processes, TPE with or without its constant liar: duplicates and the best loss."""

    raw = config_for(storage, output, n_trials)
    raw["experiment"] = "liar"
    raw["training_search_space"] = LIAR_SPACE
    raw["allocation"] = {"strategy": "none"}
    raw["sampler"] = {"name": "tpe", "seed": seed, "constant_liar": liar, "options": {"n_startup_trials": 5}}
    study = _pool(_liar_worker, raw, seconds, workers, "liar_8K_h2")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    points = [tuple(sorted(t.params.items())) for t in done]
    return {
        "constant_liar": liar,
        "seed": seed,
        "complete": len(done),
        "duplicates": len(points) - len(set(points)),
        "best": min(t.value for t in done),
    }


def liar_comparison(quick: bool, tmp: Path) -> tuple[list[dict[str, Any]], list[str]]:
    workers, n, seconds = 4, 40, 0.3
    seeds = (0,) if quick else (0, 1, 2)
    rows = [
        constant_liar_run(
            liar, workers, n, seconds, f"{tmp}/liar{int(liar)}-{s}.journal", tmp / f"l{int(liar)}{s}", s
        )
        for s in seeds
        for liar in (False, True)
    ]
    lines = [
        f"TPE, {workers} workers, {n} trials, a {seconds} s bowl objective over {len(seeds)} run(s) each "
        "(an all-categorical space: architecture, learning rate, batch size, weight decay; a repeated proposal is "
        "an exact duplicate; best possible loss 0):",
        "",
        "| constant_liar | runs | duplicate proposals (total) | per run | best loss per run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for liar in (False, True):
        mine = [r for r in rows if r["constant_liar"] is liar]
        dups = [r["duplicates"] for r in mine]
        lines.append(
            f"| {str(liar).lower()} | {len(mine)} | {sum(dups)} | {', '.join(map(str, dups))} | "
            f"{', '.join(format(r['best'], '.3g') for r in mine)} |"
        )
    return rows, lines


def _raw_worker(raw: dict[str, Any], study_name: str, n_trials: int, barrier: Any) -> None:
    """Raw Optuna's own pool: ``optimize`` with a null objective until ``n_trials`` complete
    (``MaxTrialsCallback``, which may overshoot under racing workers), suggesting the parameters
    archsearch's trials suggest (the cell's architecture encoding, then the training values)."""
    import optuna

    from archsearch.config import structure
    from archsearch.search.engine import Engine
    from archsearch.space.encodings import make_encoding

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = structure(raw)
    (cell,) = Engine(config).cells()
    encoding = make_encoding(config.architecture.encoding, cell.architectures)
    space = config.training_search_space

    def objective(trial: optuna.Trial) -> float:
        encoding.suggest(trial)
        return sum(spec.suggest(trial, name) for name, spec in space.items())

    sampler = optuna.samplers.RandomSampler()  # archsearch's pool runs the random sampler too
    study = optuna.load_study(study_name=study_name, storage=raw["storage"], sampler=sampler)
    stop = optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE,))
    barrier.wait()
    study.optimize(objective, callbacks=[stop])


def _span(study: Any) -> tuple[int, float]:
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return len(done), span


def _steady_rate(study: Any) -> float:
    """Trials completed per second between the 10th and the 90th percentile of completions: the
    pool's pace once every process runs trials (start-up and the last stragglers left out)."""
    ends = sorted(t.datetime_complete for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE")
    a, b = len(ends) // 10, len(ends) - 1 - len(ends) // 10
    return (b - a) / max((ends[b] - ends[a]).total_seconds(), 1e-9)


def pool_against_raw(url: str, workers: int, n_trials: int, output: Path) -> dict[str, Any]:
    """``workers`` archsearch processes and as many raw Optuna processes on one PostgreSQL storage,
    a null objective, ``n_trials`` each: the pools' trials/s and whether the counts are exact."""
    import secrets

    import optuna

    tag = secrets.token_hex(3)
    raw = config_for(url, output, n_trials)
    raw["experiment"] = f"pool{workers}_{tag}"
    ours = _pool(_worker, raw, 0.0, workers, f"pool{workers}_{tag}_8K_h2")
    ours_done, ours_span = _span(ours)
    ours_steady = _steady_rate(ours)
    name = f"raw{workers}_{tag}"
    optuna.create_study(study_name=name, storage=url)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        procs = [ctx.Process(target=_raw_worker, args=(raw, name, n_trials, barrier)) for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    theirs = optuna.load_study(study_name=name, storage=url)
    raw_done, raw_span = _span(theirs)
    raw_steady = _steady_rate(theirs)
    return {
        "workers": workers,
        "archsearch_complete": ours_done,
        "archsearch_per_s": ours_done / ours_span,
        "raw_complete": raw_done,
        "raw_per_s": raw_done / raw_span,
        "ratio": (ours_done / ours_span) / (raw_done / raw_span),
        "archsearch_steady_per_s": ours_steady,
        "raw_steady_per_s": raw_steady,
        "steady_ratio": ours_steady / raw_steady,
    }


def pool_rows(quick: bool, tmp: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The PostgreSQL pool comparison, when ``ARCHSEARCH_BENCH_POSTGRES`` (or the tests'
    ``ARCHSEARCH_TEST_POSTGRES``) names a server; none otherwise."""
    import os

    url = os.environ.get("ARCHSEARCH_BENCH_POSTGRES") or os.environ.get("ARCHSEARCH_TEST_POSTGRES")
    if not url:
        return [], ["(No PostgreSQL: set ARCHSEARCH_BENCH_POSTGRES for the pool against raw Optuna.)", ""]
    n, rounds = 200, (2 if quick else 3)
    counts = (1, 4, 8) if quick else (1, 4, 8, 16, 32)
    rows = [
        _rounds([pool_against_raw(url, w, n, tmp / f"pool{w}-{r}") for r in range(rounds)]) for w in counts
    ]
    lines = [
        f"Null objective, {n} trials, random sampler, PostgreSQL: archsearch processes against as many "
        "raw Optuna processes (`optimize` + `MaxTrialsCallback`, the same sampler and parameters), "
        f"{rounds} rounds in turn.",
        "",
        "| workers | archsearch trials/s | complete | raw Optuna trials/s | complete | ratio (median) "
        "| ratio per round | steady ratio per round |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['workers']} | {r['archsearch_per_s']:.1f} | {r['archsearch_complete']} | {r['raw_per_s']:.1f} "
            f"| {r['raw_complete']} | {r['ratio']:.2f}x | {', '.join(f'{x:.2f}' for x in r['ratios'])} "
            f"| {', '.join(f'{x:.2f}' for x in r['steady_ratios'])} |"
            for r in rows
        ),
        "",
        "trials/s: completed trials over the first trial's start to the last one's end (median of the"
        " rounds); steady: between the 10th and the 90th percentile of completions (every process"
        " running). complete: the counts of the rounds. Target: >= 0.9x at every count, with exact"
        " counts (archsearch's complete = n).",
        "",
    ]
    return rows, lines


def _rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from rounds of :func:`pool_against_raw`: median rates and ratio, every round's ratio."""
    from statistics import median

    def counts(key: str) -> str:
        return ", ".join(sorted({str(r[key]) for r in runs}))

    return {
        "workers": runs[0]["workers"],
        "archsearch_per_s": median(r["archsearch_per_s"] for r in runs),
        "raw_per_s": median(r["raw_per_s"] for r in runs),
        "archsearch_complete": counts("archsearch_complete"),
        "raw_complete": counts("raw_complete"),
        "ratio": median(r["ratio"] for r in runs),
        "ratios": [r["ratio"] for r in runs],
        "steady_ratios": [r["steady_ratio"] for r in runs],
        "runs": runs,
    }


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
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        liar_rows, liar_lines = liar_comparison(quick, Path(tmp))
        pool, pool_lines = pool_rows(quick, Path(tmp))
    return {
        "rows": rows,
        "constant_liar": liar_rows,
        "pool": pool,
        "markdown": "\n".join(lines + liar_lines + pool_lines),
        "plots": {},
    }
