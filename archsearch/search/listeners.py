"""Who hears of a cell's progress: the result sinks, the per-trial log line and the progress bar.

All are listeners of one kind, told the same events in the same order by the trial loop:
``cell_started`` (after the storage's finished trials were replayed to ``trial_finished`` with
``record["replayed"] = True``), ``epoch`` during a trial (an
:class:`~archsearch.plugin.registry.EpochEvent`), ``trial_finished`` after it, and
``cell_finished``; ``close`` at the end of the run. A listener that raises is named once in the
log and switched off for the rest of the run; the study goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from archsearch.plugin.registry import EpochEvent
from archsearch.records import CellSummary

log = logging.getLogger("archsearch")


class Listener:
    """The events, each doing nothing unless a listener overrides it."""

    def cell_started(self, cell: Any, summary: CellSummary, n_trials: int) -> None: ...

    def epoch(self, event: EpochEvent) -> None: ...

    def trial_finished(self, record: Mapping[str, Any], summary: CellSummary) -> None: ...

    def cell_finished(self, summary: CellSummary) -> None: ...

    def close(self) -> None: ...


class SinkListener(Listener):
    """A result sink (:class:`archsearch.registry.Sink`) as a listener: it hears every trial,
    replayed ones too, and every finished cell; every epoch too if it has ``epoch_finished``."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.epoch_finished = getattr(sink, "epoch_finished", None)

    def epoch(self, event: EpochEvent) -> None:
        if self.epoch_finished is not None:
            self.epoch_finished(event)

    def trial_finished(self, record: Mapping[str, Any], summary: CellSummary) -> None:
        self.sink.trial_finished(record, summary)

    def cell_finished(self, summary: CellSummary) -> None:
        self.sink.cell_finished(summary)

    def close(self) -> None:
        self.sink.close()


class LogLine(Listener):
    """One INFO line per trial this process ran (replayed trials are not logged again)."""

    def __init__(self) -> None:
        self.label = ""

    def cell_started(self, cell: Any, summary: CellSummary, n_trials: int) -> None:
        self.label = cell.label

    def trial_finished(self, record: Mapping[str, Any], summary: CellSummary) -> None:
        if record.get("replayed") or not log.isEnabledFor(logging.INFO):
            return
        best = summary.best["val_loss"] if summary.best else float("nan")
        if record.get("stage") == "confirm":
            progress = f"confirmation: {summary.confirm_done} done, {summary.confirm_pending} to go"
        else:
            progress = f"best {best:.5f} ({summary.n_complete} done, {summary.n_pruned} pruned, {summary.n_failed} failed)"
        log.info(
            "%s %s%s | %s%s",
            self.label,
            "confirm " if record.get("stage") == "confirm" else "",
            trial_text(record),
            progress,
            f" [{record['fail_reason']}]" if record["fail_reason"] else "",
        )


def trial_text(record: Mapping[str, Any]) -> str:
    """``trial 3 COMPLETE: d_model=... val_loss=... 1.2s``: what a trial was and what it gave."""

    def loss(key: str) -> str:
        return f"{record[key]:.5f}" if isinstance(record[key], float) else "-"

    params = f"{record['param_count']:,}" if record["param_count"] != "" else "?"
    return (
        f"trial {record['trial']} {record['state']}: d_model={record['d_model']} n_layers={record['n_layers']} "
        f"n_heads={record['n_heads']} d_ff={record['d_ff']} params={params} "
        f"lr={record['learning_rate'] or float('nan'):.2e} epochs={record['epochs']} batch={record['batch_size']} "
        f"wd={record['weight_decay'] or float('nan'):.1e} warmup={record['warmup_steps']} "
        f"val_loss={loss('val_loss')} train_loss={loss('train_loss')} {record['duration_s'] or 0.0:.1f}s"
    )


class ProgressBars(Listener):
    """A progress bar per cell (:class:`archsearch.search.progress.CellBar`) while it runs."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.bar: Any = None

    def cell_started(self, cell: Any, summary: CellSummary, n_trials: int) -> None:
        self.bar = self.progress.cell(cell, summary, n_trials)

    def epoch(self, event: EpochEvent) -> None:
        if self.bar is not None:
            self.bar.epoch(event.epoch, event.epochs, event.val_loss)

    def trial_finished(self, record: Mapping[str, Any], summary: CellSummary) -> None:
        if self.bar is not None and not record.get("replayed"):
            self.bar.trial(record, summary)

    def cell_finished(self, summary: CellSummary) -> None:
        self.close()

    def close(self) -> None:  # also at the end of a run stopped mid-cell
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Listeners:
    """Named listeners told each event in turn; one that raises is reported and switched off."""

    def __init__(self, named: Mapping[str, Listener]) -> None:
        self.named = dict(named)

    def cell_started(self, cell: Any, summary: CellSummary, n_trials: int) -> None:
        self._tell("cell_started", lambda x: x.cell_started(cell, summary, n_trials))

    def epoch(self, event: EpochEvent) -> None:
        self._tell("epoch", lambda x: x.epoch(event))

    def trial_finished(self, record: Mapping[str, Any], summary: CellSummary) -> None:
        self._tell("trial_finished", lambda x: x.trial_finished(record, summary))

    def cell_finished(self, summary: CellSummary) -> None:
        self._tell("cell_finished", lambda x: x.cell_finished(summary))

    def close(self) -> None:
        self._tell("close", lambda x: x.close())

    def _tell(self, event: str, call: Callable[[Listener], None]) -> None:
        for name, listener in list(self.named.items()):
            try:
                call(listener)
            except Exception as exc:  # noqa: BLE001 - a broken listener must not stop the study
                log.error(
                    "%s %r failed (%s: %s); it is disabled for the rest of this run",
                    _kind(listener),
                    name,
                    type(exc).__name__,
                    exc,
                )
                self.named.pop(name, None)


def _kind(listener: Listener) -> str:
    return "sink" if isinstance(listener, SinkListener) else "listener"
