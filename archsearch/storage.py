"""Opening an Optuna storage from a URL, waiting out storage outages, and URL redaction.

Every command opens its storage here (``run``, ``worker``, ``status``, ``export``, ``report``), so
a URL means the same everywhere: ``memory``, a journal file's path (the form optuna-dashboard and
the ``optuna`` CLI take; ``journal:PATH`` too), a SQLite URL or any other SQLAlchemy URL.

Outages: every call on an opened storage (claims, attribute writes, ``tell``, failure records,
heartbeats, reads; Optuna's own calls during a trial too) goes through :func:`retrying`, which
waits out transient errors (a database restarting, a lost connection, a SQLite file locked by
another process) with back-off, for up to ``workers.storage_outage_s`` seconds per call, then
raises :class:`StorageUnavailable` (a one-paragraph error). The limit is a setting of the
process: :func:`make_storage` sets it from the config (every ``run``, ``worker`` and local worker
process opens its storage with it); a storage opened by URL alone waits :data:`STORAGE_OUTAGE_S`.
Passwords are hidden by :mod:`archsearch.redaction` (:func:`redact` is kept here too).
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from archsearch import trial_writes
from archsearch.errors import ArchsearchError
from archsearch.redaction import encode_at_in_password, redact, redact_text, remember_secrets

if TYPE_CHECKING:
    import optuna

    from archsearch.config import Config

log = logging.getLogger("archsearch")
T = TypeVar("T")
__all__ = [
    "STORAGE_OUTAGE_S",
    "StorageUnavailable",
    "make_storage",
    "open_storage",
    "rdb_storage",
    "redact",
    "retrying",
]

#: Seconds a storage call waits out an outage before the process gives up (the default of
#: ``workers.storage_outage_s``).
STORAGE_OUTAGE_S = 300.0
#: The longest pause between two tries of a call: a storage that comes back is used within it.
MAX_WAIT_S = 5.0
_FIRST_WAIT_S = 0.25
#: SQLite's own wait for a locked file, per try: a quarter of the outage limit, at most this.
SQLITE_BUSY_S = 60.0


class StorageUnavailable(ArchsearchError):
    """The storage did not answer within ``workers.storage_outage_s``: this process stops."""


class _Outage:
    """This process's outage limit, and whether it is in an outage (logged once as it begins and
    once as it ends, whichever threads see it)."""

    def __init__(self) -> None:
        self.limit_s = STORAGE_OUTAGE_S
        self.lock = threading.Lock()
        self.since: float | None = None
        self.recovered_at = -float("inf")
        self.gave_up = False


_outage = _Outage()


def set_outage_limit(seconds: float) -> None:
    """How long this process's storage calls wait out an outage (``workers.storage_outage_s``)."""
    with _outage.lock:
        _outage.limit_s = float(seconds)
        _outage.since, _outage.gave_up = None, False


def last_recovery() -> float:
    """``time.monotonic()`` when this process's last storage outage ended (-inf: none yet).

    A worker that waited out an outage does not count that time as other workers' silence
    (their heartbeats could not be written either)."""
    return _outage.recovered_at


