"""A trial seeds the RNGs once (before its model is built; the trainer does not seed again), and
seeded runs still repeat exactly."""

from __future__ import annotations

import optuna
import torch
import yaml
from engine_helpers import tiny_config

from archsearch.config import load_config
from archsearch.search.engine import Engine

MANUAL_SEED = torch.manual_seed


def _run(tmp_path, monkeypatch) -> tuple[list[int], list[float]]:
    seeds: list[int] = []
    monkeypatch.setattr(torch, "manual_seed", lambda seed: (seeds.append(seed), MANUAL_SEED(seed))[1])
    tmp_path.mkdir()
    path = tmp_path / "config.yaml"
    raw = tiny_config(tmp_path, n_trials=3, training={"seed": 40, "dropout": 0.2})
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    Engine(config).run()
    study = optuna.load_study(study_name=config.study_name(config.budgets[0], 2), storage=config.storage_url)
    return seeds, [t.value for t in study.get_trials()]


def test_each_trial_seeds_torch_once_and_runs_repeat(tmp_path, monkeypatch):
    seeds, values = _run(tmp_path / "a", monkeypatch)
    assert seeds == [40, 41, 42], "one torch.manual_seed per trial, with the trial's seed"
    again, repeated = _run(tmp_path / "b", monkeypatch)
    assert again == seeds and repeated == values
