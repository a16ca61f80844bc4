"""What archsearch stores on studies and trials, and how it is read back: the one owner.

Optuna's storage is the source of truth. On a cell's study archsearch keeps its cell
(``CELL_ATTR``), the search's fingerprint (``STUDY_ATTR``) and how many coverage trials were
queued; on a trial, what it is (``setup``: experiment, cell, architecture, training values, the
worker; its architecture also flat, as optuna-dashboard lists attributes) and what it gave
(``result``), plus coordination marks (``coverage``, ``retry_of``, ``fail_reason``, ``surplus``,
``heartbeat``); :mod:`archsearch.trial_writes` writes them with Optuna's own transactions.
Everything else reads them through the functions here. The engine, the sinks and ``archsearch export`` all build rows with :func:`trial_record`, so
a CSV rebuilt from the storage is the same as one written trial by trial.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from archsearch import trial_writes
from archsearch.architecture import Architecture
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
#: ``search`` or ``confirm`` (absent: ``search``). A confirmation trial repeats the configuration
#: of search trial ``confirm_of`` with the seed ``confirm_seed`` (archsearch.search.confirm).
STAGE, SEARCH, CONFIRM = "stage", "search", "confirm"
CONFIRM_OF, CONFIRM_SEED = "confirm_of", "confirm_seed"
#: On a study: how many confirmation trials were queued (set once they all are).
CONFIRM_QUEUED = "confirm_enqueued"
#: ``{"worker", "pid_namespace"}``: who claimed the trial, written with its first parameter (a queued
#: one: once taken), so a process killed before its ``setup`` is still known, and recovered at once.
CLAIM = "claimed_by"
#: On a study: a random id given when archsearch first opens it (``archsearch.outputs.ensure_study_uid``).
#: A study recreated under the same name (the database deleted, another storage) gets another one;
#: every CSV row and best JSON carries it, so a file of another storage is told from this one's.
STUDY_UID = "archsearch_uid"
#: The architecture's key (``d16-L12-h2-ff32``), a flat attribute beside ``ARCH_FIELDS``.
ARCH_KEY = "arch"


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


def stage_of(trial: FrozenTrial) -> str:
    """``confirm`` for a confirmation trial, else ``search``."""
    return trial.user_attrs.get(STAGE, SEARCH)


def is_surplus(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(SURPLUS))


def is_recorded(trial: FrozenTrial) -> bool:
    """A finished trial that has a row (surplus claims have none)."""
    return trial.state.is_finished() and not is_surplus(trial)


def trial_setup(trial: FrozenTrial) -> dict[str, Any]:
    return trial.user_attrs.get(SETUP, {})


def trial_worker(trial: FrozenTrial) -> str:
    """The ``host:pid`` of the worker that ran (or runs) the trial (from its setup, else its
    claim); '' for a trial claimed by an archsearch that wrote no claim, before its setup."""
    return trial_setup(trial).get("worker") or trial.user_attrs.get(CLAIM, {}).get("worker", "")


def trial_pid_namespace(trial: FrozenTrial) -> int | None:
    """The PID namespace of the trial's worker (its setup's, else its claim's)."""
    setup = trial_setup(trial)
    return (
        setup.get("pid_namespace")
        if "worker" in setup
        else trial.user_attrs.get(CLAIM, {}).get("pid_namespace")
    )


def write_claim(trial: optuna.Trial, worker: str, pid_namespace: int | None) -> None:
    trial.set_user_attr(CLAIM, {"worker": worker, "pid_namespace": pid_namespace})


def study_uid(study: Any) -> str:
    """The study's (or a ``FrozenStudy``'s) :data:`STUDY_UID`; '' before it has one."""
    return study.user_attrs.get(STUDY_UID, "")


def write_setup(
    trial: optuna.Trial,
    cell: Mapping[str, Any],
    architecture: Mapping[str, Any],
    training: Mapping[str, Any],
    data: Any,
    worker: str,
    pid_namespace: int | None,
) -> None:
    """What a trial is, written once it has sampled: ``cell`` is its experiment, budget and
    horizon; ``data`` the prepared data it trains on. ``setup`` holds it all; the architecture is
    written flat beside it too (:func:`flat_architecture`), the form optuna-dashboard lists and
    filters. Staged: written in the transaction that ends the trial, or once it has run 0.1 s."""
    setup = {
        **flat_architecture(architecture),
        SETUP: {
            **cell,
            **architecture,
            "training": dict(training),
            "baseline_loss": data.baseline_loss,
            "baseline_test_loss": getattr(data, "baseline_test_loss", None),
            "split": data.split_info,
            "worker": worker,
            "pid_namespace": pid_namespace,
        },
    }
    trial_writes.stage(trial.study._storage, trial._trial_id, setup)


