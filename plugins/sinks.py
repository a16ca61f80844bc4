"""Built-in result sinks: ``csv`` (every trial, one row each) and ``json`` (the best per cell)."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from archsearch import hookimpl
from archsearch.outputs import (
    CSV_NAME,
    ResultsFile,
    atomic_write,
    best_json_path,
    csv_lock,
    ensure_study_uid,
    per_horizon_files,
    read_results,
    write_json,
)
from archsearch.records import ALL_COLUMNS, CellSummary
from archsearch.registry import SinkPlugin

log = logging.getLogger("archsearch")


class CsvSink:
    """Appends one row per finished trial to ``experiment_results.csv``, flushed at once.

    On opening, the file is checked against the storage: a torn, truncated or garbage file, or one
    holding rows of another storage's study (each row carries its study's ``study_uid``, which a
    study recreated under the same name does not share), is rebuilt from the storage as
    ``archsearch export`` does, with one warning naming the file. Rows are keyed by (study_name,
    trial): a run that replays the storage's finished trials adds only the missing ones.

    Each row is one append that is undone (the file cut back to where it ended) when it fails, a
    full disk for instance, so a live run never leaves a torn row; one torn by a process killed
    mid-write is found by the next process to write or open the file, which rebuilds it. Several
    processes may share the file: each write holds the lock on ``experiment_results.csv.lock`` and
    first reads what the others appended (or notices the file was rebuilt), so rows never
    interleave or repeat. A file from before the current columns is rewritten with the current
    header, every row kept.
    """

    def __init__(self, output_dir: Path, config: Any = None) -> None:
        self.path = Path(output_dir) / CSV_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.lock = csv_lock(self.path.parent)
        self.lock_path = Path(self.lock.lock_file)
        self._lock_fd: int | None = None
        self._lock_depth = 0
        self._storage: Any = None
        self.seen: set[tuple[str, str]] = set()
        self.stored: dict[tuple[str, str], dict[str, str]] = {}  # rows yet to compare with the storage's
        self.offset, self.inode = 0, 0
        with self._locked():
            self._open_checked()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The CSV's lock. On POSIX an ``flock`` on the lock file, opened once: the same lock
        filelock takes (``export`` and the other processes use it), without its per-call set-up,
        which cost more than the row itself. Elsewhere filelock (``msvcrt.locking`` on Windows)."""
        if fcntl is None:
            with self.lock:
                yield
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        if self._lock_depth == 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._lock_depth += 1  # re-entrant: released by the outermost
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- checking and repairing ---------------------------------------------------------------
    def _open_checked(self) -> None:
        state = read_results(self.path)
        if state is None:
            atomic_write(self.path, _header())
        else:
            problem = state.problem or self._foreign(state)
            if problem:
                self._rebuild(f"{self.path} {problem}", state)
            elif state.header[: len(ALL_COLUMNS)] != list(ALL_COLUMNS):
                self._migrate(state)
            else:
                self._remember(state)  # the file as it was read: no second reading
                return
        self._remember()

    def _verifiable(self) -> bool:
        """Whether there is a storage to check the file against (a ``memory`` one dies with its run)."""
        return self.config is not None and self.config.storage_url != "memory"

    def storage(self) -> Any:
        if self._storage is None:
            from archsearch.storage import make_storage

            self._storage = make_storage(self.config)
        return self._storage

    def _foreign(self, state: ResultsFile) -> str | None:
        """Why the rows of this experiment are not the storage's, or None when they are."""
        if not self._verifiable() or not state.rows:
            return None
        from archsearch.search.overview import experiment_studies
        from archsearch.storage import redact

        studies = {s.study_name: s for s in experiment_studies(self.config, self.storage())}
        uids: dict[str, str] = {}
        for row in state.rows:
            name = row.get("study_name", "")
            if row.get("experiment") != self.config.experiment and name not in studies:
                continue  # another experiment's row (an output directory shared on purpose)
            if name not in studies:
                return f"holds rows of study {name!r}, which storage {redact(self.config.storage_url)} does not hold"
            if name not in uids:
                study = studies[name]
                uids[name] = ensure_study_uid(study._storage, study._study_id, name)
            if row.get("study_uid", "") != uids[name]:
                return (
                    f"holds rows of another storage's study {name!r} (identity {row.get('study_uid') or 'none'}; "
                    f"the storage's is {uids[name]})"
                )
        return None

    def _rebuild(self, why: str, state: ResultsFile | None) -> None:
        if self._verifiable():
            from archsearch.search.overview import rebuild_files

            log.warning("%s; rebuilt from the storage", why)
            rebuild_files(self.config, self.storage())
        else:  # nothing to rebuild from: the whole rows are kept, the torn one dropped
            log.warning("%s; its whole rows are kept, the rest dropped", why)
            self._migrate(state or ResultsFile(list(ALL_COLUMNS), []))

    def _migrate(self, state: ResultsFile) -> None:
        extra = [h for h in state.header if h not in ALL_COLUMNS]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*ALL_COLUMNS, *extra], extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(state.rows)
        atomic_write(self.path, out.getvalue(), durable=True)

    def _remember(self, state: ResultsFile | None = None) -> None:
        """Every row's key, and where the file ends, as it is now (the lock is held); ``state``
        is the file as just read, else it is read here."""
        state = state if state is not None else read_results(self.path)
        rows = state.rows if state else []
        self.stored = {(r.get("study_name") or "", str(r.get("trial", ""))): r for r in rows}
        self.seen = set(self.stored)
        stat = self.path.stat()
        self.offset, self.inode = stat.st_size, stat.st_ino

    def _catch_up(self) -> None:
        """Note the rows other processes appended since this one last looked; a file replaced
        meanwhile (rebuilt, exported) is read again, one left torn is repaired."""
        stat = self.path.stat() if self.path.exists() else None
        if stat is None or stat.st_ino != self.inode or stat.st_size < self.offset:
            self._open_checked()
            return
        if stat.st_size == self.offset:
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            tail = f.read()
        if not tail.endswith(b"\n"):
            self._rebuild(
                f"{self.path} ends in a torn row (a writer stopped mid-row)", read_results(self.path)
            )
            self._remember()
            return
        study_col, trial_col = ALL_COLUMNS.index("study_name"), ALL_COLUMNS.index("trial")
        for row in csv.reader(io.StringIO(tail.decode("utf-8", "replace"), newline="")):
            if len(row) > max(study_col, trial_col):
                self.seen.add((row[study_col], row[trial_col]))
        self.offset = stat.st_size

    # -- the sink ---------------------------------------------------------------------------------
    def trial_finished(self, record: dict[str, Any], cell: CellSummary) -> None:
        key = (record["study_name"], str(record["trial"]))
        if key in self.seen:
            if record.get("replayed") and self._differs(key, record):
                with self._locked():
                    why = f"{self.path} holds trial {key[1]} of {key[0]} otherwise than the storage does"
                    self._rebuild(why, None)
                    self._remember()
                    self.stored.clear()  # rebuilt from the storage: nothing left to compare
            return
        with self._locked():
            self._catch_up()
            if key in self.seen:
                return
            self._append(_row(record), record)
            self.seen.add(key)

    def _differs(self, key: tuple[str, str], record: dict[str, Any]) -> bool:
        """Whether the file's row of a replayed trial (the storage's record) says otherwise: each
        row that was in the file when it was opened is compared once, field by field."""
        row = self.stored.pop(key, None)
        if row is None or not self._verifiable():
            return False
        return any(row[k] != _text(record.get(k)) for k in row if k in ALL_COLUMNS)

    def _append(self, data: bytes, record: dict[str, Any]) -> None:
        """One row, all or nothing: a failed write (a full disk) is cut back off the file."""
        try:
            with self.path.open("ab") as f:
                f.write(data)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.truncate(self.path, self.offset)
            if isinstance(exc, OSError):
                raise OSError(
                    exc.errno,
                    f"{self.path}: the row of trial {record['trial']} of {record['study_name']} was not written "
                    f"({exc.strerror or exc}); the file is left whole, and the next run adds the missing rows "
                    "from the storage",
                ) from exc
            raise
        # Flushed on close: visible to readers at once; the storage is what survives a crash.
        self.offset += len(data)

    def cell_finished(self, cell: CellSummary) -> None:
        pass

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _text(value: Any) -> str:
    """A value as the CSV holds it (``csv`` writes ``str``; None and missing as empty)."""
    return "" if value is None else str(value)


