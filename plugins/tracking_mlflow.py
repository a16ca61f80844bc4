"""The ``mlflow`` sink: one MLflow run per cell, one nested run per trial (``pip install
"archsearch[mlflow]"``).

Where: the ``MLFLOW_TRACKING_URI`` environment variable (a server, ``sqlite:///...``, Databricks),
else ``sqlite:///OUTPUT_DIR/mlflow.db``; the MLflow experiment is ``MLFLOW_EXPERIMENT_NAME``, else
the config's ``experiment``. An experiment this sink creates in a SQLite store keeps its artifacts
in ``mlartifacts`` beside the store's file.

What: a cell's run (named after its study) holds the cell's tags, its best result as metrics and
``best.json``, and ``report/report.html`` once a report newer than every trial of the cell exists
when the cell finishes (``archsearch report``, then ``archsearch run`` again: nothing trains, the
report is attached). A trial's run holds its architecture and training values as parameters, its
results as metrics (``val_loss``, ``train_loss``, ``test_loss``, ``val_*``/``test_*``; a pruned or
failed trial's last validation loss as ``last_val_loss``) and its per-epoch curves
(``epoch/val_loss``, ``epoch/train_loss``, step = epoch), logged live while it trains.

Replays: runs are tagged with the study name and trial number (``archsearch_study``,
``archsearch_trial``), and a finished trial's run with its state (``archsearch_state``). When a
run resumes, the trials already finished in MLflow are skipped, a run left open by a process that
died is finished, and a trial MLflow lacks is added (``archsearch_backfilled``: without its curve,
which only a live trial has). Workers opening a cell at once each may create its run; every
cell's end (and a new cell run) keeps the one with the smallest run id, moves the others' trial
runs under it and deletes the rest.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archsearch import hookimpl
from archsearch.architecture import Architecture
from archsearch.errors import ArchsearchError
from archsearch.records import ARCH_FIELDS, METRIC_SPLITS, METRICS, TRAINING_FIELDS, CellSummary
from archsearch.redaction import redact
from archsearch.registry import EpochEvent, SinkPlugin

URI_ENV, EXPERIMENT_ENV = "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"
STUDY, KIND, TRIAL, STATE = "archsearch_study", "archsearch_kind", "archsearch_trial", "archsearch_state"
PARENT = "mlflow.parentRunId"
#: A trial's parameters: what it is (architecture, training values) and where it sits.
PARAMS = ("budget", "horizon", *ARCH_FIELDS, "arch", *TRAINING_FIELDS, "coverage", "stage")
#: A trial's result metrics, besides ``val_loss`` (complete) or ``last_val_loss`` (otherwise).
RESULTS = (
    "train_loss",
    "test_loss",
    "best_epoch",
    "epochs_run",
    "duration_s",
    "samples_per_s",
    "baseline_loss",
    *(f"{split}_{name}" for split in METRIC_SPLITS for name in METRICS),
)
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
PAGE = 1000


def default_uri(output_dir: Path) -> str:
    """``sqlite:///ABSOLUTE/OUTPUT_DIR/mlflow.db``."""
    return "sqlite:///" + (Path(output_dir).resolve() / "mlflow.db").as_posix()


def artifacts_beside(uri: str) -> Path | None:
    """``mlartifacts`` beside a SQLite store's file (MLflow's own default is ``./mlruns`` in the
    working directory); None for any other store (a server chooses)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?")[0]).parent / "mlartifacts"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def arch_key(record: Mapping[str, Any]) -> str:
    """``d16-L2-h2-ff32`` from a record's architecture columns ('' without them)."""
    try:
        return Architecture(*(int(record[k]) for k in ARCH_FIELDS[:4])).key
    except (KeyError, TypeError, ValueError):
        return ""


