"""Looking at a config's matrix without running it: ``plan``, ``status`` and ``export``."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from statistics import fmean
from typing import Any

import optuna

from archsearch.budget import format_budget
from archsearch.config import Config
from archsearch.errors import ArchsearchError
from archsearch.outputs import (
    CSV_NAME,
    atomic_write,
    best_json_path,
    check_output_dir,
    per_horizon_files,
    write_json,
)
from archsearch.records import ALL_COLUMNS, CellSummary, cell_of, is_recorded, trial_record
from archsearch.search.engine import Engine
from archsearch.search.matrix import model_spec
from archsearch.storage import open_storage, redact, require_storage_file
from archsearch.training.memory import activation_shape


def _mean_value(config: Config, name: str) -> float:
    spec = config.training_search_space.get(name)
    if spec is None:
        return float(getattr(config.training, name))
    if spec.type == "categorical":
        return fmean(float(c) for c in spec.choices)
    if spec.type == "log_uniform":
        import math

        return math.exp((math.log(spec.low) + math.log(spec.high)) / 2)
    return (spec.low + spec.high) / 2


def plan_rows(config: Config) -> list[dict[str, Any]]:
    """Each cell: study name, architectures, trials and the compute they imply."""
    engine = Engine(config)
    datasets = engine.datasets()
    epochs = _mean_value(config, "epochs")
    rows = []
    for cell in engine.cells():
        data = datasets[cell.horizon]
        spec = model_spec(config, data)
        shape = activation_shape(engine.plugins.variant(config.model.variant), cell.architectures[0], spec, 1)
        tokens = shape.sequences * shape.tokens  # per sample
        windows = int(data.split_info["train"]["windows"])
        params = [a.param_count for a in cell.architectures]
        mean_params = fmean(params)
        rows.append(
            {
                "study_name": cell.study_name,
                "budget": cell.budget,
                "horizon": cell.horizon,
                "architectures": len(cell.architectures),
                "n_trials": config.n_trials,
                "params_min": min(params),
                "params_max": max(params),
                "train_windows": windows,
                "param_sample_epochs": mean_params * windows * epochs * config.n_trials,
                "flops": 6 * mean_params * tokens * windows * epochs * config.n_trials,
            }
        )
    return rows


def experiment_studies(
    config: Config, storage: optuna.storages.BaseStorage, sliced: bool = False
) -> list[optuna.Study]:
    """The experiment's cell studies in the storage (not the coverage markers), by budget and
    horizon; ``sliced``: only the config's budgets and horizons (a ``--budget``/``--horizon``
    slice), when it lists budgets."""

    def wanted(cell: dict[str, Any]) -> bool:
        return (
            not sliced
            or not config.budgets
            or (cell["budget"] in config.budgets and cell["horizon"] in config.horizons)
        )

    found = [
        s
        for s in storage.get_all_studies()
        if s.study_name.startswith(f"{config.experiment}_") and cell_of(s) is not None and wanted(cell_of(s))
    ]
    found.sort(key=lambda s: (cell_of(s)["budget"], cell_of(s)["horizon"], s.study_name))
    return [optuna.load_study(study_name=s.study_name, storage=storage) for s in found]


def _summary(config: Config, study: optuna.Study) -> CellSummary:
    cell = cell_of(study)
    return CellSummary.from_trials(config.experiment, cell["budget"], cell["horizon"], study)


def existing_storage(config: Config, doing: str) -> optuna.storages.BaseStorage:
    """The config's storage when it holds the experiment; else an error saying there is nothing
    to ``doing`` yet, and nothing is created (no empty SQLite file, no output folder)."""
    url = config.storage_url
    hint = "run `python -m archsearch run` on this config first"
    require_storage_file(url, doing, hint)
    storage = open_storage(url)
    prefix = f"{config.experiment}_"
    if not any(s.study_name.startswith(prefix) and cell_of(s) for s in storage.get_all_studies()):
        raise ArchsearchError(
            f"storage {redact(url)} holds no study of experiment {config.experiment!r}; nothing to {doing} "
            f"yet ({hint})"
        )
    return storage


def status_rows(config: Config) -> list[dict[str, Any]]:
    """One row per cell study of the experiment in the storage; with budgets in the config, only
    its budgets and horizons (a ``--budget``/``--horizon`` slice shows its cells)."""
    storage = existing_storage(config, "show")
    rows = []
    for study in experiment_studies(config, storage, sliced=True):
        s = _summary(config, study)
        best = s.best or {}
        rows.append(
            {
                "study_name": study.study_name,
                "complete": s.n_complete,
                "pruned": s.n_pruned,
                "failed": s.n_failed,
                "running": s.n_running,
                "waiting": s.n_waiting,
                "best_value": best.get("val_loss"),
                "best_trial": best.get("trial"),
                "best_arch": f"d{best.get('d_model')} L{best.get('n_layers')} ({best.get('param_count', 0):,})"
                if best
                else "",
            }
        )
    return rows


def export(config: Config) -> list[Path]:
    """Rebuild ``experiment_results.csv`` and the best JSON files from the storage alone."""
    check_output_dir(config.output_path)
    storage = existing_storage(config, "export")
    out_dir = config.output_path
    per_horizon = per_horizon_files(config)
    rows = []
    written = []
    for study in experiment_studies(config, storage):
        rows += [
            trial_record(t, study.study_name) for t in study.get_trials(deepcopy=False) if is_recorded(t)
        ]
        summary = _summary(config, study)
        doc = summary.best_json()
        if doc is not None:
            path = best_json_path(
                out_dir, summary.experiment, format_budget(summary.budget), summary.horizon, per_horizon
            )
            write_json(path, doc)
            written.append(path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ALL_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out_dir / CSV_NAME, buffer.getvalue())
    return [out_dir / CSV_NAME, *written]
