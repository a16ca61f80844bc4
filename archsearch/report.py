"""Reports a researcher can look at: ``python -m archsearch report CONFIG|OUTPUT_DIR``.

The report reads an experiment's trials from its Optuna storage (given a config, or an output
directory holding ``archsearch.db``) or from ``experiment_results.csv`` alone, and writes into
``OUTPUT_DIR/report/``:

- ``report.html``: one self-contained page (inline CSS, the figures as base64 data URIs, nothing
  fetched from the network; a two-line inline script only records whether every image loaded);
- the figures as PNGs: ``scaling.png`` (best validation loss against budget, one line per
  horizon) and per budget ``architecture_{budget}.png`` (val loss against n_layers, d_model and
  n_layers/d_model, coloured by learning rate, extremes marked), ``history_{budget}.png`` (val loss
  per trial with the best so far) and ``importance_{budget}.png`` (parameter importance);
- ``report.md``: the best-per-cell table, the counts and links to the PNGs, for a terminal or a PR.

matplotlib is imported inside the functions that draw, so the other commands stay fast.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from archsearch.budget import format_budget, parse_budget
from archsearch.config import DB_NAME
from archsearch.errors import ArchsearchError
from archsearch.plugins.sinks import CSV_NAME
from archsearch.records import TRAINING_FIELDS

REPORT_DIR = "report"
FORMATS = ("html", "png", "md")
#: Complete trials a cell needs before parameter importance is computed.
MIN_IMPORTANCE_TRIALS = 3
INT_FIELDS = (
    "trial",
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "param_count",
    "epochs",
    "batch_size",
    "warmup_steps",
    "best_epoch",
    "epochs_run",
)
FLOAT_FIELDS = (
    "learning_rate",
    "weight_decay",
    "dropout",
    "val_loss",
    "train_loss",
    "duration_s",
    "baseline_loss",
    "test_loss",
    "val_auc",
    "val_accuracy",
)
#: Numeric columns whose rank correlation with the val loss is the CSV-only importance.
RANK_FIELDS = ("d_model", "n_layers", "n_heads", "d_ff", "param_count", *TRAINING_FIELDS)
STUDY_NAME = re.compile(r"^(?P<experiment>.+)_(?P<budget>[0-9.]+[KMBGT]?)_h(?P<horizon>\d+)$")
FANOVA = "fANOVA (Optuna), over complete trials"
SPEARMAN = "Spearman rank correlation with val loss, over complete trials"


# -- what a report holds -------------------------------------------------------------------------
@attrs.define
class CellReport:
    """One cell (budget x horizon): its finished trials, counts, best trial and importances."""

    experiment: str
    budget: int
    horizon: int
    study_name: str
    direction: str = "minimize"
    trials: list[dict[str, Any]] = attrs.Factory(list)  # complete and pruned trials, typed
    n_complete: int = 0
    n_pruned: int = 0
    n_failed: int = 0
    n_running: int = 0
    n_waiting: int = 0
    best: dict[str, Any] | None = None
    importance: dict[str, float] = attrs.Factory(dict)
    importance_method: str = ""
    importance_note: str = ""
    n_trials: int | None = None  # the config's target, when known

    @property
    def label(self) -> str:
        return f"{format_budget(self.budget)} h{self.horizon}"

    @property
    def finished(self) -> bool | None:
        """Whether the cell has its ``n_trials`` complete or pruned trials (None: unknown)."""
        if self.n_trials is None:
            return None
        return self.n_complete + self.n_pruned >= self.n_trials

    def complete(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["state"] == "COMPLETE" and _finite(t.get("val_loss"))]

    def pruned(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["state"] == "PRUNED" and _finite(t.get("val_loss"))]


@attrs.define
class ReportData:
    title: str
    source: str
    from_storage: bool
    cells: list[CellReport]
    default_output: Path
    notes: list[str] = attrs.Factory(list)

    @property
    def budgets(self) -> list[int]:
        return sorted({c.budget for c in self.cells})

    @property
    def horizons(self) -> list[int]:
        return sorted({c.horizon for c in self.cells})

    def cells_of(self, budget: int) -> list[CellReport]:
        return [c for c in self.cells if c.budget == budget]

    @property
    def in_progress(self) -> tuple[int, int]:
        """Trials running, and trials waiting in the queue of a cell that is not finished."""
        running = sum(c.n_running for c in self.cells)
        waiting = sum(c.n_waiting for c in self.cells if c.finished is not True)
        return running, waiting

    @property
    def short_cells(self) -> list[CellReport]:
        """Cells below their ``n_trials`` (known with a config only)."""
        return [c for c in self.cells if c.finished is False]

    def partial_notice(self) -> str | None:
        running, waiting = self.in_progress
        short = self.short_cells
        if not running and not waiting and not short:
            return None
        parts = []
        if running or waiting:
            n = running + waiting
            parts.append(
                f"Partial results: {n} trial{'s' if n != 1 else ''} running/waiting "
                f"({running} running, {waiting} waiting in the queue)."
            )
        else:
            parts.append("Partial results.")
        if short:
            target = short[0].n_trials
            verb = "has" if len(short) == 1 else "have"
            parts.append(
                f"{len(short)} of {len(self.cells)} cells {verb} fewer than n_trials ({target}) finished trials."
            )
        parts.append(
            "The search is still running, was stopped, or a process died mid-trial (re-run the same "
            "`run` command to resume and retry it); the numbers below will change."
        )
        return " ".join(parts)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """A trial row with numbers as numbers and missing values as None (from a record or the CSV)."""
    out = dict(row)
    for key in INT_FIELDS:
        out[key] = _number(row.get(key), int)
    for key in FLOAT_FIELDS:
        out[key] = _number(row.get(key), float)
    coverage = row.get("coverage")
    out["coverage"] = coverage is True or str(coverage).lower() == "true"
    out["state"] = str(row.get("state") or "COMPLETE")  # rows from before the state column
    return out


def _number(value: Any, kind: type) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if kind is int and number.is_integer():
        return int(number)
    return number if math.isfinite(number) else None


def _best(trials: Sequence[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    done = [t for t in trials if t["state"] == "COMPLETE" and _finite(t.get("val_loss"))]
    if not done:
        return None
    pick = max if direction == "maximize" else min
    return pick(done, key=lambda t: t["val_loss"])


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
    from archsearch.engine import make_storage, redact
    from archsearch.planning import experiment_studies

    config = load_config(path)
    if storage is not None:
        config = apply_overrides(config, storage=storage)
    url = config.storage_url
    _check_sqlite(url, f"run `python -m archsearch run {path}` first")
    studies = experiment_studies(config, make_storage(config))
    if not studies:
        raise ArchsearchError(
            f"storage {redact(url)} holds no study of experiment {config.experiment!r}; nothing to report "
            f"yet (run `python -m archsearch run {path}` first)"
        )
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
        source=f"storage {redact(url)} (config {path})",
        from_storage=True,
        cells=sorted(cells, key=_cell_order),
        default_output=config.output_path / REPORT_DIR,
    )


def _check_sqlite(url: str, hint: str) -> None:
    if url.startswith("sqlite:///"):
        file = Path(url.removeprefix("sqlite:///"))
        if not file.is_file():
            raise ArchsearchError(f"storage file {file} does not exist: nothing to report yet ({hint})")


def load_storage(url: str, default_output: Path) -> ReportData:
    """Every archsearch cell study in a storage URL, of every experiment in it."""
    import optuna

    from archsearch.engine import CELL_ATTR, open_storage, redact

    _check_sqlite(url, "give the experiment's config or its output directory")
    storage = open_storage(url)
    try:
        names = sorted(s.study_name for s in storage.get_all_studies() if CELL_ATTR in s.user_attrs)
    except Exception as exc:  # noqa: BLE001 - a storage we cannot read is the user's to fix
        raise ArchsearchError(f"storage {redact(url)} cannot be read: {type(exc).__name__}: {exc}") from None
    if not names:
        raise ArchsearchError(f"storage {redact(url)} holds no archsearch study")
    studies = [optuna.load_study(study_name=n, storage=storage) for n in names]
    cells = sorted((_cell_from_study(s) for s in studies), key=_cell_order)
    experiments = sorted({c.experiment for c in cells})
    return ReportData(
        title=", ".join(experiments),
        source=f"storage {redact(url)}",
        from_storage=True,
        cells=cells,
        default_output=default_output,
    )


def _cell_order(c: CellReport) -> tuple[str, int, int]:
    return (c.experiment, c.budget, c.horizon)


def _cell_from_study(study: Any, n_trials: int | None = None) -> CellReport:
    from optuna.trial import TrialState

    from archsearch.engine import CELL_ATTR
    from archsearch.records import CellSummary, trial_record

    info = study.user_attrs[CELL_ATTR]
    direction = study.direction.name.lower()
    cell = CellReport(
        info.get("experiment", ""),
        int(info["budget"]),
        int(info["horizon"]),
        study.study_name,
        direction,
        n_trials=n_trials,
    )
    counts = CellSummary(cell.experiment, cell.budget, cell.horizon, study.study_name, direction)
    for t in study.get_trials(deepcopy=False):
        counts.add(t)  # skips the claims a worker gave back (archsearch.coordination)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not t.user_attrs.get("surplus"):
            cell.trials.append(_typed(trial_record(t, study.study_name)))
    cell.n_complete, cell.n_pruned, cell.n_failed = counts.n_complete, counts.n_pruned, counts.n_failed
    cell.n_running, cell.n_waiting = counts.n_running, counts.n_waiting
    cell.best = _best(cell.trials, direction)
    _storage_importance(cell, study)
    return cell


def _storage_importance(cell: CellReport, study: Any) -> None:
    """Optuna's fANOVA importances over the parameters that vary; else the rank correlation."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        cell.importance_note = _too_few(len(complete))
        return
    names = set.intersection(*(set(t.params) for t in complete))
    varied = sorted(n for n in names if len({repr(t.params[n]) for t in complete}) > 1)
    if not varied:
        cell.importance_note = "no parameter took 2 or more distinct values among the complete trials"
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=varied
            )
    except Exception as exc:  # noqa: BLE001 - fall back to the rank correlation
        _rank_importance(cell)
        cell.importance_note = (
            f"Optuna's importance failed ({type(exc).__name__}: {exc}); {cell.importance_note}"
        )
        return
    cell.importance = dict(values)
    cell.importance_method = FANOVA