def _quoted(value: str) -> str:
    """A value for an MLflow filter string."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ArchsearchError(f"the mlflow sink cannot look up runs of study {value!r}: it has both quote kinds")


class MlflowSink:
    """See the module docstring."""

    def __init__(self, output_dir: Path, config: Any) -> None:
        from mlflow import MlflowClient

        self.output_dir = Path(output_dir)
        self.uri = os.environ.get(URI_ENV) or default_uri(self.output_dir)
        artifacts = artifacts_beside(self.uri)
        if artifacts is not None:
            artifacts.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.storage = redact(config.storage_url)
        name = os.environ.get(EXPERIMENT_ENV) or config.experiment
        self.experiment_id = self._experiment(name, artifacts.resolve().as_uri() if artifacts else None)
        #: study -> its cell's run id; study -> {trial number: (run id, finished in MLflow)}.
        self.parents: dict[str, str] = {}
        self.children: dict[str, dict[int, tuple[str, bool]]] = {}
        #: The trials this process is running: (study, trial) -> run id.
        self.live: dict[tuple[str, int], str] = {}
        #: study -> the newest finish time of its trials seen (UTC, for the report's freshness).
        self.newest: dict[str, dt.datetime] = {}

    def _experiment(self, name: str, artifacts: str | None) -> str:
        from mlflow.exceptions import MlflowException

        for _ in range(2):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    raise ArchsearchError(
                        f"sink 'mlflow': the MLflow experiment {name!r} at {self.uri} is deleted; restore it "
                        f"(mlflow experiments restore --experiment-id {found.experiment_id}) or set "
                        f"{EXPERIMENT_ENV} to another name"
                    )
                return found.experiment_id
            try:
                return self.client.create_experiment(name, artifact_location=artifacts)
            except MlflowException:  # another worker created it meanwhile
                continue
        raise ArchsearchError(f"sink 'mlflow': could not create the MLflow experiment {name!r} at {self.uri}")

    # -- lookups -----------------------------------------------------------------------------
    def _search(self, *conditions: str) -> list[Any]:
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], " and ".join(conditions), max_results=PAGE, page_token=token
            )
            out.extend(page)
            token = page.token
            if not token:
                return out

    def _parent(self, study: str, cell: str = "") -> str:
        """The cell's run: found by its tags (and reopened), else created."""
        if study in self.parents:
            return self.parents[study]
        found = self._search(f"tags.{STUDY} = {_quoted(study)}", f"tags.{KIND} = 'cell'")
        if found:
            run_id = min(r.info.run_id for r in found)
            self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {STUDY: study, KIND: "cell", "archsearch_cell": cell, "archsearch_storage": self.storage}
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=study)
            run_id = self._settle(study) or run.info.run_id
        self.parents[study] = run_id
        return run_id

    def _children(self, study: str, number: int | None = None) -> dict[int, tuple[str, bool]]:
        """The trial runs MLflow holds for ``study`` (all, read once; or trial ``number``'s, read
        again): trial number -> (run id, finished)."""
        loaded = study in self.children
        table = self.children.setdefault(study, {})
        if number is None and loaded:
            return table
        conditions = [f"tags.{STUDY} = {_quoted(study)}", f"tags.{KIND} = 'trial'"]
        if number is not None:
            conditions.append(f"tags.{TRIAL} = '{number}'")
        for r in sorted(self._search(*conditions), key=lambda r: r.info.run_id, reverse=True):
            n, finished = int(r.data.tags[TRIAL]), STATE in r.data.tags
            if n not in table or finished or not table[n][1]:
                table[n] = (r.info.run_id, finished)
        return table

    def _settle(self, study: str) -> str | None:
        """Keep one cell run for ``study`` (the smallest id); the others' trial runs move under
        it and they are deleted. Returns the kept run's id (None: none found)."""
        cells = self._search(f"tags.{STUDY} = {_quoted(study)}", f"tags.{KIND} = 'cell'")
        if not cells:
            return None
        keep = min(r.info.run_id for r in cells)
        if len(cells) > 1:
            for r in self._search(f"tags.{STUDY} = {_quoted(study)}", f"tags.{KIND} = 'trial'"):
                if r.data.tags.get(PARENT) != keep:
                    self.client.set_tag(r.info.run_id, PARENT, keep)
            for r in cells:
                if r.info.run_id != keep:
                    self.client.delete_run(r.info.run_id)
        self.parents[study] = keep
        return keep

    def _new_child(self, study: str, number: int, cell: str, extra: Mapping[str, str]) -> str:
        tags = {PARENT: self._parent(study, cell), STUDY: study, KIND: "trial", TRIAL: str(number), **extra}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"trial {number}")
        return run.info.run_id

    # -- events ------------------------------------------------------------------------------
    def epoch_finished(self, event: EpochEvent) -> None:
        from mlflow.entities import Metric

        key = (event.study_name, event.trial)
        if key not in self.live:
            self.live[key] = self._new_child(event.study_name, event.trial, event.cell, {})
        values = {"epoch/val_loss": event.val_loss, "epoch/train_loss": event.train_loss}
        values.update({f"epoch/val_{k}": v for k, v in event.metrics.items()})
        now = _now_ms()
        metrics = [Metric(k, n, now, event.epoch) for k, v in values.items() if (n := _number(v)) is not None]
        self.client.log_batch(self.live[key], metrics=metrics)

    def trial_finished(self, record: Mapping[str, Any], cell: CellSummary) -> None:
        study, number = record["study_name"], int(record["trial"])
        self._note_time(study, record.get("timestamp", ""))
        self._parent(study, record.get("cell", ""))
        children = self._children(study)
        run_id = self.live.pop((study, number), None)
        if run_id is None:
            known = children.get(number)
            if known is None or not known[1]:  # another process may have logged it since
                known = self._children(study, number).get(number)
            if known is not None and known[1]:
                return  # logged already (a replay, or another process's trial)
            backfill = {"archsearch_backfilled": "true"} if record.get("replayed") else {}
            run_id = known[0] if known else self._new_child(study, number, record.get("cell", ""), backfill)
        self._log_trial(run_id, record)
        children[number] = (run_id, True)

    def _log_trial(self, run_id: str, record: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        state = str(record.get("state", ""))
        values = {k: record.get(k) for k in RESULTS}
        values["val_loss" if state == "COMPLETE" else "last_val_loss"] = record.get("val_loss")
        step = int(record["epochs_run"]) if _number(record.get("epochs_run")) is not None else 0
        now = _now_ms()
        metrics = [Metric(k, n, now, step) for k, v in values.items() if (n := _number(v)) is not None]
        values_of = {**record, "arch": arch_key(record)}
        params = [Param(k, str(values_of[k])) for k in PARAMS if values_of.get(k, "") != ""]
        tags = [RunTag(STATE, state)]
        if record.get("fail_reason"):
            tags.append(RunTag("archsearch_fail_reason", str(record["fail_reason"])[:5000]))
        self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        self.client.set_terminated(run_id, STATUS.get(state, "FINISHED"))

    def _note_time(self, study: str, stamp: str) -> None:
        if not stamp:
            return
        moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if study not in self.newest or moment > self.newest[study]:
            self.newest[study] = moment

    def cell_finished(self, cell: CellSummary) -> None:
        from mlflow.entities import Metric, RunTag

        study = cell.study_name
        run_id = self._settle(study) or self._parent(study)
        now, step = _now_ms(), cell.n_complete
        counts = {"n_complete": cell.n_complete, "n_pruned": cell.n_pruned, "n_failed": cell.n_failed}
        metrics = [Metric(k, float(v), now, step) for k, v in counts.items()]
        tags = [RunTag("archsearch_finished", str(cell.finished).lower())]
        if cell.best:
            metrics.append(Metric("best_val_loss", float(cell.best["val_loss"]), now, step))
            tags += [RunTag("best_trial", str(cell.best["trial"])), RunTag("best_arch", arch_key(cell.best))]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        doc = cell.best_json()
        if doc is not None:
            self.client.log_dict(run_id, doc, "best.json")
        report = self.output_dir / "report" / "report.html"
        if report.exists() and self._report_is_current(study, report):
            self.client.log_artifact(run_id, str(report), "report")
        self.client.set_terminated(run_id, "FINISHED" if cell.finished else "KILLED")
        self.parents.pop(study, None)

    def _report_is_current(self, study: str, report: Path) -> bool:
        """The report was written after every trial of the cell this process has heard of (more
        than a second after: record timestamps have whole seconds)."""
        newest = self.newest.get(study)
        written = dt.datetime.fromtimestamp(report.stat().st_mtime, dt.UTC)
        return newest is not None and written > newest + dt.timedelta(seconds=1)

    def close(self) -> None:
        """A run stopped mid-trial or mid-cell: its open runs are marked killed."""
        for run_id in [*self.live.values(), *self.parents.values()]:
            self.client.set_terminated(run_id, "KILLED")
        self.live.clear()
        self.parents.clear()


@hookimpl
def archsearch_register_sinks() -> list[SinkPlugin]:
    return [
        SinkPlugin(
            "mlflow",
            MlflowSink,
            "a run per cell with a nested run per trial in MLflow (MLFLOW_TRACKING_URI, else OUTPUT_DIR/mlflow.db)",
            requires=("mlflow",),
            install='pip install "archsearch[mlflow]"',
        )
    ]
