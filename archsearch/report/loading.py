"""The report's data: an experiment's trials read from its Optuna storage (given a config, or an
output directory holding ``archsearch.db``) or from ``experiment_results.csv`` alone, one
:class:`CellReport` per cell (budget x horizon) with its counts, best trial and parameter importance.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from archsearch.budget import parse_budget
from archsearch.config import DB_NAME
from archsearch.errors import ArchsearchError
from archsearch.outputs import CSV_NAME
from archsearch.report.cells import CellReport, ReportData, best_row, typed_row
from archsearch.report.importance import rank_importance, storage_importance

REPORT_DIR = "report"
STUDY_NAME = re.compile(r"^(?P<experiment>.+)_(?P<budget>[0-9.]+[KMBGT]?)_h(?P<horizon>\d+)$")
#: An architecture's key (``archsearch.architecture.Architecture.key``: ``d16-L12-h2-ff32``).
ARCH_KEY = re.compile(r"^d(?P<d_model>\d+)-L(?P<n_layers>\d+)-h\d+-ff\d+$")


# -- reading -------------------------------------------------------------------------------------
def load(source: str | Path, storage: str | None = None) -> ReportData:
    """Read a config file, an output directory or a results CSV (see the module docstring)."""
    path = Path(source)
    if not path.exists():
        raise ArchsearchError(
            f"{path} does not exist; give the experiment's config file or its output directory"
        )
    if path.is_dir():
        if storage is not None:
            return load_storage(storage, path / REPORT_DIR)
        db = path / DB_NAME
        notes = []
        if db.is_file():
            try:
                return load_storage(f"sqlite:///{db}", path / REPORT_DIR)
            except ArchsearchError as exc:
                notes.append(f"{db} could not be read ({exc}); the report is built from the CSV")
        csv_path = path / CSV_NAME
        if not csv_path.is_file():
            raise ArchsearchError(
                f"{csv_path} does not exist: {path} holds no results of archsearch (no {CSV_NAME} and "
                f"no {DB_NAME}). Give the output directory of a run, or the experiment's config."
            )
        data = load_csv(csv_path, path / REPORT_DIR)
        data.notes[:0] = notes
        return data
    if path.suffix.lower() == ".csv":
        return load_csv(path, path.parent / REPORT_DIR)
    return load_config_storage(path, storage)


def load_config_storage(path: Path, storage: str | None = None) -> ReportData:
    """The studies of a config's experiment in its storage (running ones included)."""
    from archsearch.config import apply_overrides, load_config
    from archsearch.search.overview import existing_storage, experiment_studies

    config = load_config(path)
    if storage is not None:
        config = apply_overrides(config, storage=storage)
    studies = experiment_studies(config, existing_storage(config, "report"))
    cells = [_cell_from_study(s, n_trials=config.n_trials) for s in studies]
    found = {(c.budget, c.horizon) for c in cells}
    for budget in config.budgets:  # cells of the config that have not started
        for horizon in config.horizons:
            if (budget, horizon) not in found:
                cells.append(
                    CellReport(
                        config.experiment,
                        budget,
                        horizon,
                        config.study_name(budget, horizon),
                        config.direction,
                        n_trials=config.n_trials,
                        importance_note="not started",
                    )
                )
    return ReportData(
        title=config.experiment,
        source=f"storage {shown_storage(config.storage_url)} (config {path.resolve()})",
        from_storage=True,
        cells=sorted(cells, key=_cell_order),
        default_output=config.output_path / REPORT_DIR,
    )


def load_storage(url: str, default_output: Path) -> ReportData:
    """Every archsearch cell study in a storage URL, of every experiment in it."""
    import optuna

    from archsearch.records import cell_of
    from archsearch.storage import open_storage, redact, require_storage_file

    require_storage_file(url, "report", "give the experiment's config or its output directory")
    storage = open_storage(url)
    try:
        names = sorted(s.study_name for s in storage.get_all_studies() if cell_of(s) is not None)
    except Exception as exc:  # noqa: BLE001 - a storage we cannot read is the user's to fix
        raise ArchsearchError(f"storage {redact(url)} cannot be read: {type(exc).__name__}: {exc}") from None
    if not names:
        raise ArchsearchError(f"storage {redact(url)} holds no archsearch study")
    studies = [optuna.load_study(study_name=n, storage=storage) for n in names]
    cells = sorted((_cell_from_study(s) for s in studies), key=_cell_order)
    experiments = sorted({c.experiment for c in cells})
    return ReportData(
        title=", ".join(experiments),
        source=f"storage {shown_storage(url)}",
        from_storage=True,
        cells=cells,
        default_output=default_output,
    )


def shown_storage(url: str) -> str:
    """A storage as the report names it: a SQLite or journal file by its absolute path (the
    report may be read far from where the run started), any other URL with its password hidden."""
    from archsearch.storage import redact, storage_file

    file = storage_file(url)
    if file is None:
        return redact(url)
    kind = "SQLite" if url.startswith("sqlite:") else "journal"
    return f"{file.resolve()} ({kind})"


def _cell_order(c: CellReport) -> tuple[str, int, int]:
    return (c.experiment, c.budget, c.horizon)


