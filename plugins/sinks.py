"""Built-in result sinks: ``csv`` (every trial, one row each) and ``json`` (the best per cell)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from archsearch.hookspecs import hookimpl
from archsearch.records import ALL_COLUMNS, COLUMNS, CellSummary
from archsearch.registry import SinkPlugin

CSV_NAME = "experiment_results.csv"


def atomic_write(path: Path, text: str, durable: bool = False) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half.

    ``durable`` also fsyncs before the rename (a power cut then keeps one or the other too). The
    per-trial files skip it: they are derived from the storage, which is the source of truth, and
    rebuilt from it by ``archsearch export`` and at the start of every run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CsvSink:
    """Appends one row per finished trial to ``experiment_results.csv``, flushed at once.

    Rows are keyed by (study_name, trial), so a resumed run that replays the storage's finished
    trials adds only the missing ones. A file from before the architecture columns existed is
    rewritten in place with the current header, every old row kept.
    """

    def __init__(self, output_dir: Path, config: Any = None) -> None:
        self.path = Path(output_dir) / CSV_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.seen: set[tuple[str, str]] = set()
        if self.path.exists() and self.path.stat().st_size:
            self._load_or_migrate()
        else:
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(ALL_COLUMNS)
        self.file = self.path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=ALL_COLUMNS, extrasaction="ignore")

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
        self.migrated = (len(rows), [c for c in COLUMNS if c not in header])

    def trial_finished(self, record: dict[str, Any], cell: CellSummary) -> None:
        key = (record["study_name"], str(record["trial"]))
        if key in self.seen:
            return
        self.writer.writerow(record)
        self.file.flush()  # visible to readers at once; the storage is what survives a crash
        self.seen.add(key)

    def cell_finished(self, cell: CellSummary) -> None:
        pass

    def close(self) -> None:
        self.file.close()


class JsonSink:
    """Rewrites ``{experiment}_{budget}_best.json`` atomically after every completed trial
    (``{experiment}_{budget}_h{horizon}_best.json`` when the config has several horizons)."""

    def __init__(self, output_dir: Path, config: Any = None) -> None:
        self.output_dir = Path(output_dir)
        self.per_horizon = config is not None and len(config.horizons) > 1

    def path_for(self, cell: CellSummary) -> Path:
        from archsearch.budget import format_budget

        suffix = f"_h{cell.horizon}" if self.per_horizon else ""
        return self.output_dir / f"{cell.experiment}_{format_budget(cell.budget)}{suffix}_best.json"

    def trial_finished(self, record: dict[str, Any], cell: CellSummary) -> None:
        self.cell_finished(cell)

    def cell_finished(self, cell: CellSummary) -> None:
        doc = cell.best_json()
        if doc is not None:
            atomic_write(self.path_for(cell), json.dumps(doc, indent=2, default=str) + "\n")

    def close(self) -> None:
        pass


@hookimpl
def archsearch_register_sinks() -> list[SinkPlugin]:
    return [
        SinkPlugin("csv", CsvSink, f"every finished trial as a row of {CSV_NAME}"),
        SinkPlugin("json", JsonSink, "the best trial per cell as {experiment}_{budget}_best.json"),
    ]
