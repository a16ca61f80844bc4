"""What archsearch stores on studies and trials, and how it is read back: the one owner.

Optuna's storage is the source of truth. On a cell's study archsearch keeps its cell
(``CELL_ATTR``), the search's fingerprint (``STUDY_ATTR``) and how many coverage trials were
queued; on a trial, what it is (``setup``: experiment, cell, architecture, training values, the
worker) and what it gave (``result``), plus coordination marks (``coverage``, ``retry_of``,
``fail_reason``, ``surplus``, ``heartbeat``). Everything else reads them through the functions
here. The engine, the sinks and ``archsearch export`` all build rows with :func:`trial_record`, so
a CSV rebuilt from the storage is the same as one written trial by trial.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from archsearch.budget import format_budget

if TYPE_CHECKING:  # optuna is imported where it is used: listing plugins stays fast
    import optuna
    from optuna.trial import FrozenTrial

# -- on a study --------------------------------------------------------------------------------
#: The search's fingerprint (architecture list, search space, encoding, variant).
STUDY_ATTR = "archsearch"
#: ``{"experiment", "budget", "horizon"}``: marks a study as one of an experiment's cells.
CELL_ATTR = "archsearch_cell"
#: How many coverage trials were queued (set once they all are).
COVERAGE_QUEUED = "coverage_enqueued"
#: ``{prefix}{nonce}``: one process's session on the study (its sampler seed's nonce).
SESSION_PREFIX = "archsearch_session:"
# -- on a trial ---------------------------------------------------------------------------------
SETUP, RESULT = "setup", "result"
COVERAGE, RETRY_OF, FAIL_REASON = "coverage", "retry_of", "fail_reason"
#: A claim given back (coordination), never a real trial: records and counts skip it.
SURPLUS = "surplus"
#: The running trial's heartbeat counter, advanced by its worker.
HEARTBEAT = "heartbeat"


def mark_cell(study: optuna.Study, experiment: str, budget: int, horizon: int) -> None:
    """Mark ``study`` as the experiment's (budget, horizon) cell, once."""
    if CELL_ATTR not in study.user_attrs:
        study.set_user_attr(CELL_ATTR, {"experiment": experiment, "budget": budget, "horizon": horizon})


def cell_of(study: Any) -> dict[str, Any] | None:
    """The cell a study (or a ``FrozenStudy``) was marked with, or None for any other study."""
    return study.user_attrs.get(CELL_ATTR)


def fingerprint_of(study: optuna.Study) -> dict[str, Any] | None:
    """The search a study was created for (:func:`archsearch.search.study.check_unchanged`)."""
    return study.user_attrs.get(STUDY_ATTR)


def write_fingerprint(study: optuna.Study, fingerprint: dict[str, Any]) -> None:
    study.set_user_attr(STUDY_ATTR, fingerprint)


def write_session(study: optuna.Study, nonce: int, info: dict[str, Any]) -> None:
    """Record a session (one process opening the study) under its nonce: distinct keys, so
    processes starting together never overwrite each other's."""
    study.set_user_attr(f"{SESSION_PREFIX}{nonce:016x}", info)


def coverage_queued(study: optuna.Study) -> int:
    """How many coverage trials were queued on the study (0: not yet, or not all)."""
    return study.user_attrs.get(COVERAGE_QUEUED, 0)


def write_coverage_queued(study: optuna.Study, n: int) -> None:
    study.set_user_attr(COVERAGE_QUEUED, n)


def is_surplus(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(SURPLUS))


def is_recorded(trial: FrozenTrial) -> bool:
    """A finished trial that has a row (surplus claims have none)."""
    return trial.state.is_finished() and not is_surplus(trial)


def trial_setup(trial: FrozenTrial) -> dict[str, Any]:
    return trial.user_attrs.get(SETUP, {})


def trial_worker(trial: FrozenTrial) -> str:
    """The ``host:pid`` of the worker that ran (or runs) the trial; '' before its setup."""
    return trial_setup(trial).get("worker", "")