def _too_few(n: int) -> str:
    return f"{n} complete trial{'s' if n != 1 else ''}; importance needs at least {MIN_IMPORTANCE_TRIALS}"


def _rank_importance(cell: CellReport) -> None:
    """Spearman's rank correlation of each varying numeric column with the val loss."""
    import pandas as pd

    done = cell.complete()
    if len(done) < MIN_IMPORTANCE_TRIALS:
        cell.importance_note = _too_few(len(done))
        return
    frame = pd.DataFrame([{k: t.get(k) for k in (*RANK_FIELDS, "val_loss")} for t in done], dtype=float)
    ranks = frame.rank()
    out = {}
    for key in RANK_FIELDS:
        column = frame[key].dropna()
        if column.nunique() < 2:
            continue
        rho = ranks[key].corr(ranks["val_loss"])
        if _finite(rho):
            out[key] = float(rho)
    cell.importance = dict(sorted(out.items(), key=lambda kv: -abs(kv[1])))
    cell.importance_method = SPEARMAN
    if not out:
        cell.importance_note = "no parameter took 2 or more distinct values among the complete trials"
    else:
        cell.importance_note = "rank correlation (the results CSV holds no Optuna study to run fANOVA on)"


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
        cell = CellReport(experiment, budget, horizon, name)
        for raw in group:
            t = _typed(raw)
            state = t["state"]
            if state == "COMPLETE":
                cell.n_complete += 1
            elif state == "PRUNED":
                cell.n_pruned += 1
            elif state == "FAIL":
                cell.n_failed += 1
            if state in ("COMPLETE", "PRUNED"):
                cell.trials.append(t)
        cell.best = _best(cell.trials, cell.direction)
        _rank_importance(cell)
        cells.append(cell)
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