def _header() -> str:
    out = io.StringIO()
    csv.writer(out).writerow(ALL_COLUMNS)
    return out.getvalue()


def _row(record: dict[str, Any]) -> bytes:
    out = io.StringIO()
    csv.DictWriter(out, fieldnames=ALL_COLUMNS, extrasaction="ignore").writerow(record)
    return out.getvalue().encode("utf-8")


class JsonSink:
    """Writes ``{experiment}_{budget}_best.json`` atomically when a cell's best trial changes and
    when the cell finishes or stops (its counts are then up to date); the first time a process
    hears of a cell it writes the file too, which replaces a torn or foreign one
    (``{experiment}_{budget}_h{horizon}_best.json`` when the config has several horizons)."""

    def __init__(self, output_dir: Path, config: Any = None) -> None:
        self.output_dir = Path(output_dir)
        # The file's horizons, not a --horizon slice's: a slice writes the full run's files.
        self.per_horizon = config is not None and per_horizon_files(config)
        self.written: dict[Path, tuple[str, int]] = {}  # file -> (study identity, best trial) in it

    def path_for(self, cell: CellSummary) -> Path:
        from archsearch.budget import format_budget

        return best_json_path(
            self.output_dir, cell.experiment, format_budget(cell.budget), cell.horizon, self.per_horizon
        )

    def trial_finished(self, record: dict[str, Any], cell: CellSummary) -> None:
        if cell.best_trial is not None and self.written.get(self.path_for(cell)) != _best_key(cell):
            self.cell_finished(cell)

    def cell_finished(self, cell: CellSummary) -> None:
        doc = cell.best_json()
        if doc is not None:
            path = self.path_for(cell)
            write_json(path, doc)
            self.written[path] = _best_key(cell)

    def close(self) -> None:
        pass


def _best_key(cell: CellSummary) -> tuple[str, int]:
    return (f"{cell.study_name}/{cell.study_uid}", cell.best_trial.number if cell.best_trial else -1)


@hookimpl
def archsearch_register_sinks() -> list[SinkPlugin]:
    return [
        SinkPlugin("csv", CsvSink, f"every finished trial as a row of {CSV_NAME}"),
        SinkPlugin("json", JsonSink, "the best trial per cell as {experiment}_{budget}_best.json"),
    ]
