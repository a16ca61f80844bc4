"""A trial seeds the RNGs once (before its model is built; the trainer does not seed again), and
seeded runs still repeat exactly."""

from __future__ import annotations

import optuna
import torch
import yaml
from engine_helpers import tiny_config

from archsearch.config import load_config
from archsearch.search.engine import Engine
from archsearch.training import trainer

SEED_EVERYTHING = trainer.seed_everything


def _run(tmp_path, monkeypatch) -> tuple[list[int], list[float]]:
    seeds: list[int] = []
    monkeypatch.setattr(trainer, "seed_everything", lambda seed: (seeds.append(seed), SEED_EVERYTHING(seed))[1])
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
    assert seeds == [40, 41, 42], "one seeding per trial, with the trial's seed"
    again, repeated = _run(tmp_path / "b", monkeypatch)
    assert again == seeds and repeated == values


def test_seed_everything_seeds_torch_as_manual_seed_does():
    """Without an accelerator only the CPU generator is seeded (torch.manual_seed would also queue
    seedings for absent devices), with the same random numbers as torch.manual_seed."""
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(0)
    SEED_EVERYTHING(7)
    assert torch.equal(torch.rand(4), expected)
    SEED_EVERYTHING(8)
    assert not torch.equal(torch.rand(4), expected)