# -- figures -------------------------------------------------------------------------------------
@attrs.define
class Figure:
    name: str
    title: str
    png: bytes
    budget: int | None = None


HORIZON_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
ARCH_AXES = (
    ("n_layers", "n_layers (log scale)", lambda t: t["n_layers"]),
    ("d_model", "d_model (log scale)", lambda t: t["d_model"]),
    (
        "depth/width",
        "depth/width ratio n_layers / d_model (log scale)",
        lambda t: t["n_layers"] / t["d_model"] if t["n_layers"] and t["d_model"] else None,
    ),
)
EXTREME_SHORT = {
    "smallest d_model": "min d_model",
    "largest d_model": "max d_model",
    "fewest layers": "min layers",
    "most layers": "max layers",
}


def _new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.85")


def _upper_limit(values: Sequence[float], direction: str = "minimize") -> float | None:
    """A y limit that keeps a few diverged trials from flattening the rest (None: no outliers;
    never when the loss is maximised, where high values are the good ones)."""
    import numpy as np

    if len(values) < 5 or direction != "minimize":
        return None
    q1, q3 = np.percentile(values, [25, 75])
    limit = q3 + 3 * max(q3 - q1, 1e-9)
    return float(limit) if max(values) > limit else None


def _clip(ys: Sequence[float], limit: float | None) -> tuple[list[float], list[bool]]:
    if limit is None:
        return list(ys), [False] * len(ys)
    return [min(y, limit) for y in ys], [y > limit for y in ys]


def _lr_norm(data: ReportData) -> Any:
    from matplotlib.colors import LogNorm

    lrs = [t["learning_rate"] for c in data.cells for t in c.complete() if _finite(t["learning_rate"])]
    lrs = [v for v in lrs if v > 0]
    if not lrs:
        return LogNorm(1e-4, 1e-2)
    lo, hi = min(lrs), max(lrs)
    if hi / lo < 1.5:
        lo, hi = lo / 1.5, hi * 1.5
    return LogNorm(lo, hi)


def _plain_log_axis(ax: Any, values: Iterable[float], integer: bool) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    ax.set_xscale("log")
    distinct = sorted(set(values))
    if integer and 0 < len(distinct) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(distinct))
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if distinct:
        lo, hi = distinct[0], distinct[-1]
        pad = (hi / lo) ** 0.15 if hi > lo else 1.6
        ax.set_xlim(lo / pad, hi * pad)


def _jitter(t: dict[str, Any]) -> float:
    """A small, repeatable spread of trials of one architecture (a factor around 1)."""
    return 1 + 0.06 * (((t["trial"] or 0) * 0.618034) % 1 - 0.5)