def write_setup(
    trial: optuna.Trial,
    cell: Mapping[str, Any],
    architecture: Mapping[str, Any],
    training: Mapping[str, Any],
    data: Any,
    worker: str,
    pid_namespace: int | None,
) -> None:
    """What a trial is, written once it has sampled (one write: a transaction on an RDB):
    ``cell`` is its experiment, budget and horizon; ``data`` the prepared data it trains on."""
    trial.set_user_attr(
        SETUP,
        {
            **cell,
            **architecture,
            "training": dict(training),
            "baseline_loss": data.baseline_loss,
            "split": data.split_info,
            "worker": worker,
            "pid_namespace": pid_namespace,
        },
    )


def write_result(trial: optuna.Trial, result: Any) -> None:
    """What a trial gave (a :class:`~archsearch.training.settings.TrainResult`), in one write."""
    trial.set_user_attr(
        RESULT,
        {
            "train_loss": result.train_loss,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "val_metrics": _finite(result.val_metrics),
            "test_loss": result.test_loss,
            "test_metrics": _finite(getattr(result, "test_metrics", {})),
            "device": str(result.device),
            "samples_per_s": round(result.samples_per_s, 1),
            "compile_s": round(getattr(result, "compile_s", 0.0), 2),
            "step_kind": getattr(result, "step_kind", ""),
            "precision": getattr(result, "precision", ""),
        },
    )


def write_fail_reason(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(FAIL_REASON, reason)


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}


#: The per-trial columns, in this order (SPEC.md); extra columns follow them.
COLUMNS = (
    "experiment",
    "trial",
    "budget",
    "horizon",
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "param_count",
    "learning_rate",
    "epochs",
    "batch_size",
    "weight_decay",
    "warmup_steps",
    "val_loss",
    "train_loss",
    "duration_s",
    "timestamp",
)
EXTRA_COLUMNS = (
    "state",
    "cell",
    "study_name",
    "dropout",
    "best_epoch",
    "epochs_run",
    "val_accuracy",
    "val_auc",
    "val_positive_rate",
    "val_mae",
    "test_loss",
    "baseline_loss",
    "device",
    "samples_per_s",
    "compile_s",
    "step_kind",
    "coverage",
    "fail_reason",
    # Added later, so at the end (older files keep their order and gain these).
    "val_predicted_positive_rate",
    "test_accuracy",
    "test_auc",
    "test_positive_rate",
    "test_predicted_positive_rate",
    "test_mae",
    "precision",
)
ALL_COLUMNS = COLUMNS + EXTRA_COLUMNS
#: Every metric a task computes (``archsearch.data.tasks.task_metrics``): one column per split,
#: ``val_<metric>`` and ``test_<metric>``, from the stored ``val_metrics`` and ``test_metrics``.
METRICS = ("accuracy", "auc", "positive_rate", "predicted_positive_rate", "mae")
METRIC_SPLITS = ("val", "test")
ARCH_FIELDS = ("d_model", "n_layers", "n_heads", "d_ff", "param_count")
TRAINING_FIELDS = ("learning_rate", "epochs", "batch_size", "weight_decay", "warmup_steps", "dropout")


def cell_label(budget: int, horizon: int) -> str:
    return f"{format_budget(budget)}_h{horizon}"


