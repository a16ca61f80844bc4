"""How far to trust a cell's single best trial: on SPY (the built-in daily bars, threshold task),
a small matrix run over several sampler seeds with confirmation on; per cell and seed, whether the
search's single best trial and the confirmed winner are the same configuration, and whether the
confirmed winner's 95% interval excludes the runner-up's (docs/benchmarks.md).

    python benchmarks/confirm_agreement.py [--seeds 0 1 2] [--out runs/confirm_agreement]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

CONFIG = {
    "budgets": ["25K", "100K"],
    "horizons": [3],
    "tolerance": 0.25,
    "data": {"source": "builtin:spy-daily", "date_column": "date", "target": "close", "derived_features": True},
    "task": {"kind": "threshold", "threshold": 0.01, "rule": "max"},
    "model": {"variant": "patchtst", "context_length": 60, "patch_len": 10, "stride": 5},
    "architecture": {
        "d_model": [16, 24, 32, 48, 64, 96],
        "n_layers": [1, 2, 3, 4, 6, 8, 12],
        "head_rule": "head-dim-64",
        "max_architectures": 8,
    },
    "training": {"dropout": 0.1, "device": "cpu"},
    "training_search_space": {
        "learning_rate": {"type": "log_uniform", "low": 3.0e-4, "high": 3.0e-3},
        "epochs": {"type": "categorical", "choices": [4, 6]},
        "batch_size": {"type": "categorical", "choices": [64, 128]},
    },
    "n_trials": 12,
    "confirm": {"top_k": 3, "seeds": 3},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", default="runs/confirm_agreement")
    args = parser.parse_args(argv)
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        run_dir = out / f"seed{seed}"
        config = {"experiment": f"agree{seed}", **CONFIG, "sampler": {"name": "tpe", "seed": seed},
                  "output_dir": str(run_dir)}
        config["training"] = {**CONFIG["training"], "seed": seed}
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "archsearch", "run", str(path), "--no-progress"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        for best in sorted(run_dir.glob("*_best.json")):
            b = json.loads(best.read_text())
            c = b["confirmed"]
            w, r = c["winner"], c["runner_up"]
            rows.append({
                "seed": seed, "budget": b["budget"], "search_best": b["best_value"],
                "winner": f"d{w['arch']['d_model']} L{w['arch']['n_layers']}",
                "mean": w["mean"], "low": w["low"], "high": w["high"],
                "runner_up": r["mean"] if r else None, "agrees": c["agrees"], "separated": c["separated"],
                "test": w["test_loss"], "constant": w["baseline_test_loss"],
            })
        print(f"seed {seed}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    print("| seed | budget | search best val | confirmed winner | mean val [95%] | runner-up mean | agree | separated | winner test (constant) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['seed']} | {r['budget']} | {r['search_best']:.4f} | {r['winner']} | {r['mean']:.4f} "
              f"[{r['low']:.4f}, {r['high']:.4f}] | {r['runner_up']:.4f} | {'yes' if r['agrees'] else 'no'} | "
              f"{'yes' if r['separated'] else 'no'} | {r['test']:.4f} ({r['constant']:.4f}) |")
    n = len(rows)
    print(f"\nagree: {sum(r['agrees'] for r in rows)}/{n}; separated: {sum(bool(r['separated']) for r in rows)}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