def _extremes(cell: CellReport) -> dict[tuple[int, int, int, int], list[str]]:
    """The architectures tried in a cell that hold an extreme of d_model or n_layers."""
    from archsearch.budget_grid import EXTREMES

    archs = {
        (t["d_model"], t["n_layers"], t["n_heads"], t["d_ff"])
        for t in cell.trials
        if t["d_model"] is not None and t["n_layers"] is not None
    }
    out: dict[tuple[int, int, int, int], list[str]] = {}
    for label, attr, pick in EXTREMES:
        if not archs:
            break
        index = 0 if attr == "d_model" else 1
        value = pick(a[index] for a in archs)
        for a in archs:
            if a[index] == value:
                out.setdefault(a, []).append(EXTREME_SHORT[label])
    return out


def _arch_key(t: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    return (t["d_model"], t["n_layers"], t["n_heads"], t["d_ff"])


def scaling_figure(data: ReportData) -> Figure:
    """Best validation loss against budget (log x axis), one line per horizon."""
    fig, axes = _new_figure(8.5, 4.8)
    ax = axes[0][0]
    budgets = data.budgets
    plotted = False
    for i, horizon in enumerate(data.horizons):
        colour = HORIZON_COLOURS[i % len(HORIZON_COLOURS)]
        cells = [c for c in data.cells if c.horizon == horizon and c.best is not None]
        if not cells:
            continue
        cells.sort(key=lambda c: c.budget)
        xs = [c.budget for c in cells]
        ys = [c.best["val_loss"] for c in cells]
        ax.plot(xs, ys, marker="o", ms=7, lw=2, color=colour, label=f"h{horizon}: best val loss")
        for c in cells:
            b = c.best
            ax.annotate(
                f"d{b['d_model']} L{b['n_layers']}",
                (c.budget, b["val_loss"]),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
                color=colour,
            )
        baselines = [c.best["baseline_loss"] for c in cells if _finite(c.best.get("baseline_loss"))]
        if baselines:
            ax.axhline(
                sum(baselines) / len(baselines),
                color=colour,
                ls=":",
                lw=1.2,
                label=f"h{horizon}: constant predictor (baseline)",
            )
        plotted = True
    if not plotted:
        _empty(ax, "no complete trials yet")
    else:
        from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(budgets))
        ax.xaxis.set_major_formatter(FixedFormatter([format_budget(b) for b in budgets]))
        ax.xaxis.set_minor_locator(NullLocator())
        lo, hi = budgets[0], budgets[-1]
        pad = (hi / lo) ** 0.1 if hi > lo else 2.0
        ax.set_xlim(lo / pad, hi * pad)
        ax.set_xlabel("parameter budget (log scale)")
        ax.set_ylabel("best validation loss (lower is better)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ax.set_title("Scaling: best validation loss per budget, one line per horizon")
    return Figure("scaling.png", "Scaling: best validation loss against budget", _png(fig))


def architecture_figure(data: ReportData, budget: int, norm: Any) -> Figure:
    """Val loss against n_layers, d_model and depth/width, one row per horizon of ``budget``."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.lines import Line2D

    cmap = "viridis"
    cells = data.cells_of(budget)
    fig, axes = _new_figure(13.5, 0.6 + 3.4 * len(cells), nrows=len(cells), ncols=3)
    for row, cell in enumerate(cells):
        complete, pruned = cell.complete(), cell.pruned()
        limit = _upper_limit([t["val_loss"] for t in complete + pruned], cell.direction)
        extremes = _extremes(cell)
        for col, (name, xlabel, x_of) in enumerate(ARCH_AXES):
            ax = axes[row][col]
            if col == 0:
                ax.set_ylabel(f"{cell.label}\nval loss")
            if row == 0:
                ax.set_title(f"val loss against {name}", fontsize=11)
            if not complete and not pruned:
                _empty(ax, f"{cell.label}: {_nothing_yet(cell)}")
                continue
            pts = [(x_of(t), t) for t in complete + pruned]
            pts = [(x, t) for x, t in pts if x]
            if not pts:
                _empty(ax, f"{cell.label}: no architecture recorded")
                continue
            _plain_log_axis(ax, [x for x, _ in pts], integer=name != "depth/width")
            pr = [(x, t) for x, t in pts if t["state"] == "PRUNED"]
            if pr:
                ys, over = _clip([t["val_loss"] for _, t in pr], limit)
                ax.scatter(
                    [x * _jitter(t) for x, t in pr],
                    ys,
                    marker="x",
                    s=22,
                    color="0.6",
                    lw=1,
                    zorder=2,
                )
            co = [(x, t) for x, t in pts if t["state"] == "COMPLETE"]
            labelled: dict[tuple[Any, Any, Any, Any], tuple[float, float]] = {}
            if co:
                ys, over = _clip([t["val_loss"] for _, t in co], limit)
                lrs = [t["learning_rate"] if _finite(t["learning_rate"]) else norm.vmin for _, t in co]
                ax.scatter(
                    [x * _jitter(t) for x, t in co],
                    ys,
                    c=lrs,
                    cmap=cmap,
                    norm=norm,
                    s=[60 if o else 38 for o in over],
                    marker="o",
                    edgecolors="white",
                    linewidths=0.5,
                    zorder=3,
                )
                ring = [(x, y, t) for (x, t), y in zip(co, ys, strict=True) if _arch_key(t) in extremes]
                if ring:
                    ax.scatter(
                        [x * _jitter(t) for x, _, t in ring],
                        [y for _, y, _ in ring],
                        s=120,
                        facecolors="none",
                        edgecolors="black",
                        linewidths=1,
                        zorder=4,
                    )
                    for x, y, t in ring:
                        key = _arch_key(t)
                        if key not in labelled or y < labelled[key][1]:
                            labelled[key] = (x * _jitter(t), y)
            if cell.best is not None:
                bx = x_of(cell.best)
                if bx:
                    ax.scatter(
                        [bx * _jitter(cell.best)],
                        [min(cell.best["val_loss"], limit) if limit else cell.best["val_loss"]],
                        marker="*",
                        s=260,
                        facecolors="none",
                        edgecolors="crimson",
                        linewidths=1.4,
                        zorder=5,
                    )
            if limit is not None:
                ax.set_ylim(top=limit * 1.02)
            _label_extremes(ax, labelled, extremes)
            ax.grid(True, alpha=0.3)
            ax.set_xlabel(xlabel, fontsize=9)
    handles = [
        Line2D([], [], marker="o", ls="", color="#3b8bc2", label="complete (colour: learning rate)"),
        Line2D([], [], marker="x", ls="", color="0.6", label="pruned (val loss when stopped)"),
        Line2D([], [], marker="*", ls="", mfc="none", mec="crimson", ms=14, label="best of the cell"),
        Line2D([], [], marker="o", ls="", mfc="none", mec="black", ms=10, label="extreme architecture tried"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=9, frameon=False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="learning rate (log scale)", shrink=0.9)
    fig.suptitle(f"{format_budget(budget)}: validation loss against depth and width", fontsize=13)
    name = f"architecture_{format_budget(budget)}.png"
    return Figure(
        name,
        f"{format_budget(budget)}: val loss against n_layers, d_model and n_layers/d_model",
        _png(fig),
        budget,
    )


def _label_extremes(
    ax: Any, labelled: dict[tuple[Any, Any, Any, Any], tuple[float, float]], extremes: dict[Any, list[str]]
) -> None:
    """Name the extremes beside each one's best point, away from the panel's nearest edges."""
    x_lo, x_hi = (math.log(v) for v in ax.get_xlim())
    y_lo, y_hi = ax.get_ylim()
    for key, (x, y) in labelled.items():
        right = (math.log(x) - x_lo) / ((x_hi - x_lo) or 1) > 0.6
        top = (y - y_lo) / ((y_hi - y_lo) or 1) > 0.85
        text = ax.annotate(
            ", ".join(extremes[key]),
            (x, y),
            textcoords="offset points",
            xytext=(-8 if right else 8, -12 if top else 6),
            ha="right" if right else "left",
            fontsize=7,
            color="0.25",
        )
        text.set_in_layout(False)


def _nothing_yet(cell: CellReport) -> str:
    busy = f" ({cell.n_running} running)" if cell.n_running else ""
    return f"no complete trials{busy}"


def _grid(n: int) -> tuple[int, int]:
    ncols = min(n, 3)
    return math.ceil(n / ncols), ncols


def _cell_panels(cells: list[Any], top: float, row_height: float) -> tuple[Any, list[tuple[Any, Any]], int]:
    """A figure with one panel per cell (at most 3 across); unused panels hidden."""
    nrows, ncols = _grid(len(cells))
    fig, axes = _new_figure(4.6 * ncols + 0.5, top + row_height * nrows, nrows=nrows, ncols=ncols)
    flat = [axes[i // ncols][i % ncols] for i in range(nrows * ncols)]
    for ax in flat[len(cells) :]:
        ax.set_visible(False)
    return fig, list(zip(flat, cells, strict=False)), ncols


def history_figure(data: ReportData, budget: int) -> Figure:
    """Val loss per trial number with the best so far, one panel per horizon of ``budget``."""
    from matplotlib.lines import Line2D

    cells = data.cells_of(budget)
    fig, panels, ncols = _cell_panels(cells, top=0.7, row_height=3.3)
    for ax, cell in panels:
        ax.set_title(
            f"{cell.label}: {cell.n_complete} complete, {cell.n_pruned} pruned, {cell.n_failed} failed",
            fontsize=10,
        )
        complete, pruned = cell.complete(), cell.pruned()
        if not complete and not pruned:
            _empty(ax, _nothing_yet(cell))
            continue
        limit = _upper_limit([t["val_loss"] for t in complete + pruned], cell.direction)
        if pruned:
            ys, _ = _clip([t["val_loss"] for t in pruned], limit)
            ax.scatter([t["trial"] for t in pruned], ys, marker="x", color="0.6", s=22, lw=1, zorder=2)
        for coverage, marker in ((True, "s"), (False, "o")):
            pts = [t for t in complete if t["coverage"] == coverage]
            if pts:
                ys, _ = _clip([t["val_loss"] for t in pts], limit)
                ax.scatter([t["trial"] for t in pts], ys, marker=marker, s=30, color="#1f77b4", zorder=3)
        if complete:
            ordered = sorted(complete, key=lambda t: t["trial"])
            best, xs, ys = None, [], []
            pick = max if cell.direction == "maximize" else min
            for t in ordered:
                best = t["val_loss"] if best is None else pick(best, t["val_loss"])
                xs.append(t["trial"])
                ys.append(best)
            last = max(t["trial"] for t in complete + pruned)
            ax.step([*xs, last], [*ys, ys[-1]], where="post", color="crimson", lw=1.8, zorder=4)
        if limit is not None:
            ax.set_ylim(top=limit * 1.02)
        ax.set_xlabel("trial number")
        ax.set_ylabel("val loss")
        ax.grid(True, alpha=0.3)
    handles = [
        Line2D([], [], marker="s", ls="", color="#1f77b4", label="complete, coverage trial (queued)"),
        Line2D([], [], marker="o", ls="", color="#1f77b4", label="complete, chosen by the sampler"),
        Line2D([], [], marker="x", ls="", color="0.6", label="pruned (val loss when stopped)"),
        Line2D([], [], color="crimson", lw=1.8, label="best so far"),
    ]
    fig.legend(
        handles=handles, loc="outside lower center", ncols=4 if ncols > 1 else 2, fontsize=9, frameon=False
    )
    fig.suptitle(f"{format_budget(budget)}: optimisation history", fontsize=13)
    name = f"history_{format_budget(budget)}.png"
    return Figure(name, f"{format_budget(budget)}: optimisation history", _png(fig), budget)


def importance_figure(data: ReportData, budget: int) -> Figure:
    """Parameter importance, one panel per horizon of ``budget``."""
    cells = data.cells_of(budget)
    fig, panels, _ = _cell_panels(cells, top=0.5, row_height=3.0)
    for ax, cell in panels:
        ax.set_title(cell.label, fontsize=10)
        if not cell.importance:
            _empty(ax, f"no importance:\n{cell.importance_note or 'no complete trials'}")
            continue
        names = list(cell.importance)[::-1]
        values = [cell.importance[n] for n in names]
        signed = cell.importance_method == SPEARMAN
        colours = ["#d62728" if v > 0 else "#1f77b4" for v in values] if signed else "#1f77b4"
        ax.barh(names, values, color=colours)
        if signed:
            ax.set_xlim(-1, 1)
            ax.axvline(0, color="0.3", lw=0.8)
            ax.set_xlabel("Spearman ρ with val loss\n(> 0: larger value, higher loss)", fontsize=9)
        else:
            ax.set_xlim(0, max(1e-9, max(values)) * 1.15)
            ax.set_xlabel("importance (fANOVA; sums to 1)", fontsize=9)
        ax.tick_params(axis="y", labelsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"{format_budget(budget)}: parameter importance", fontsize=13)
    name = f"importance_{format_budget(budget)}.png"
    return Figure(name, f"{format_budget(budget)}: parameter importance", _png(fig), budget)


def render_figures(data: ReportData) -> list[Figure]:
    """Every figure of the report, as PNG bytes (Agg, no display needed)."""
    norm = _lr_norm(data)
    figures = [scaling_figure(data)]
    for budget in data.budgets:
        figures.append(architecture_figure(data, budget, norm))
        figures.append(history_figure(data, budget))
        figures.append(importance_figure(data, budget))
    return figures


# -- tables and text -----------------------------------------------------------------------------
TABLE_COLUMNS = (
    ("cell", "cell"),
    ("best val loss", "val_loss"),
    ("baseline", "baseline_loss"),
    ("trial", "trial"),
    ("d_model", "d_model"),
    ("n_layers", "n_layers"),
    ("n_heads", "n_heads"),
    ("d_ff", "d_ff"),
    ("params", "param_count"),
    ("lr", "learning_rate"),
    ("epochs", "epochs"),
    ("batch", "batch_size"),
    ("wd", "weight_decay"),
    ("warmup", "warmup_steps"),
    ("dropout", "dropout"),
    ("complete", "n_complete"),
    ("pruned", "n_pruned"),
    ("failed", "n_failed"),
)
PROGRESS_COLUMNS = (("running", "n_running"), ("waiting", "n_waiting"))


def _fmt(key: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    if key in ("val_loss", "baseline_loss"):
        return f"{value:.5f}"
    if key == "param_count":
        return f"{value:,}"
    if key == "learning_rate":
        return f"{value:.2e}"
    if key == "weight_decay":
        return f"{value:.1e}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def table_columns(data: ReportData) -> tuple[tuple[str, str], ...]:
    busy = any(c.n_running or c.n_waiting for c in data.cells)
    return TABLE_COLUMNS + (PROGRESS_COLUMNS if busy else ())


def table_rows(data: ReportData) -> list[list[str]]:
    """The best-per-cell table as text cells (one row per cell)."""
    many = len({c.experiment for c in data.cells}) > 1
    rows = []
    for c in data.cells:
        counts = {
            "n_complete": c.n_complete,
            "n_pruned": c.n_pruned,
            "n_failed": c.n_failed,
            "n_running": c.n_running,
            "n_waiting": c.n_waiting,
        }
        label = f"{c.experiment} {c.label}" if many else c.label
        row = []
        for _, key in table_columns(data):
            if key == "cell":
                row.append(label)
            elif key in counts:
                row.append(str(counts[key]))
            elif c.best is None:
                row.append("no complete trial" if key == "val_loss" else "")
            else:
                row.append(_fmt(key, c.best.get(key)))
        rows.append(row)
    return rows


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _totals(data: ReportData) -> str:
    n = len(data.cells)
    complete = sum(c.n_complete for c in data.cells)
    pruned = sum(c.n_pruned for c in data.cells)
    failed = sum(c.n_failed for c in data.cells)
    text = (
        f"{n} cell{'s' if n != 1 else ''} ({_plural(len(data.budgets), 'budget')} x "
        f"{_plural(len(data.horizons), 'horizon')}): "
        f"{complete} complete, {pruned} pruned, {failed} failed trials"
    )
    if data.from_storage:
        running, waiting = data.in_progress
        text += f", {running} running, {waiting} waiting"
    empty = [c.label for c in data.cells if c.best is None]
    if empty:
        text += f"; no complete trial yet in {', '.join(empty)}"
    return text + "."


def _importance_text(cell: CellReport) -> str:
    if not cell.importance:
        return f"{cell.label}: none ({cell.importance_note or 'no complete trials'})"
    if cell.importance_method == SPEARMAN:
        top = ", ".join(f"{k} {v:+.2f}" for k, v in list(cell.importance.items())[:4])
        return f"{cell.label} (Spearman ρ): {top}"
    top = ", ".join(f"{k} {v:.2f}" for k, v in list(cell.importance.items())[:4])
    return f"{cell.label} (fANOVA): {top}"


READING = (
    "**Scaling.** Each line is one horizon's best validation loss at each budget. A line that keeps "
    "falling says more parameters still help at this data size; a flat or rising line says the data, "
    "not the model, is the limit (or that the larger budgets were searched less well). The dotted "
    "line is the loss of the best constant predictor: a best trial near it learned little.",
    "**Depth and width.** Each point is a trial, coloured by learning rate. Where the best points "
    "cluster along n_layers, d_model and n_layers/d_model shows which shapes work at the budget; a "
    "band of colours at one shape shows how much the learning rate, not the shape, decides the loss. "
    "Ringed points are the extremes tried (smallest/largest d_model, fewest/most layers).",
    "**Caveats.** Most architectures get only a few trials, each with different training "
    "parameters, and validation loss is noisy: a difference smaller than the spread of one "
    "architecture's points is not a finding. Coverage trials (squares in the history) run every "
    "architecture once before the sampler chooses, so early trials are not the sampler's picks. "
    "Pruned trials show the loss at the epoch they were stopped and are never the best.",
)


def markdown(data: ReportData, figures: Sequence[Figure], generated: str) -> str:
    lines = [f"# archsearch report: {data.title}", ""]
    lines.append(f"Source: {data.source}. Generated {generated}.")
    lines.append("")
    notice = data.partial_notice()
    if notice:
        lines += [f"> **{notice}**", ""]
    lines += [_totals(data), ""]
    for note in data.notes:
        lines += [f"_{note}_", ""]
    columns = table_columns(data)
    lines += ["## Best architecture per budget and horizon", ""]
    lines.append("| " + " | ".join(h for h, _ in columns) + " |")
    lines.append("| " + " | ".join("---" if k == "cell" else "---:" for _, k in columns) + " |")
    for row in table_rows(data):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    by_name = {f.name: f for f in figures}
    if "scaling.png" in by_name:
        lines += ["## Scaling", "", "![Best validation loss against budget](scaling.png)", ""]
    for budget in data.budgets:
        lines += [f"## {format_budget(budget)}", ""]
        for f in figures:
            if f.budget == budget:
                lines.append(f"- [{f.title}]({f.name})")
        lines.append("- Parameter importance:")
        for cell in data.cells_of(budget):
            lines.append(f"  - {_importance_text(cell)}")
        lines.append("")
    lines += ["## Reading the plots", ""]
    for paragraph in READING:
        lines += [paragraph, ""]
    return "\n".join(lines)


CSS = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1d2430;
  margin: 0 auto; max-width: 1320px; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #e3e6ea; }
.meta { color: #5b6470; margin: 0 0 16px; }
.partial { background: #fff4d6; border: 1px solid #f0c24b; border-left: 6px solid #e0a100;
  padding: 10px 14px; margin: 12px 0 16px; font-weight: 600; }
.note { color: #5b6470; font-style: italic; }
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 6px; border-bottom: 1px solid #e3e6ea; text-align: right; white-space: nowrap; }
th { background: #f3f5f7; white-space: normal; vertical-align: bottom; }
td:first-child, th:first-child { text-align: left; font-weight: 600; }
tr.empty td { color: #8a929c; }
tr.empty td[colspan] { text-align: center; font-style: italic; }
tr:hover td { background: #f8fafc; }
figure { margin: 16px 0 28px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eef0f2; }
figcaption { color: #5b6470; font-size: 13px; margin-top: 4px; }
ul.importance { font-size: 14px; }
.reading p { max-width: 900px; }
"""

LOAD_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.dataset.imagesLoaded = ok;
  document.body.dataset.imagesTotal = imgs.length;
});
</script>"""


def _md_inline(text: str) -> str:
    """``code`` and **bold** of the reading notes, as HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def html_page(data: ReportData, figures: Sequence[Figure], generated: str) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>archsearch report: {e(data.title)}</title>",
        f"<style>{CSS}</style>",
        LOAD_CHECK,
        "</head><body>",
        f"<h1>archsearch report: {e(data.title)}</h1>",
        f'<p class="meta">Source: {e(data.source)}. Generated {e(generated)}.</p>',
    ]
    notice = data.partial_notice()
    if notice:
        out.append(f'<div class="partial" id="partial">{_md_inline(notice)}</div>')
    out.append(f'<p id="totals">{e(_totals(data))}</p>')
    for note in data.notes:
        out.append(f'<p class="note">{e(note)}</p>')
    columns = table_columns(data)
    out += [
        "<h2>Best architecture per budget and horizon</h2>",
        '<div class="scroll"><table id="best-per-cell"><thead><tr>',
        "".join(f"<th>{e(h)}</th>" for h, _ in columns),
        "</tr></thead><tbody>",
    ]
    keys = [k for _, k in columns]
    first_count = keys.index("n_complete")
    for cell, row in zip(data.cells, table_rows(data), strict=True):
        if cell.best is None:  # one cell across the architecture and training columns
            span = first_count - 1
            out.append(
                f'<tr class="empty"><td>{e(row[0])}</td><td colspan="{span}">no complete trial yet</td>'
                + "".join(f"<td>{e(v)}</td>" for v in row[first_count:])
                + "</tr>"
            )
        else:
            out.append("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>")
    out.append("</tbody></table></div>")

    def figure(f: Figure) -> str:
        data_uri = "data:image/png;base64," + base64.b64encode(f.png).decode("ascii")
        return (
            f'<figure><img src="{data_uri}" alt="{e(f.title)}">'
            f"<figcaption>{e(f.title)} ({e(f.name)})</figcaption></figure>"
        )

    for f in figures:
        if f.budget is None:
            out += ["<h2>Scaling</h2>", figure(f)]
    for budget in data.budgets:
        out.append(f"<h2>{e(format_budget(budget))}</h2>")
        out += [figure(f) for f in figures if f.budget == budget]
        out.append('<ul class="importance">')
        out += [f"<li>{e(_importance_text(c))}</li>" for c in data.cells_of(budget)]
        out.append("</ul>")
    out.append('<h2>Reading the plots</h2><div class="reading">')
    out += [f"<p>{_md_inline(p)}</p>" for p in READING]
    out += ["</div>", "</body></html>", ""]
    return "\n".join(out)