def _cell_from_study(study: Any, n_trials: int | None = None) -> CellReport:
    from optuna.trial import TrialState

    from archsearch.records import CONFIRM, CellSummary, cell_of, is_surplus, stage_of, trial_record
    from archsearch.search.confirm import summarize
    from archsearch.search.trial_reader import read_trials

    info = cell_of(study)
    direction = study.direction.name.lower()
    cell = CellReport(
        info.get("experiment", ""),
        int(info["budget"]),
        int(info["horizon"]),
        study.study_name,
        direction,
        n_trials=n_trials,
    )
    # running and waiting: every trial (confirmation ones too); complete, pruned, failed: the search's
    counts = CellSummary(cell.experiment, cell.budget, cell.horizon, study.study_name, direction)
    found = CellSummary(cell.experiment, cell.budget, cell.horizon, study.study_name, direction)
    trials = read_trials(study)
    search = []
    for t in trials:
        counts.add(t)  # skips the claims a worker gave back (archsearch.search.coordination)
        if is_surplus(t):
            continue
        if stage_of(t) == CONFIRM:  # repeats of search configurations: counted apart, not plotted
            cell.n_confirm += 1
            cell.n_confirm_done += t.state.is_finished()
            continue
        found.add(t)
        search.append(t)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            cell.trials.append(typed_row(trial_record(t, study.study_name)))
    cell.n_complete, cell.n_pruned, cell.n_failed = found.n_complete, found.n_pruned, found.n_failed
    cell.n_running, cell.n_waiting = counts.n_running, counts.n_waiting
    cell.best = best_row(cell.trials, direction)
    cell.confirmation = summarize(trials, direction)
    if cell.confirmation is None and cell.n_confirm:
        cell.confirm_note = (
            f"not confirmed yet ({cell.n_confirm_done} of {cell.n_confirm} confirmation trials finished, "
            "none complete): single best trial"
        )
    cell.architectures = _architectures(study, trials)
    storage_importance(cell, study, search)
    return cell


def _architectures(study: Any, trials: Sequence[Any]) -> list[tuple[int, int]]:
    """The cell's ``(d_model, n_layers)`` list: its fingerprint's architectures, else the trials'."""
    from archsearch.records import fingerprint_of, trial_setup

    keys = ((fingerprint_of(study) or {}).get("encoding") or {}).get("architectures") or []
    found = [m for m in (ARCH_KEY.match(str(k)) for k in keys) if m]
    if found:
        return sorted({(int(m["d_model"]), int(m["n_layers"])) for m in found})
    setups = (trial_setup(t) for t in trials)
    return sorted({(s["d_model"], s["n_layers"]) for s in setups if s.get("d_model") and s.get("n_layers")})


def load_csv(path: Path, default_output: Path) -> ReportData:
    """The cells of ``experiment_results.csv`` (finished trials only: no running ones)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ArchsearchError(f"{path} cannot be read as a results CSV: {exc}") from None
    if not rows or "val_loss" not in rows[0]:
        raise ArchsearchError(
            f"{path} holds no trial rows of archsearch (expected the header of {CSV_NAME} and a row per trial)"
        )
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = (
            row.get("study_name")
            or f"{row.get('experiment', '')}_{row.get('budget', '')}_h{row.get('horizon', '')}"
        )
        groups.setdefault(key, []).append(row)
    cells = []
    for name, group in groups.items():
        where = _cell_key(name, group)
        if where is None:
            continue  # rows that name no budget and horizon cannot be placed in a cell
        experiment, budget, horizon = where
        cells.append(_csv_cell(experiment, budget, horizon, name, group))
    if not cells:
        raise ArchsearchError(f"{path}: no row names its budget and horizon (columns budget, horizon)")
    cells.sort(key=_cell_order)
    return ReportData(
        title=", ".join(sorted({c.experiment for c in cells})),
        source=f"CSV {path}",
        from_storage=False,
        cells=cells,
        default_output=default_output,
        notes=[
            "Read from the results CSV, which records finished trials only: trials still running are "
            f"not shown (report from the config, or from an output directory holding {DB_NAME}, for them)."
        ],
    )


def _csv_cell(
    experiment: str, budget: int, horizon: int, name: str, group: Sequence[dict[str, Any]]
) -> CellReport:
    """One cell of the results CSV: its search rows (confirmation rows are only counted)."""
    cell = CellReport(experiment, budget, horizon, name)
    for raw in group:
        t = typed_row(raw)
        if raw.get("stage") == "confirm":  # the CSV does not link a repeat to its configuration
            cell.n_confirm += 1
            continue
        state = t["state"]
        if state == "COMPLETE":
            cell.n_complete += 1
        elif state == "PRUNED":
            cell.n_pruned += 1
        elif state == "FAIL":
            cell.n_failed += 1
        if state in ("COMPLETE", "PRUNED"):
            cell.trials.append(t)
    cell.best = best_row(cell.trials, cell.direction)
    cell.architectures = sorted(
        {(t["d_model"], t["n_layers"]) for t in cell.trials if t["d_model"] and t["n_layers"]}
    )
    if cell.n_confirm:
        cell.confirm_note = (
            f"not confirmed here (single best trial): the CSV holds {cell.n_confirm} confirmation rows but "
            f"not which configuration each repeats; report from the storage ({DB_NAME}) for the confirmed answer"
        )
    rank_importance(cell)
    return cell


def _cell_key(name: str, group: Sequence[dict[str, Any]]) -> tuple[str, int, int] | None:
    from archsearch.errors import BudgetError

    for row in group:
        try:
            if row.get("budget") and str(row.get("horizon", "")).strip():
                return row.get("experiment", ""), parse_budget(row["budget"]), int(float(row["horizon"]))
        except (BudgetError, ValueError):
            continue
    match = STUDY_NAME.match(name)
    if match:
        try:
            return match["experiment"], parse_budget(match["budget"]), int(match["horizon"])
        except BudgetError:
            return None
    return None
