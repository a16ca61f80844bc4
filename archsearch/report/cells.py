"""What a report shows, per cell: its trials (typed rows), counts, best trial and importances."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from archsearch.budget import format_budget

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
    #: The confirmed answer (``archsearch.search.confirm.Confirmation``), None when not confirmed.
    confirmation: Any = None
    #: Why there is no confirmation (shown instead of it).
    confirm_note: str = "not confirmed (single best trial)"
    #: Confirmation trials in the study: all of them, and those finished (complete, pruned, failed).
    n_confirm: int = 0
    n_confirm_done: int = 0
    #: The cell's architectures as ``(d_model, n_layers)`` (from the study's fingerprint, else the
    #: trials'): what "an edge of the space" is measured against.
    architectures: list[tuple[int, int]] = attrs.Factory(list)

    @property
    def label(self) -> str:
        return f"{format_budget(self.budget)} h{self.horizon}"

    @property
    def finished(self) -> bool | None:
        """Whether the cell has its ``n_trials`` complete or pruned trials (None: unknown)."""
        if self.n_trials is None:
            return None
        return self.n_complete + self.n_pruned >= self.n_trials

    @property
    def winner(self) -> dict[str, Any] | None:
        """The cell's answer as ``d_model, n_layers, n_heads, d_ff, param_count`` and its loss:
        the confirmed winner when there is one, else the search's best trial."""
        c = self.confirmation
        if c is not None:
            return {**c.winner.arch, "param_count": c.winner.n_params, "val_loss": c.winner.mean}
        return self.best

    def complete(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["state"] == "COMPLETE" and finite(t.get("val_loss"))]

    def pruned(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["state"] == "PRUNED" and finite(t.get("val_loss"))]


@attrs.define
class ReportData:
    title: str
    source: str
    from_storage: bool
    cells: list[CellReport]
    default_output: Path
    notes: list[str] = attrs.Factory(list)
    #: Each horizon's scaling law (``archsearch.report.scaling.ScalingFit``), set by the report's build.
    scaling: list[Any] = attrs.Factory(list)

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


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def typed_row(row: dict[str, Any]) -> dict[str, Any]:
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


def best_row(trials: Sequence[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    done = [t for t in trials if t["state"] == "COMPLETE" and finite(t.get("val_loss"))]
    if not done:
        return None
    pick = max if direction == "maximize" else min
    return pick(done, key=lambda t: t["val_loss"])
