"""A real ``archsearch run`` of one 2M cell on a GPU, and what it shows about concurrent workers.

Run from the repository root on a machine with one CUDA GPU (``benchmarks/gpu_check.sh run`` does)::

    python -P benchmarks/gpu_run.py --out runs/gpu_run            # ~3 minutes on an H100
    python -P benchmarks/gpu_run.py --out runs/gpu_run --single 0  # without the 1-worker baseline

It writes a config (:data:`CELL`: budget 2M, horizon 3, the default architecture space, short
trials; SPY daily bars when ``--data`` names the CSV, else the embedded synthetic market), runs the
real CLI on it with nothing about workers set (so the number of workers per GPU is archsearch's
automatic choice), then, unless ``--single 0``, the same cell in a second study with
``workers.per_gpu: 1`` for ``--single`` trials. From each study's storage it reports the trials
completed, the largest number of trials that ran at the same moment, the wall time from the first
trial's start to the last one's end, trials per hour, and the median samples/s and step kind of a
trial. Writes ``run_summary.json``, ``run.log`` (both runs' output) and ``run_trials.csv`` (the
automatic run's trials) into ``--out``.

``--device cpu`` is a dry run of the same flow on the CPU (a 25K budget, 2 worker processes, one
epoch): a test of this script, not a measurement.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from archsearch.outputs import CSV_NAME

CELL: dict[str, Any] = {
    "experiment": "gpu-2m",
    "budgets": ["2M"],
    "horizons": [3],
    "tolerance": 0.25,
    "data": {"source": "synthetic", "synthetic_rows": 5000},
    "task": {"kind": "threshold", "threshold": 0.01, "rule": "max"},
    "model": {"variant": "patchtst", "context_length": 60, "patch_len": 10, "stride": 5},
    "architecture": {"space": "default"},
    "training": {"dropout": 0.1, "patience": 5, "device": "cuda"},
    "training_search_space": {
        "learning_rate": {"type": "log_uniform", "low": 1.0e-4, "high": 1.0e-3},
        "epochs": {"type": "categorical", "choices": [10, 20]},
        "batch_size": {"type": "categorical", "choices": [64, 128, 256]},
        "weight_decay": {"type": "log_uniform", "low": 1.0e-5, "high": 1.0e-3},
        "warmup_steps": {"type": "categorical", "choices": [0, 100]},
    },
    "n_trials": 16,
    "sampler": {"name": "tpe", "seed": 0},
    "allocation": {"strategy": "coverage", "k": 1},
}
#: What ``--device cpu`` changes: a flow test in about a minute on two cores.
CPU_DRY_RUN: dict[str, Any] = {
    "budgets": ["25K"],
    "data": {"source": "synthetic", "synthetic_rows": 800},
    "architecture": {"space": "default", "d_model": [16, 32, 64], "n_layers": [1, 2, 4, 8]},
    "training": {"dropout": 0.1, "device": "cpu"},
    "training_search_space": {
        "learning_rate": {"type": "log_uniform", "low": 1.0e-4, "high": 1.0e-3},
        "epochs": {"type": "categorical", "choices": [1]},
        "batch_size": {"type": "categorical", "choices": [64]},
    },
    "n_trials": 4,
    "workers": {"processes": 2},
}


def make_config(out: Path, name: str, device: str, data: Path | None, n_trials: int, single: bool) -> Path:
    config = copy.deepcopy(CELL)
    config["experiment"] = name
    if device == "cpu":
        config.update(copy.deepcopy(CPU_DRY_RUN))
        if single:
            config["workers"] = {"processes": 1}
    else:
        config["training"]["device"] = device
        if single:
            config["workers"] = {"per_gpu": 1}
    if data is not None:
        config["data"] = {
            "source": str(data),
            "date_column": "date",
            "target": "close",
            "derived_features": True,
        }
    config["n_trials"] = n_trials
    config["confirm"] = None  # the engine's trials at GPU speed, not the confirmation stage
    config["output_dir"] = str(out / name)
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(config: Path, log: Any) -> tuple[int, float]:
    """``python -P -m archsearch run CONFIG --no-progress``; its output goes to ``log`` and stdout."""
    cmd = [sys.executable, "-P", "-m", "archsearch", "run", str(config), "--no-progress"]
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        log.write(line)
    rc = proc.wait()
    return rc, time.perf_counter() - started


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans that overlap at one moment (an end before a start
    at the same instant)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def summarize(config_path: Path, wall_s: float, rc: int) -> dict[str, Any]:
    """Trials, concurrency and throughput of the run of ``config_path``, read from its storage."""
    import optuna

    from archsearch.config import load_config
    from archsearch.records import trial_attrs
    from archsearch.search.engine import Engine
    from archsearch.storage import make_storage

    config = load_config(config_path)
    storage = make_storage(config)
    (cell,) = Engine(config).cells()
    try:
        trials = optuna.load_study(study_name=cell.study_name, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # the run failed before it created the study: its log says why
        trials = []
    done = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.datetime_start and t.datetime_complete
    ]
    spans = [(t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in done]
    results = [trial_attrs(t) for t in done]
    rates = [r["samples_per_s"] for r in results if r.get("samples_per_s")]
    kinds = sorted({r.get("step_kind", "") for r in results} - {""})
    devices = sorted({r.get("device", "") for r in results} - {""})
    span_s = (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else 0.0
    return {
        "experiment": config.experiment,
        "cell": cell.study_name,
        "exit_code": rc,
        "workers": {"per_gpu": config.workers.per_gpu, "processes": config.workers.processes},
        "trials_complete": len(done),
        "trials_at_once": most_at_once(spans),
        "architectures": len(cell.architectures),
        "first_start_to_last_end_s": round(span_s, 1),
        "command_wall_s": round(wall_s, 1),
        "trials_per_hour": round(3600 * len(done) / span_s, 1) if span_s else None,
        "median_trial_s": round(statistics.median(e - s for s, e in spans), 2) if spans else None,
        "median_samples_per_s": round(statistics.median(rates), 1) if rates else None,
        "step_kinds": kinds,
        "devices": devices,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the configs, runs and summary")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    parser.add_argument("--data", type=Path, help="a daily OHLCV CSV with a date column (e.g. SPY_daily.csv)")
    parser.add_argument("--trials", type=int, default=16, help="trials of the automatic run (default 16)")
    parser.add_argument(
        "--single", type=int, default=8, help="trials of the 1-worker baseline run (0: skip; default 8)"
    )
    args = parser.parse_args(argv)
    if args.data is not None and not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("gpu-2m", "gpu-2m-single"):
        shutil.rmtree(args.out / name, ignore_errors=True)  # a fresh study each time

    runs = [("gpu-2m", args.trials, False)] + ([("gpu-2m-single", args.single, True)] if args.single else [])
    summaries = []
    with open(args.out / "run.log", "w") as log:
        for name, n_trials, single in runs:
            config = make_config(args.out, name, args.device, args.data, n_trials, single)
            rc, wall_s = run_cli(config, log)
            summaries.append(summarize(config, wall_s, rc))
    trials_csv = args.out / "gpu-2m" / CSV_NAME
    if trials_csv.exists():
        shutil.copy(trials_csv, args.out / "run_trials.csv")
    payload: dict[str, Any] = {"runs": summaries}
    if len(summaries) == 2 and summaries[0]["trials_per_hour"] and summaries[1]["trials_per_hour"]:
        payload["speedup_trials_per_hour"] = round(
            summaries[0]["trials_per_hour"] / summaries[1]["trials_per_hour"], 2
        )
    (args.out / "run_summary.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    return 0 if all(s["exit_code"] == 0 and s["trials_complete"] for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
