"""Small, fast configs for running the real engine in tests."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Synthetic data, 5 architectures around 8K parameters, 1-2 epochs: a trial takes ~0.2 s."""
    config: dict[str, Any] = {
        "experiment": "tiny",
        "budgets": ["8K"],
        "horizons": [2],
        "tolerance": 0.6,
        "data": {"source": "synthetic", "synthetic_rows": 500, "synthetic_seed": 3},
        "task": {"kind": "threshold", "threshold": 0.005},
        "model": {"variant": "patchtst", "context_length": 20, "patch_len": 5, "stride": 5},
        "architecture": {"d_model": [8, 16, 24], "n_layers": [1, 2, 3], "n_heads": [2], "d_ff_ratios": [2]},
        "training": {"device": "cpu", "dropout": 0.0},
        "training_search_space": {
            "learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 1e-2},
            "epochs": {"type": "categorical", "choices": [1, 2]},
            "batch_size": {"type": "categorical", "choices": [32, 64]},
        },
        "n_trials": 7,
        "sampler": {"name": "tpe", "seed": 11},
        "confirm": None,  # tests of the confirmation stage turn it on
        "output_dir": str(tmp_path / "out"),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def write_config(tmp_path: Path, name: str = "config.yaml", **overrides: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, **overrides), sort_keys=False))
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "archsearch", *args], capture_output=True, text=True, env=full_env, **kwargs
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
