"""The files a run writes beside its storage: their names, and writing them atomically.

The built-in sinks write these files trial by trial; ``export`` and ``report`` rebuild or read
them from the storage. Both sides take the names from here, so the core never imports a plugin.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Every finished trial, one row each (the ``csv`` sink; ``archsearch export``).
CSV_NAME = "experiment_results.csv"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: workers never collide
    try:
        with open(tmp, "w", newline="") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
