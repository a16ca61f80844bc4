"""Looking at a config's matrix without running it: ``plan``, ``status`` and ``export``."""

from __future__ import annotations

import csv
from pathlib import Path
from statistics import fmean
from typing import Any

import optuna

from archsearch.budget import format_budget
from archsearch.config import Config
from archsearch.errors import ArchsearchError
from archsearch.outputs import (
    CSV_NAME,
    atomic_file,
    best_json_path,
    check_output_dir,
    csv_lock,
    per_horizon_files,
    read_results,
    write_json,
)
from archsearch.records import ALL_COLUMNS, CellSummary, cell_of, is_recorded, study_uid
from archsearch.search.confirm import confirmed_block
from archsearch.search.engine import Engine
from archsearch.search.matrix import build_cells, load_data, model_spec, prepare_data
from archsearch.search.tally import tally
from archsearch.search.trial_reader import read_trials
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
    frame = load_data(config)  # the windows' shapes, without tensors: plan needs no torch
    datasets = {h: prepare_data(config, frame, h, tensors=False) for h in config.horizons}
    epochs = _mean_value(config, "epochs")
    rows = []
    for cell in build_cells(config, engine.plugins, datasets):
        data = datasets[cell.horizon]
        spec = model_spec(config, data)
        shape = activation_shape(engine.plugins.variant(config.model.variant), cell.architectures[0], spec, 1)
        tokens = shape.sequences * shape.tokens  # per sample
        windows = int(data.split_info["train"]["windows"])
        params = [a.param_count for a in cell.architectures]
        mean_params = fmean(params)
        confirm = config.confirm.top_k * config.confirm.seeds if config.confirm else 0
        trials = config.n_trials + confirm
        rows.append(
            {
                "study_name": cell.study_name,
                "budget": cell.budget,
                "horizon": cell.horizon,
                "architectures": len(cell.architectures),
                "n_trials": config.n_trials,
                "confirm_trials": confirm,
                "params_min": min(params),
                "params_max": max(params),
                "train_windows": windows,
                "param_sample_epochs": mean_params * windows * epochs * trials,
                "flops": 6 * mean_params * tokens * windows * epochs * trials,
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
        if _of_experiment(s, config.experiment) and wanted(cell_of(s))
    ]
    found.sort(key=lambda s: (cell_of(s)["budget"], cell_of(s)["horizon"], s.study_name))
    return [optuna.load_study(study_name=s.study_name, storage=storage) for s in found]


def _of_experiment(study: Any, experiment: str) -> bool:
    """Whether ``study`` is one of ``experiment``'s cells: its cell attribute names the experiment
    exactly (``sec_b``'s studies share the name prefix ``sec_`` but are not ``sec``'s)."""
    cell = cell_of(study)
    return cell is not None and cell.get("experiment") == experiment


def existing_storage(config: Config, doing: str) -> optuna.storages.BaseStorage:
    """The config's storage when it holds the experiment; else an error saying there is nothing
    to ``doing`` yet, and nothing is created (no empty SQLite file, no output folder)."""
    url = config.storage_url
    hint = "run `python -m archsearch run` on this config first"
    require_storage_file(url, doing, hint)
    storage = open_storage(url)
    if not any(_of_experiment(s, config.experiment) for s in storage.get_all_studies()):
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
        cell = cell_of(study)  # counted in the storage: not every trial's attributes loaded
        s = tally(config.experiment, cell["budget"], cell["horizon"], study)
        best = s.best or {}
        rows.append(
            {
                "study_name": study.study_name,
                "complete": s.n_complete,
                "pruned": s.n_pruned,
                "failed": s.n_failed,
                "running": s.n_running,
                "waiting": s.n_waiting,
                "confirm_done": s.confirm_done,
                "confirm_total": s.confirm_done + s.confirm_failed + s.confirm_pending,
                "confirm_planned": config.confirm.top_k * config.confirm.seeds if config.confirm else 0,
                "best_value": best.get("val_loss"),
                "best_trial": best.get("trial"),
                "best_arch": f"d{best.get('d_model')} L{best.get('n_layers')} ({best.get('param_count', 0):,})"
                if best
                else "",
            }
        )
    return rows


def export(config: Config) -> list[Path]:
    """Rebuild ``experiment_results.csv`` and the best JSON files from the storage alone (under
    the CSV's lock: a run appending rows meanwhile waits, then reads the new file)."""
    check_output_dir(config.output_path)
    storage = existing_storage(config, "export")
    with csv_lock(config.output_path):
        return rebuild_files(config, storage)


def rebuild_files(config: Config, storage: optuna.storages.BaseStorage) -> list[Path]:
    """The CSV and best JSON files of the experiment from the storage: ``export``, and a run that
    finds its CSV torn or of another storage (the caller holds the CSV's lock).

    Each study's trials are read once and the CSV is streamed row by row into a temporary file
    that then replaces the old one (a reader sees the old file or the new one; a full disk leaves
    the old one). Rows of other experiments in the old file (sharing the output directory) are
    kept, first."""
    out_dir = config.output_path
    studies = experiment_studies(config, storage)
    names = {s.study_name for s in studies}
    old = read_results(out_dir / CSV_NAME)
    others = [
        r
        for r in (old.rows if old else [])
        if r.get("experiment") not in ("", config.experiment) and r.get("study_name") not in names
    ]
    per_horizon = per_horizon_files(config)
    written = []
    with atomic_file(out_dir / CSV_NAME) as f:
        writer = csv.DictWriter(f, fieldnames=ALL_COLUMNS, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(others)
        for study in studies:
            cell = cell_of(study)
            direction = study.direction.name.lower()
            b, h, uid = cell["budget"], cell["horizon"], study_uid(study)
            summary = CellSummary(config.experiment, b, h, study.study_name, direction, study_uid=uid)
            trials = read_trials(study)
            for t in trials:
                summary.add(t)
                if is_recorded(t):
                    writer.writerow(summary.record(t))
            summary.confirmed = confirmed_block(trials, direction)
            doc = summary.best_json()
            if doc is not None:
                budget = format_budget(summary.budget)
                path = best_json_path(out_dir, summary.experiment, budget, summary.horizon, per_horizon)
                write_json(path, doc)
                written.append(path)
    return [out_dir / CSV_NAME, *written]