def make_storage(config: Config) -> optuna.storages.BaseStorage:
    """The config's storage (``storage``, else SQLite in the output directory); sets this
    process's outage limit from ``workers.storage_outage_s``."""
    set_outage_limit(config.workers.storage_outage_s)
    return open_storage(config.storage_url)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL: ``memory``, a journal file (:func:`journal_path`), SQLite (the
    folder is created; a busy timeout from the outage limit) or any SQLAlchemy URL, its calls
    retried through outages (:func:`retrying`); errors name the redacted URL."""
    import optuna

    if url == "memory":  # one process, nothing kept: for benchmarks and throwaway runs
        return optuna.storages.InMemoryStorage()
    remember_secrets(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    journal = journal_path(url)
    if journal is not None and _is_sqlite_file(journal):
        raise ArchsearchError(f"storage {url} is a SQLite file: give it as sqlite:///{journal}")
    try:
        if journal is not None:
            inner: Any = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
        else:  # Optuna caches an RDB storage's finished trials so: kept under the retries
            inner = optuna.storages._CachedStorage(_open_rdb(encode_at_in_password(url)))
    except Exception as exc:  # noqa: BLE001 - storage errors are the user's to fix
        raise ArchsearchError(f"storage {redact(url)} cannot be opened: {_detail(exc)}") from None
    return _retrying_storage_class()(inner, redact(url))


def rdb_storage(storage: Any) -> Any:
    """The ``RDBStorage`` under archsearch's ``RetryingStorage`` (``.inner``) and Optuna's
    ``_CachedStorage`` (``._backend``), or ``None`` when there is none."""
    import optuna

    for _ in range(4):
        if isinstance(storage, optuna.storages.RDBStorage):
            return storage
        held = getattr(storage, "__dict__", {})  # not getattr: RetryingStorage forwards it
        inner = held.get("inner") or held.get("_backend")
        if inner is None:
            return None
        storage = inner
    return None


def journal_path(url: str) -> str | None:
    """The journal file a storage URL names, or None: ``journal:PATH``, or a plain path (no
    ``scheme://``), the form ``optuna-dashboard PATH`` and ``optuna --storage PATH`` take."""
    if url.startswith("journal:"):
        return url.removeprefix("journal:")
    if url == "memory" or "://" in url:
        return None
    return url


def _is_sqlite_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal URL names (None for any other storage)."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    journal = journal_path(url)
    return None if journal is None else Path(journal)


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
        busy = max(1.0, min(SQLITE_BUSY_S, _outage.limit_s / 4))
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": busy}}
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


# -- retrying ------------------------------------------------------------------------------------
_WHAT = {
    "create_new_trial": "claiming a trial",
    "set_trial_state_values": "recording a trial's state",
    "set_trial_user_attr": "writing a trial attribute",
    "set_trial_system_attr": "writing a trial attribute",
    "set_trial_param": "recording a parameter",
    "set_trial_intermediate_value": "reporting an epoch",
    "create_new_study": "creating a study",
    "set_study_user_attr": "writing a study attribute",
    "set_study_system_attr": "writing a study attribute",
}


@functools.cache
def _retrying_storage_class() -> type:
    """``RetryingStorage(inner, where)``: an Optuna storage whose every call is :func:`retrying`.

    Made on first use (Optuna is imported then); each public method of ``BaseStorage`` calls the
    inner storage's, so Optuna's own calls during a trial (suggestions, reports, user attributes,
    ``tell``) wait out an outage like archsearch's."""
    import optuna

    base = optuna.storages.BaseStorage

    def method(name: str) -> Callable[..., Any]:
        what = _WHAT.get(name, "reading the storage" if name.startswith("get_") else name.replace("_", " "))

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            bound = getattr(self.inner, name)
            return retrying(lambda: bound(*args, **kwargs), what, self.where)

        call.__name__ = call.__qualname__ = name
        return call

    def init(self: Any, inner: Any, where: str) -> None:
        self.inner, self.where = inner, where
        self.staged = trial_writes.Staged()

    def others(self: Any, name: str) -> Any:  # what BaseStorage does not declare: not retried
        if "inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)

    body: dict[str, Any] = {
        n: method(n) for n in dir(base) if not n.startswith("_") and callable(getattr(base, n))
    }
    body.update(__init__=init, __getattr__=others, __module__=__name__)
    body.update(
        create_new_trial=_create_new_trial,
        set_trial_param=_set_trial_param,
        set_trial_state_values=_set_trial_state_values,
        write_trial=_write_trial,
    )
    body["__repr__"] = lambda self: f"RetryingStorage({self.where})"
    return type(base)("RetryingStorage", (base,), body)


# RetryingStorage's own methods: a trial's writes with Optuna's transactions (archsearch.trial_writes).
def _create_new_trial(self: Any, study_id: int, template_trial: Any = None) -> int:
    """A fresh trial (no template: ``study.ask``) gets the attributes of
    :func:`archsearch.trial_writes.claim_new_trials` staged at once: written with its first
    parameter (or by the heartbeat thread, or with its end)."""
    trial_id = retrying(
        lambda: self.inner.create_new_trial(study_id, template_trial), _WHAT["create_new_trial"], self.where
    )
    if template_trial is None:
        self.staged.created_fresh(trial_id)
    return trial_id


def _set_trial_param(self: Any, trial_id: int, name: str, internal: float, distribution: Any) -> None:
    """The parameter, with what the trial staged so far (a fresh trial's claim) in its transaction."""
    param = (name, internal, distribution)
    _with_staged(
        self,
        trial_id,
        "set_trial_param",
        lambda: self.inner.set_trial_param(trial_id, *param),
        lambda attrs: trial_writes.write_with_param(self.inner, trial_id, attrs, param),
    )


def _set_trial_state_values(self: Any, trial_id: int, state: Any, values: Any = None) -> bool:
    """The state change, with what the trial staged (:func:`archsearch.trial_writes.stage`)
    in the same transaction."""
    return _with_staged(
        self,
        trial_id,
        "set_trial_state_values",
        lambda: self.inner.set_trial_state_values(trial_id, state, values),
        lambda attrs: trial_writes.write(self.inner, trial_id, attrs, (state, values)),
    )


def _with_staged(
    self: Any, trial_id: int, name: str, plain: Callable[[], T], with_attrs: Callable[[Any], T]
) -> T:
    """``plain()``, or ``with_attrs(staged)`` when the trial has staged attributes (then no longer
    staged), retried; under the staging lock (:class:`archsearch.trial_writes.Staged`)."""
    with self.staged.lock:
        attrs = self.staged.pending.pop(trial_id, None)
        call = (lambda: with_attrs(attrs)) if attrs else plain
        return retrying(call, _WHAT[name], self.where)


def _write_trial(self: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    what = _WHAT["set_trial_user_attr"]
    retrying(lambda: trial_writes.write(self.inner, trial_id, attrs), what, self.where)


def retrying(call: Callable[[], T], what: str, where: str = "", limit_s: float | None = None) -> T:
    """Run a storage call, waiting out transient errors (recognised through Optuna's
    ``StorageInternalError`` wrapper, see :func:`_transient`) with back-off, for up to
    ``limit_s`` seconds (default: this process's ``workers.storage_outage_s``); then
    :class:`StorageUnavailable`. The first failure of an outage is logged, and its end."""
    limit = _outage.limit_s if limit_s is None else limit_s
    started: float | None = None
    wait = _FIRST_WAIT_S
    while True:
        try:
            result = call()
        except Exception as exc:
            if not _transient(exc):
                raise
            now = time.monotonic()
            started = now if started is None else started
            _outage_begins(what, where, exc, limit, now)
            if _outage.gave_up or now - started >= limit:
                raise _give_up(what, where, exc, limit) from None
            time.sleep(min(wait * random.uniform(0.8, 1.2), max(0.0, started + limit - now)))
            wait = min(wait * 2, MAX_WAIT_S)
            continue
        if started is not None:
            _outage_ends()
        return result


def _outage_begins(what: str, where: str, exc: BaseException, limit: float, now: float) -> None:
    with _outage.lock:
        if _outage.since is not None:
            return
        _outage.since = now
    log.warning(
        "storage %snot answering while %s (%s); waiting for it, up to %.0f s (workers.storage_outage_s)",
        f"{where} " if where else "",
        what,
        _detail(exc),
        limit,
    )


def _outage_ends() -> None:
    with _outage.lock:
        since, _outage.since = _outage.since, None
        _outage.recovered_at = time.monotonic()
    if since is not None:
        log.warning("storage answering again after %.0f s; carrying on", time.monotonic() - since)


def _give_up(what: str, where: str, exc: BaseException, limit: float) -> StorageUnavailable:
    with _outage.lock:
        _outage.gave_up = True  # the other threads' calls give up at their next failure
    return StorageUnavailable(
        f"{' '.join(['storage', where]).strip()} did not answer for {limit:.0f} s "
        f"(workers.storage_outage_s) while {what}: {_detail(exc)}. This process stops here; a trial "
        "it was running is failed and its parameters queued again by another worker (after "
        "workers.grace_period without a heartbeat) or by the next run on this machine, and completed "
        "trials are safe in the storage. Run the same command again once the storage is back, or "
        "raise workers.storage_outage_s to wait longer."
    )


#: Messages of errors that look like an outage but will not pass by waiting.
_PERMANENT = ("no such table", "no such column", "syntax error", "password authentication failed")


def _transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a storage outage: a lost or refused connection, a timeout, a locked
    SQLite file. Optuna wraps the database's error in ``StorageInternalError``, so the chain of
    causes (``__cause__``, else an unsuppressed ``__context__``) is looked through."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageUnavailable):
            return False
        if _transient_here(current):
            return not any(m in str(current) for m in _PERMANENT)
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause
    return False


def _transient_here(exc: BaseException) -> bool:
    import sqlite3

    try:
        from sqlalchemy import exc as sa
    except ImportError:  # pragma: no cover - sqlalchemy comes with optuna
        sa = None
    if sa is not None:
        if isinstance(exc, sa.OperationalError | sa.DisconnectionError | sa.TimeoutError):
            return True
        if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
            return True
    return isinstance(exc, sqlite3.OperationalError | ConnectionError | TimeoutError)


def _detail(exc: BaseException) -> str:
    """``Type: first line of the message`` (SQLAlchemy's run on with the statement), redacted."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    cause = exc.__cause__
    if cause is not None and text.startswith("An exception is raised during the commit"):
        return _detail(cause)  # Optuna's wrapper says nothing of the cause
    return redact_text(f"{type(exc).__name__}: {text[:300]}")