def iso(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:  # Optuna stores naive local times
        moment = moment.astimezone()
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def trial_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """What the engine stored on a trial: its ``setup`` and ``result`` dicts and the other user
    attributes (``coverage``, ``retry_of``, ``fail_reason``), merged into one mapping."""
    u = dict(trial.user_attrs)
    return {**u.pop(SETUP, {}), **u.pop(RESULT, {}), **u}


def trial_record(trial: FrozenTrial, study_name: str) -> dict[str, Any]:
    """One row: the SPEC's columns, then the extras, from what the engine stored on the trial."""
    from optuna.trial import TrialState

    u = trial_attrs(trial)
    if trial.state == TrialState.COMPLETE:
        val_loss = trial.value
    elif trial.intermediate_values:  # pruned (or failed) after some epochs: the last one reported
        val_loss = trial.intermediate_values[max(trial.intermediate_values)]
    else:
        val_loss = ""
    training = u.get("training", {})
    budget = u.get("budget")
    row: dict[str, Any] = {
        "experiment": u.get("experiment", ""),
        "trial": trial.number,
        "budget": format_budget(budget) if budget else "",
        "horizon": u.get("horizon", ""),
        **{k: u.get(k, "") for k in ARCH_FIELDS},
        **{k: training.get(k, "") for k in TRAINING_FIELDS},
        "val_loss": val_loss,
        "train_loss": u.get("train_loss", ""),
        "duration_s": round(trial.duration.total_seconds(), 3) if trial.duration else "",
        "timestamp": iso(trial.datetime_complete or trial.datetime_start),
        "state": trial.state.name,
        "cell": cell_label(budget, u.get("horizon")) if budget else "",
        "study_name": study_name,
        "best_epoch": u.get("best_epoch", ""),
        "epochs_run": u.get("epochs_run", ""),
        **{
            f"{split}_{name}": u.get(f"{split}_metrics", {}).get(name, "")
            for split in METRIC_SPLITS
            for name in METRICS
        },
        "test_loss": u.get("test_loss", ""),
        "baseline_loss": u.get("baseline_loss", ""),
        "device": u.get("device", ""),
        "samples_per_s": u.get("samples_per_s", ""),
        "compile_s": u.get("compile_s", ""),
        "step_kind": u.get("step_kind", ""),
        "coverage": u.get("coverage", False),
        "fail_reason": u.get("fail_reason", ""),
        "precision": u.get("precision", ""),
    }
    return {k: ("" if v is None else v) for k, v in row.items()}


@attrs.define
class CellSummary:
    """Where one cell (budget x horizon) stands; kept up to date by the engine."""

    experiment: str
    budget: int
    horizon: int
    study_name: str
    direction: str = "minimize"
    n_complete: int = 0
    n_pruned: int = 0
    n_failed: int = 0
    n_running: int = 0
    n_waiting: int = 0
    best: dict[str, Any] | None = None
    best_trial: FrozenTrial | None = None
    finished: bool = False

    def add(self, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        if is_surplus(trial):
            return  # a claim given back (coordination.Coordinator.release), never a real trial
        if trial.state == TrialState.COMPLETE:
            self.n_complete += 1
            better = self.best_trial is None or (
                trial.value < self.best_trial.value
                if self.direction == "minimize"
                else trial.value > self.best_trial.value
            )
            if better:
                self.best_trial = trial
                self.best = trial_record(trial, self.study_name)
        elif trial.state == TrialState.PRUNED:
            self.n_pruned += 1
        elif trial.state == TrialState.FAIL:
            self.n_failed += 1
        elif trial.state == TrialState.RUNNING:
            self.n_running += 1
        elif trial.state == TrialState.WAITING:
            self.n_waiting += 1

    def refresh(self, study: optuna.Study) -> None:
        """Recount from the storage (other workers' trials too)."""
        self.n_complete = self.n_pruned = self.n_failed = self.n_running = self.n_waiting = 0
        self.best = self.best_trial = None
        for t in study.get_trials(deepcopy=False):
            self.add(t)

    @classmethod
    def from_trials(cls, experiment: str, budget: int, horizon: int, study: optuna.Study) -> CellSummary:
        summary = cls(experiment, budget, horizon, study.study_name, study.direction.name.lower())
        summary.refresh(study)
        return summary

    def best_json(self) -> dict[str, Any] | None:
        """The ``{experiment}_{budget}_best.json`` document (SPEC.md), or None before a result."""
        import optuna

        t = self.best_trial
        if t is None:
            return None
        u = trial_attrs(t)
        return {
            "experiment": self.experiment,
            "budget": format_budget(self.budget),
            "horizon": self.horizon,
            "best_params": dict(t.params),
            "best_value": t.value,
            "n_trials_completed": self.n_complete,
            "n_trials_pruned": self.n_pruned,
            "n_trials_failed": self.n_failed,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "study_name": self.study_name,
            "optuna_version": optuna.__version__,
            "architecture": {k: u.get(k) for k in ARCH_FIELDS},
            "training": u.get("training", {}),
            "trial": t.number,
            "val_metrics": u.get("val_metrics", {}),
            "test_loss": u.get("test_loss"),
            "test_metrics": u.get("test_metrics", {}),
            "precision": u.get("precision"),
            "baseline_loss": u.get("baseline_loss"),
            "split": u.get("split", {}),
        }