def flat_architecture(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """``d_model, n_layers, n_heads, d_ff, param_count`` and ``arch`` (``d16-L12-h2-ff32``)."""
    fields = {k: architecture[k] for k in ARCH_FIELDS}
    return {**fields, ARCH_KEY: Architecture(**fields).key}


def write_result(trial: optuna.Trial, result: Any) -> None:
    """What a trial gave (a :class:`~archsearch.training.settings.TrainResult`), staged: written
    in the transaction that finishes the trial."""
    attrs = {
        RESULT: {
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
    }
    trial_writes.stage(trial.study._storage, trial._trial_id, attrs)


def write_fail_reason(trial: optuna.Trial, reason: str) -> None:  # staged: written with its state
    trial_writes.stage(trial.study._storage, trial._trial_id, {FAIL_REASON: reason})


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
    "study_uid",
    "stage",
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


def trial_record(
    trial: FrozenTrial, study_name: str, study_uid: str = "", storage: str = ""
) -> dict[str, Any]:
    """One row: the SPEC's columns, then the extras, from what the engine stored on the trial;
    ``study_uid`` is the study's :data:`STUDY_UID` (which storage's study the row is of);
    ``storage`` its URL, kept as ``storage`` with the password masked (not a CSV column)."""
    from optuna.trial import TrialState

    from archsearch.redaction import redact

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
        "study_uid": study_uid,
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
        "stage": u.get(STAGE, SEARCH),
        "storage": redact(storage) if storage else "",
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
    #: The study's :data:`STUDY_UID`, carried by its rows and best JSON.
    study_uid: str = ""
    #: The storage's URL with its password masked, carried by the rows (``storage``).
    storage: str = ""
    #: Confirmation trials finished (complete), failed, and waiting or running; the counts and
    #: the best above are the search's alone.
    confirm_done: int = 0
    confirm_failed: int = 0
    confirm_pending: int = 0
    #: The confirmed answer (:meth:`archsearch.search.confirm.Confirmation.to_json`), set by
    #: whoever reads the whole study (the trial loop at a cell's end, ``status``, ``export``).
    confirmed: dict[str, Any] | None = None

    def add(self, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        if is_surplus(trial):
            return  # a claim given back (coordination.Coordinator.release), never a real trial
        if stage_of(trial) == CONFIRM:
            self._add_confirm(trial)
        elif trial.state == TrialState.COMPLETE:
            self.n_complete += 1
            better = self.best_trial is None or (
                trial.value < self.best_trial.value
                if self.direction == "minimize"
                else trial.value > self.best_trial.value
            )
            if better:
                self.best_trial = trial
                self.best = self.record(trial)
        elif trial.state == TrialState.PRUNED:
            self.n_pruned += 1
        elif trial.state == TrialState.FAIL:
            self.n_failed += 1
        elif trial.state == TrialState.RUNNING:
            self.n_running += 1
        elif trial.state == TrialState.WAITING:
            self.n_waiting += 1

    def _add_confirm(self, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        if trial.state == TrialState.COMPLETE:
            self.confirm_done += 1
        elif trial.state.is_finished():
            self.confirm_failed += 1
        else:
            self.confirm_pending += 1

    def record(self, trial: FrozenTrial) -> dict[str, Any]:
        """``trial``'s row (:func:`trial_record`), with this cell's study name and identity."""
        return trial_record(trial, self.study_name, self.study_uid, self.storage)

    def refresh(self, study: optuna.Study) -> list[FrozenTrial]:
        """Recount from the storage (other workers' trials too); returns the trials it read."""
        self.n_complete = self.n_pruned = self.n_failed = self.n_running = self.n_waiting = 0
        self.confirm_done = self.confirm_failed = self.confirm_pending = 0
        self.best = self.best_trial = None
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            self.add(t)
        return trials

    @classmethod
    def from_trials(cls, experiment: str, budget: int, horizon: int, study: optuna.Study) -> CellSummary:
        summary = cls(experiment, budget, horizon, study.study_name, study.direction.name.lower())
        summary.study_uid = study_uid(study)
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
            "study_uid": self.study_uid,
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
            "confirmed": self.confirmed,
        }
