"""The ``tensorboard`` sink: TensorBoard scalars per trial and per epoch (``pip install
"archsearch[tensorboard]"``), in ``OUTPUT_DIR/tensorboard`` (``tensorboard --logdir`` it).

- ``tensorboard/{study}``, one run per cell: ``trial/val_loss``, ``trial/train_loss``,
  ``trial/test_loss``, ``trial/val_*``/``trial/test_*``, ``trial/param_count`` and
  ``trial/best_val_loss`` (the cell's best so far), step = trial number, for complete trials
  (a pruned or failed trial's loss is not a result: its curve is below).
- ``tensorboard/{study}/trial_{number:04d}``, one run per trial this process trains:
  ``epoch/val_loss``, ``epoch/train_loss`` and ``epoch/val_*``, step = epoch, written live.

Replays: ``tensorboard/{study}/logged.txt`` lists the trials whose scalars were written (under a
file lock, so workers sharing the folder agree); a replayed trial on it is skipped, one missing
(a process died before writing it, or the sink was added later) is written then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from archsearch import hookimpl
from archsearch.records import METRIC_SPLITS, METRICS, CellSummary
from archsearch.registry import EpochEvent, SinkPlugin

FOLDER, LEDGER = "tensorboard", "logged.txt"
#: A complete trial's scalars, written as ``trial/<name>``.
TRIAL_SCALARS = (
    "val_loss",
    "train_loss",
    "test_loss",
    "param_count",
    "duration_s",
    *(f"{split}_{name}" for split in METRIC_SPLITS for name in METRICS),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class TensorBoardSink:
    """See the module docstring."""

    def __init__(self, output_dir: Path, config: Any = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer_class = SummaryWriter
        self.root = Path(output_dir) / FOLDER
        self.cells: dict[str, Any] = {}
        self.trials: dict[tuple[str, int], Any] = {}

    def _cell(self, study: str) -> Any:
        if study not in self.cells:
            self.cells[study] = self.writer_class(str(self.root / study))
        return self.cells[study]

    def epoch_finished(self, event: EpochEvent) -> None:
        key = (event.study_name, event.trial)
        if key not in self.trials:
            folder = self.root / event.study_name / f"trial_{event.trial:04d}"
            self.trials[key] = self.writer_class(str(folder))
        writer = self.trials[key]
        values = {"val_loss": event.val_loss, "train_loss": event.train_loss}
        values.update({f"val_{k}": v for k, v in event.metrics.items()})
        for name, value in values.items():
            if (number := _number(value)) is not None:
                writer.add_scalar(f"epoch/{name}", number, event.epoch)
        writer.flush()

    def trial_finished(self, record: Mapping[str, Any], cell: CellSummary) -> None:
        study, number = record["study_name"], int(record["trial"])
        trial_writer = self.trials.pop((study, number), None)
        if trial_writer is not None:
            trial_writer.close()
        ledger = self.root / study / LEDGER
        ledger.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(ledger) + ".lock", thread_local=False):
            logged = set(ledger.read_text().split()) if ledger.exists() else set()
            if str(number) in logged:
                return
            if record.get("state") == "COMPLETE":
                self._write_trial(study, number, record, cell)
            with ledger.open(
                "a"
            ) as f:  # after the scalars: a crash in between repeats them, never loses them
                f.write(f"{number}\n")

    def _write_trial(self, study: str, number: int, record: Mapping[str, Any], cell: CellSummary) -> None:
        writer = self._cell(study)
        values = {name: record.get(name) for name in TRIAL_SCALARS}
        if cell.best:
            values["best_val_loss"] = cell.best.get("val_loss")
        for name, value in values.items():
            if (n := _number(value)) is not None:
                writer.add_scalar(f"trial/{name}", n, number)
        writer.flush()

    def cell_finished(self, cell: CellSummary) -> None:
        writer = self.cells.pop(cell.study_name, None)
        if writer is not None:
            writer.close()

    def close(self) -> None:
        for writer in [*self.trials.values(), *self.cells.values()]:
            writer.close()
        self.trials.clear()
        self.cells.clear()


@hookimpl
def archsearch_register_sinks() -> list[SinkPlugin]:
    return [
        SinkPlugin(
            "tensorboard",
            TensorBoardSink,
            "TensorBoard scalars per trial and per epoch in OUTPUT_DIR/tensorboard",
            requires=("tensorboard",),
            install='pip install "archsearch[tensorboard]"',
        )
    ]
