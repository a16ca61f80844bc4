"""Where a null-objective trial's time goes: the overhead suite's two loops, with the calls of
Optuna, its storage and archsearch timed one by one.

    python benchmarks/trial_parts.py sqlite 200      # or: memory 1000

For each loop (raw Optuna, archsearch) it prints the median time per trial and, per timed call,
how often it ran, its total per trial, its median, and its median over the first and the last
fifth of the calls (what grows with the study). The figures of docs/benchmarks.md's overhead
section ("what remains") were read from it. Timing wrappers add a few microseconds per call.
"""

from __future__ import annotations

import collections
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import optuna
import optuna.samplers._tpe.sampler as tpe
import optuna.study._optimize as optimize_module
import optuna.study._tell as tell_module
import optuna.study.study as study_module
from optuna.storages._cached_storage import _CachedStorage

from archsearch import trial_writes
from archsearch.bench import overhead
from archsearch.search import listeners, loop, objective
from archsearch.space import encodings

TIMES: dict[str, list[float]] = collections.defaultdict(list)


def timed(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[label].append(time.perf_counter() - started)

    setattr(owner, name, call)


def instrument() -> None:
    timed(study_module.Study, "ask", "ask")
    timed(study_module.Study, "tell", "tell")
    timed(tell_module, "_tell_with_warning", "_tell_with_warning")
    optimize_module._tell_with_warning = tell_module._tell_with_warning
    for name in (
        "get_trial",
        "get_all_trials",
        "set_trial_param",
        "set_trial_state_values",
        "create_new_trial",
    ):
        timed(_CachedStorage, name, f"storage.{name}")
    timed(tpe.TPESampler, "sample_relative", "TPE.sample_relative")
    timed(encodings.StructuredEncoding, "suggest", "encoding.suggest")
    timed(objective.Objective, "__call__", "objective")
    timed(loop, "run_trial", "run_trial")
    timed(listeners.Listeners, "trial_finished", "listeners")
    timed(trial_writes, "write", "trial_writes.write")


def main(kind: str, n: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = Path(tempfile.mkdtemp())
    overhead.archsearch_loop(5, "memory", tmp / "warm")  # imports and first calls out of the way
    overhead.raw_optuna_loop(5, "memory", tmp / "warm")
    instrument()
    for name, run in (("raw optuna", overhead.raw_optuna_loop), ("archsearch", overhead.archsearch_loop)):
        TIMES.clear()
        out = tmp / name.replace(" ", "-")
        out.mkdir()
        per_trial = run(n, "memory" if kind == "memory" else f"sqlite:///{out / 'db.sqlite'}", out)
        print(f"== {name}: median {median(per_trial) * 1e3:.2f} ms per trial")
        for label, times in sorted(TIMES.items()):
            fifth = max(len(times) // 5, 1)
            print(
                f"   {label:28s} n={len(times):6d}  per trial {sum(times) / n * 1e3:7.2f} ms  median "
                f"{median(times) * 1e3:.3f}  first/last fifth {median(times[:fifth]) * 1e3:.3f} / "
                f"{median(times[-fifth:]) * 1e3:.3f} ms"
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite", int(sys.argv[2]) if len(sys.argv) > 2 else 200)
