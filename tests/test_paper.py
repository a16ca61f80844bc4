"""The paper's setup (configs/paper/patchtst_etth1.yaml) on a synthetic series in the ETTh1 layout:
its plan, its windows, and every metric of a task stored per split."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from engine_helpers import REPO, read_csv, run_cli, write_config

from archsearch.cli import main
from archsearch.config import load_config
from archsearch.search.matrix import load_data, model_spec, prepare_data

PAPER = REPO / "configs" / "paper" / "patchtst_etth1.yaml"
ETT_COLUMNS = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]


def etth1_like(path: Path, rows: int = 17_420) -> Path:
    """A synthetic hourly series in the layout of ETTh1.csv (date and 7 load/temperature columns,
    17,420 rows from 2016-07-01 00:00): daily and weekly cycles, a slow walk and noise."""
    rng = np.random.default_rng(0)
    t = np.arange(rows)
    data = {"date": pd.date_range("2016-07-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S")}
    for i, name in enumerate(ETT_COLUMNS):
        cycles = 2 * np.sin(2 * np.pi * t / 24 + i) + np.sin(2 * np.pi * t / 168)
        walk = 0.01 * np.cumsum(rng.standard_normal(rows))
        data[name] = np.round(5 + i + cycles + walk + 0.3 * rng.standard_normal(rows), 3)
    pd.DataFrame(data).to_csv(path, index=False)
    return path


def paper_config(tmp_path: Path, **changes: dict) -> Path:
    """The shipped paper config reading a synthetic ETTh1 copy, writing under ``tmp_path``;
    ``changes`` update its sections."""
    raw = yaml.safe_load(PAPER.read_text())
    raw["data"]["source"] = str(etth1_like(tmp_path / "ETTh1.csv"))
    raw["output_dir"] = str(tmp_path / "out")
    for section, values in changes.items():
        raw[section] = {**raw[section], **values} if isinstance(raw.get(section), dict) else values
    path = tmp_path / "patchtst_etth1.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_plan_shows_the_papers_parameter_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(paper_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    for horizon, count in ((96, "81,728"), (192, "146,336"), (336, "243,248"), (720, "501,680")):
        line = next(line for line in out.splitlines() if f"_h{horizon} " in line)
        assert f"{count}..{count}" in line, line
    assert "8,209" in next(line for line in out.splitlines() if "_h96 " in line)  # training windows


def test_the_papers_windows_and_scaler(tmp_path: Path) -> None:
    config = load_config(paper_config(tmp_path))
    frame = load_data(config)
    assert frame.n_rows == 17_420 and frame.feature_names == tuple(ETT_COLUMNS)
    data = prepare_data(config, frame, 96)
    windows = {name: info["windows"] for name, info in data.split_info.items()}
    assert windows == {"train": 8209, "val": 2785, "test": 2785}
    assert data.n_targets == 7 and data.target_channels == tuple(range(7))
    np.testing.assert_allclose(data.scaler_mean, frame.frame.to_numpy()[:8640].mean(axis=0), rtol=1e-12)
    spec = model_spec(config, data)
    assert (spec.context_length, spec.patch_len, spec.stride, spec.revin_affine, spec.dropout) == (
        336,
        16,
        8,
        False,
        0.3,
    )


def small_paper(tmp_path: Path) -> Path:
    """The paper config shrunk to seconds: fewer rows per split, a shorter look-back, 2 epochs."""
    return paper_config(
        tmp_path,
        horizons=[8],
        split={"train_rows": [0, 600], "val_rows": [600, 800], "test_rows": [800, 1000]},
        model={"context_length": 48, "architecture": {"d_model": 8, "n_layers": 1, "n_heads": 2, "d_ff": 16}},
        training={"epochs": 2, "batch_size": 64, "learning_rate": 1.0e-3, "device": "cpu"},
    )


@pytest.mark.slow
def test_a_forecast_stores_val_and_test_mae_and_precision(tmp_path: Path) -> None:
    out = run_cli("run", str(small_paper(tmp_path)), "--no-progress")
    assert out.returncode == 0, out.stderr
    (row,) = read_csv(tmp_path / "out" / "experiment_results.csv")
    assert row["state"] == "COMPLETE" and row["precision"] == "fp32"
    assert 0 < float(row["val_mae"]) and 0 < float(row["test_mae"]) and float(row["test_loss"]) > 0
    assert row["test_accuracy"] == "" and row["test_auc"] == ""
    (best_file,) = (tmp_path / "out").glob("*_best.json")
    best = json.loads(best_file.read_text())
    assert set(best["test_metrics"]) == {"mae"} and best["test_metrics"]["mae"] == pytest.approx(
        float(row["test_mae"])
    )
    assert best["precision"] == "fp32" and best["split"]["val"]["windows"] == 200 - 8 + 1


@pytest.mark.slow
def test_the_threshold_task_stores_its_metrics_for_both_splits(tmp_path: Path) -> None:
    path = write_config(tmp_path, n_trials=1, training={"device": "cpu", "dropout": 0.0, "epochs": 1})
    assert run_cli("run", str(path), "--no-progress").returncode == 0
    (row,) = read_csv(tmp_path / "out" / "experiment_results.csv")
    for split in ("val", "test"):
        for metric in ("accuracy", "auc", "positive_rate", "predicted_positive_rate"):
            value = float(row[f"{split}_{metric}"])
            assert 0 <= value <= 1, (split, metric, value)
    assert row["val_mae"] == row["test_mae"] == ""
    best = json.loads(next((tmp_path / "out").glob("*_best.json")).read_text())
    assert set(best["test_metrics"]) == {"accuracy", "auc", "positive_rate", "predicted_positive_rate"}


def test_the_small_paper_setup_repeats_exactly(tmp_path: Path) -> None:
    from archsearch.plugins.patchtst_ci import build
    from archsearch.search.objective import train_settings
    from archsearch.training.trainer import seed_everything, train

    config = load_config(small_paper(tmp_path))
    data = prepare_data(config, load_data(config), 8)
    arch = config.fixed_architecture()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = []
        for _ in range(2):
            seed_everything(config.training.seed)
            model = build(arch, model_spec(config, data))
            settings = train_settings(attrs.asdict(config.training), config.training.seed)
            runs.append(train(model, data, settings))
    finally:
        torch.set_num_threads(threads)
    a, b = runs
    assert [(h["train_loss"], h["val_loss"], h["lr"]) for h in a.history] == [
        (h["train_loss"], h["val_loss"], h["lr"]) for h in b.history
    ]
    assert a.test_loss == b.test_loss and a.test_metrics == b.test_metrics
    assert [h["lr"] for h in a.history] == [1e-3, 1e-3]  # type3 holds the rate for 4 epochs
