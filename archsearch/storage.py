"""Opening an Optuna storage from a URL, retrying transient storage errors, and URL redaction.

Every command opens its storage here (``run``, ``worker``, ``status``, ``export``, ``report``), so
a URL means the same everywhere: ``memory``, ``journal:PATH`` (or ``*.journal``), a SQLite URL or
any other SQLAlchemy URL.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from archsearch.errors import ArchsearchError

if TYPE_CHECKING:
    import optuna

    from archsearch.config import Config

log = logging.getLogger("archsearch")
T = TypeVar("T")


def make_storage(config: Config) -> optuna.storages.BaseStorage:
    """The config's storage (``storage``, else SQLite in the output directory)."""
    return open_storage(config.storage_url)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: ``memory``, ``journal:PATH`` (or ``*.journal``), SQLite (the
    folder is created; 60 s lock timeout) or any SQLAlchemy URL; errors name the redacted URL."""
    import optuna

    if url == "memory":  # one process, nothing kept: for benchmarks and throwaway runs
        return optuna.storages.InMemoryStorage()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        if url.endswith(".journal") or url.startswith("journal:"):
            path = url.removeprefix("journal:")
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        return _open_rdb(url)
    except Exception as exc:  # noqa: BLE001 - storage errors are the user's to fix
        raise ArchsearchError(
            f"storage {redact(url)} cannot be opened: {type(exc).__name__}: {exc}"
        ) from None


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal URL names (None for any other storage)."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    if url.startswith("journal:") or url.endswith(".journal"):
        return Path(url.removeprefix("journal:"))
    return None


def require_storage_file(url: str, doing: str, hint: str) -> None:
    """For a SQLite or journal URL, an error when its file does not exist (before opening it
    would create an empty one): there is nothing to ``doing`` yet."""
    file = storage_file(url)
    if file is not None and not file.is_file():
        raise ArchsearchError(f"storage file {file} does not exist: nothing to {doing} yet ({hint})")


def _open_rdb(url: str) -> optuna.storages.RDBStorage:
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    # Heartbeats are archsearch's own (archsearch.search.coordination), the same on every storage.
    for attempt in range(6):
        try:
            storage = optuna.storages.RDBStorage(url, **kwargs)
            if url.startswith("sqlite"):
                _write_lock_at_begin(storage.engine)
            return storage
        except Exception as exc:
            # Workers starting together race to create the schema; the losers try again.
            if attempt == 5 or not any(
                m in str(exc) for m in ("already exists", "duplicate key", "UNIQUE constraint")
            ):
                raise
            time.sleep(random.uniform(0.2, 1.0))
    raise AssertionError("unreachable")


def _write_lock_at_begin(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins (``BEGIN IMMEDIATE``).

    Optuna claims a queued trial by reading that it is WAITING and then setting it RUNNING, in
    one transaction with ``SELECT ... FOR UPDATE``, which SQLite ignores; and Python's sqlite3
    starts the transaction only at the first write. Two processes could both read WAITING and
    both run the trial (a coverage trial twice, the second worker then crashing). Taking the lock
    at ``BEGIN`` makes the read and the write one step. The SQLAlchemy recipe for pysqlite:
    the driver's own transaction handling off, ``BEGIN IMMEDIATE`` emitted on begin."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners would not have them


def redact(url: str) -> str:
    """A storage URL with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def retrying(call: Callable[[], T], what: str, attempts: int = 8, first_wait: float = 1.0) -> T:
    """Run a storage call, retrying transient connection errors with exponential back-off."""
    wait = first_wait
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts - 1 or not _transient(exc):
                raise
            log.warning("storage error while %s (%s); retrying in %.0f s", what, type(exc).__name__, wait)
            time.sleep(wait)
            wait = min(wait * 2, 60.0)
    raise AssertionError("unreachable")


def _transient(exc: BaseException) -> bool:
    try:
        from sqlalchemy.exc import DBAPIError, OperationalError

        if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
            return True
    except ImportError:  # pragma: no cover - sqlalchemy comes with optuna
        pass
    return isinstance(exc, ConnectionError | TimeoutError)
