"""Stopping a run cleanly: SIGINT/SIGTERM or a ``STOP`` file in the output directory.

The ``STOP`` file stops every process of the output that sees it (each checks between trials).
A ``run`` removes it when it has stopped: it is the one process of its output (its local workers
are its children and stop before it). ``worker`` processes never remove it: no worker can know
that it is the last (one killed with ``kill -9`` never says so, one mid-trial has not looked
yet), so the file stays until you remove it, and a worker started while it exists stops at once.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

log = logging.getLogger("archsearch")
STOP_FILE = "STOP"


class StopRequest:
    """SIGINT/SIGTERM or a ``STOP`` file: finish the current trial, write outputs, exit 0.

    A second SIGINT interrupts at once (the running trial is then failed and retried on resume).
    """

    def __init__(self, output_dir: Path) -> None:
        self.stop_file = output_dir / STOP_FILE
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        log.warning("%s received: finishing the current trial, then stopping (again to abort)", self.reason)

    @property
    def requested(self) -> bool:
        if self.reason is None and self.stop_file.exists():
            self.reason = f"{self.stop_file} exists"
        return self.reason is not None


def after_stop(output_dir: Path, shared: bool) -> str:
    """Removes the ``STOP`` file after a ``run`` (``shared`` False); for a ``worker`` leaves it
    and returns the line that says so (empty when there is none)."""
    stop_file = output_dir / STOP_FILE
    if not shared:
        stop_file.unlink(missing_ok=True)
        return ""
    if not stop_file.exists():
        return ""
    return (
        f"{stop_file} stays until you remove it: every worker on this output stops when it sees it, "
        "and a worker started while it exists stops at once. Remove it before starting workers again."
    )