# -- writing -------------------------------------------------------------------------------------
def build_report(
    source: str | Path,
    formats: Sequence[str] = FORMATS,
    output: str | Path | None = None,
    storage: str | None = None,
) -> tuple[ReportData, list[Path]]:
    """Read ``source`` and write the report in ``formats``; returns the data and the paths written.

    ``html`` writes ``report.html`` (figures inside it); ``png`` the figures; ``md`` ``report.md``
    and the figures it links to.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ArchsearchError(f"--format: unknown {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ArchsearchError(
            "the report draws with matplotlib, which is not installed: pip install 'archsearch[report]' "
            "(or pip install matplotlib)"
        ) from None
    data = load(source, storage)
    out_dir = Path(output) if output is not None else data.default_output
    out_dir.mkdir(parents=True, exist_ok=True)
    from archsearch.plugins.sinks import atomic_write

    figures = render_figures(data)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    written = []
    if "png" in formats or "md" in formats:
        for f in figures:
            path = out_dir / f.name
            path.write_bytes(f.png)
            written.append(path)
    if "md" in formats:
        path = out_dir / "report.md"
        atomic_write(path, markdown(data, figures, generated))
        written.append(path)
    if "html" in formats:
        path = out_dir / "report.html"
        atomic_write(path, html_page(data, figures, generated))
        written.append(path)
    return data, written
