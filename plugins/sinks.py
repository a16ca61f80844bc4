"""Built-in result sinks: ``csv`` (every trial, one row each) and ``json`` (the best per cell)."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from archsearch import hookimpl
from archsearch.outputs import CSV_NAME, atomic_write, best_json_path, per_horizon_files, write_json
from archsearch.records import ALL_COLUMNS, CellSummary
from archsearch.registry import SinkPlugin


class CsvSink:
    """Appends one row per finished trial to ``experiment_results.csv``, flushed at once.

    Rows are keyed by (study_name, trial): a run that replays the storage's finished trials adds
    only the missing ones. Several processes may share the file (workers on one study, on one
    machine or a shared filesystem with working locks): each write holds an exclusive lock on
    ``experiment_results.csv.lock`` and first reads the rows the others appended, so rows never
    interleave or repeat. A file from before the architecture columns existed is rewritten in
    place with the current header, every old row kept.
    """

    def __init__(self, output_dir: Path, config: Any = None) -> None:
        self.path = Path(output_dir) / CSV_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock = FileLock(self.lock_path, thread_local=False)
        self.seen: set[tuple[str, str]] = set()
        self.offset = 0
        with self._locked():
            if self.path.exists() and self.path.stat().st_size:
                self._load_or_migrate()
            else:
                with self.path.open("w", newline="") as f:
                    csv.writer(f).writerow(ALL_COLUMNS)
            self.offset = self.path.stat().st_size

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # filelock: fcntl.flock on POSIX, msvcrt.locking on Windows; an exclusive, blocking lock.
        with self.lock:
            yield

    def _load_or_migrate(self) -> None:
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        for row in rows:
            self.seen.add((row.get("study_name") or "", str(row.get("trial", ""))))
        if header[: len(ALL_COLUMNS)] == list(ALL_COLUMNS):
            return
        extra = [h for h in header if h not in ALL_COLUMNS]
        fields = list(ALL_COLUMNS) + extra
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, out.getvalue(), durable=True)

    def _catch_up(self) -> None:
        """Note the rows other processes appended since this one last looked."""
        size = self.path.stat().st_size
        if size == self.offset:
            return
        study_col, trial_col = ALL_COLUMNS.index("study_name"), ALL_COLUMNS.index("trial")
        with self.path.open(newline="") as f:
            f.seek(self.offset)
            for row in csv.reader(f):
                if len(row) > max(study_col, trial_col):
                    self.seen.add((row[study_col], row[trial_col]))
        self.offset = size

    def trial_finished(self, record: dict[str, Any], cell: CellSummary) -> None:
        key = (record["study_name"], str(record["trial"]))
        if key in self.seen:
            return
        with self._locked():
            self._catch_up()
            if key in self.seen:
                return
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=ALL_COLUMNS, extrasaction="ignore").writerow(record)
            # Flushed on close: visible to readers at once; the storage is what survives a crash.
            self.offset = self.path.stat().st_size
            self.seen.add(key)

    def cell_finished(self, cell: CellSummary) -> None:
        pass

    def close(self) -> None:
        pass


class JsonSink:
    """Rewrites ``{experiment}_{budget}_best.json`` atomically after every completed trial
    (``{experiment}_{budget}_h{horizon}_best.json`` when the config has several horizons)."""

    def __init__(self, output_dir: Path, config: Any = None) -> None:
        self.output_dir = Path(output_dir)
        # The file's horizons, not a --horizon slice's: a slice writes the full run's files.
        self.per_horizon = config is not None and per_horizon_files(config)

    def path_for(self, cell: CellSummary) -> Path:
        from archsearch.budget import format_budget

        return best_json_path(
            self.output_dir, cell.experiment, format_budget(cell.budget), cell.horizon, self.per_horizon
        )

    def trial_finished(self, record: dict[str, Any], cell: CellSummary) -> None:
        self.cell_finished(cell)

    def cell_finished(self, cell: CellSummary) -> None:
        doc = cell.best_json()
        if doc is not None:
            write_json(self.path_for(cell), doc)

    def close(self) -> None:
        pass


@hookimpl
def archsearch_register_sinks() -> list[SinkPlugin]:
    return [
        SinkPlugin("csv", CsvSink, f"every finished trial as a row of {CSV_NAME}"),
        SinkPlugin("json", JsonSink, "the best trial per cell as {experiment}_{budget}_best.json"),
    ]
