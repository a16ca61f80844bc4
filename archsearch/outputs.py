"""The files a run writes beside its storage: their names, and writing them atomically.

The built-in sinks write these files trial by trial; ``export`` and ``report`` rebuild or read
them from the storage. Both sides take the names from here, so the core never imports a plugin.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import attrs

#: Every finished trial, one row each (the ``csv`` sink; ``archsearch export``).
CSV_NAME = "experiment_results.csv"
#: The file whose lock every writer of the CSV holds while it writes (the sink, ``export``).
CSV_LOCK_NAME = CSV_NAME + ".lock"


def csv_lock(output_dir: Path) -> Any:
    """The CSV's lock (``filelock``: ``flock`` on POSIX, ``msvcrt.locking`` on Windows), exclusive
    and blocking; re-entrant within one lock object."""
    from filelock import FileLock

    return FileLock(Path(output_dir) / CSV_LOCK_NAME, thread_local=False)


@attrs.define
class ResultsFile:
    """What :func:`read_results` found: the header, the whole rows, and ``problem`` (why the file
    cannot be trusted: torn, truncated or not a results CSV) or None."""

    header: list[str]
    rows: list[dict[str, str]]
    problem: str | None = None


_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


def read_results(path: Path) -> ResultsFile | None:
    """Read a results CSV and say whether it is whole; None when it is missing or empty.

    Whole means: a header naming ``experiment`` first and ``trial``, no name twice; no control
    character or undecodable byte anywhere; every row with
    as many fields as the header; the file ending with a line end (a row cut short by a full disk
    or a killed writer does not); no (study, trial) twice. ``rows`` holds the rows read before the
    first problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data:
        return None
    try:
        text = data.decode("utf-8")
        table = list(csv.reader(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        return ResultsFile([], [], f"is not a readable CSV ({exc})")
    header = table[0] if table else []
    names_ok = all(_COLUMN.fullmatch(h) for h in header) and len(set(header)) == len(header)
    if not header or header[0] != "experiment" or "trial" not in header or not names_ok:
        return ResultsFile(header, [], "does not start with the results header")
    control = _CONTROL.search(text)
    if control:
        line = text.count("\n", 0, control.start()) + 1
        return ResultsFile(header, [], f"holds binary garbage at line {line}")
    rows: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for number, fields in enumerate(table[1:], start=2):
        if len(fields) != len(header):
            return ResultsFile(
                header, rows, f"has a torn row at line {number} ({len(fields)} of {len(header)} fields)"
            )
        row = dict(zip(header, fields, strict=True))
        key = (row.get("study_name", ""), row["trial"])
        if key in seen and key[0]:
            return ResultsFile(header, rows, f"holds trial {key[1]} of {key[0]} twice")
        seen.add(key)
        rows.append(row)
    if not data.endswith(b"\n"):
        return ResultsFile(header, rows[:-1], "ends in a torn row (no line end)")
    return ResultsFile(header, rows)


def ensure_study_uid(storage: Any, study_id: int, study_name: str, wait_s: float = 10.0) -> str:
    """The study's identity (:data:`archsearch.records.STUDY_UID`), given once: the first process
    to create the marker study ``{study}:uid`` (the storage's unique study names make that atomic)
    writes a random id and deletes the marker; the others wait for the id. A process that wins
    after the marker was deleted finds the id written. (Should the winner die between its marker
    and its write, the waiters write after ``wait_s``, each its own, and the last write stands.)"""
    import optuna

    from archsearch.records import STUDY_UID
    from archsearch.storage import retrying

    def stored() -> str:
        return retrying(lambda: storage.get_study_user_attrs(study_id), "reading a study").get(STUDY_UID, "")

    uid = stored()
    if uid:
        return uid
    marker = None
    try:
        direction = [optuna.study.StudyDirection.MINIMIZE]
        marker = retrying(lambda: storage.create_new_study(direction, f"{study_name}:uid"), "naming a study")
    except optuna.exceptions.DuplicatedStudyError:
        deadline = time.monotonic() + wait_s
        while not uid and time.monotonic() < deadline:
            time.sleep(0.05)
            uid = stored()
    try:
        uid = uid or stored()
        if not uid:
            uid = secrets.token_hex(8)
            retrying(lambda: storage.set_study_user_attr(study_id, STUDY_UID, uid), "naming a study")
        return uid
    finally:
        if marker is not None:
            with contextlib.suppress(Exception):  # a leftover marker only shows in listings
                storage.delete_study(marker)


def best_json_path(
    output_dir: Path, experiment: str, budget_label: str, horizon: int, per_horizon: bool
) -> Path:
    """``{experiment}_{budget}_best.json``, or ``{experiment}_{budget}_h{horizon}_best.json`` when
    the config file lists several horizons (``per_horizon``)."""
    suffix = f"_h{horizon}" if per_horizon else ""
    return Path(output_dir) / f"{experiment}_{budget_label}{suffix}_best.json"


def check_output_dir(path: Path) -> None:
    """An output directory that can be created: neither it nor a folder above it is a file."""
    from archsearch.errors import ArchsearchError

    for folder in (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            where = "is a file" if folder == path else f"lies under {folder}, which is a file"
            raise ArchsearchError(
                f"output directory {path} {where}, not a directory; choose another --output (or output_dir)"
            )


def per_horizon_files(config: Any) -> bool:
    """Whether best files are per horizon: the config file lists several (a ``--horizon`` slice
    writes the full run's file names)."""
    return len(config.file_horizons or config.horizons) > 1


def write_json(path: Path, doc: Any) -> None:
    """``doc`` as indented JSON, atomically (:func:`atomic_write`)."""
    atomic_write(path, json.dumps(doc, indent=2, default=str) + "\n")


def atomic_write(path: Path, text: str, durable: bool = False) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half.

    ``durable`` also fsyncs before the rename (a power cut then keeps one or the other too). The
    per-trial files skip it: they are derived from the storage, which is the source of truth, and
    rebuilt from it by ``archsearch export`` and at the start of every run.
    """
    with atomic_file(path, durable) as f:
        f.write(text)


@contextlib.contextmanager
def atomic_file(path: Path, durable: bool = False) -> Iterator[IO[str]]:
    """A text file to stream into that replaces ``path`` when the block ends without an error
    (as :func:`atomic_write`; after an error, or a full disk, ``path`` is left as it was)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: workers never collide
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
