"""What real clusters do to a search: storage outages, a locked SQLite file, a STOP file seen by
several workers, two experiments in one storage, a password in the storage URL (issue 19).

The PostgreSQL cases need ``ARCHSEARCH_TEST_POSTGRES`` (``.ci/run`` starts a server with
``.ci/postgres.sh``); the outage case also starts a private server of its own with the same
binaries (it stops and restarts it, which must not disturb other tests), so it needs to be able
to run them as the ``postgres`` user. Without those the cases are skipped here and fail under CI.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from engine_helpers import read_csv, run_cli, tiny_config, write_config
from hypothesis import given
from hypothesis import strategies as st
from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import IntegrityError, OperationalError

from archsearch import storage as storage_module
from archsearch.config import structure
from archsearch.errors import ArchsearchError
from archsearch.records import trial_worker
from archsearch.redaction import redact, redact_text, remember_secrets
from archsearch.search.engine import Engine
from archsearch.search.overview import export, status_rows
from archsearch.storage import StorageUnavailable, make_storage, open_storage, retrying


@pytest.fixture(autouse=True)
def _outage_limit():
    yield
    storage_module.set_outage_limit(storage_module.STORAGE_OUTAGE_S)


def _wrapped(message: str = "server closed the connection unexpectedly") -> StorageInternalError:
    """What Optuna's RDB storage raises when the database goes away: its own error, caused by
    SQLAlchemy's ``OperationalError``."""
    try:
        try:
            raise OperationalError("UPDATE trials ...", {}, Exception(message))
        except OperationalError as exc:
            raise StorageInternalError("An exception is raised during the commit. ...") from exc
    except StorageInternalError as exc:
        return exc


# -- retrying --------------------------------------------------------------------------------
def test_retrying_waits_out_optunas_wrapped_operational_error_and_logs_once(caplog):
    storage_module.set_outage_limit(10)
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 4:
            raise _wrapped()
        return "told"

    with caplog.at_level(logging.WARNING, logger="archsearch"):
        assert retrying(flaky, "reporting a trial") == "told"
    assert len(calls) == 4
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not answering while reporting a trial" in m for m in messages) == 1, messages
    assert sum("answering again" in m for m in messages) == 1, messages
    assert "OperationalError" in messages[0] and "server closed the connection" in messages[0]


def test_retrying_gives_up_past_the_limit_with_one_paragraph():
    storage_module.set_outage_limit(0.6)
    start = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        retrying(lambda: (_ for _ in ()).throw(_wrapped()), "claiming a trial", "postgresql://u:***@db/x")
    assert 0.5 < time.monotonic() - start < 3
    text = str(info.value)
    assert "\n" not in text and "did not answer for 1 s (workers.storage_outage_s) while claiming" in text
    assert "postgresql://u:***@db/x" in text and "queued again by another worker" in text
    assert isinstance(info.value, ArchsearchError)  # the CLI prints it as one paragraph, exit 2


@pytest.mark.parametrize(
    "error",
    [
        optuna.exceptions.UpdateFinishedTrialError("finished"),
        optuna.exceptions.DuplicatedStudyError("exists"),
        StorageInternalError("commit failed"),  # no cause: not an outage
    ],
)
def test_retrying_does_not_retry_what_waiting_cannot_fix(error):
    calls = []

    def failing():
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        retrying(failing, "telling")
    assert calls == [1]


def test_an_integrity_error_under_optunas_wrapper_is_not_retried():
    try:
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))
    except IntegrityError as exc:
        wrapped = StorageInternalError("x")
        wrapped.__cause__ = exc
    calls = []
    with pytest.raises(StorageInternalError):
        retrying(lambda: calls.append(1) or (_ for _ in ()).throw(wrapped), "telling")
    assert calls == [1]


def _hold_exclusive_lock(path: Path, seconds: float, locked: threading.Event) -> threading.Thread:
    def hold():
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


def test_a_sqlite_file_locked_longer_than_the_busy_timeout_is_waited_out(tmp_path, caplog):
    """``storage_outage_s: 8`` gives a 2 s busy timeout per try; another connection holding an
    exclusive lock for 4.5 s is waited out by the retries, not an error."""
    config = structure(
        tiny_config(tmp_path, storage=f"sqlite:///{tmp_path / 'db.sqlite'}", workers={"storage_outage_s": 8})
    )
    storage = make_storage(config)
    study = optuna.create_study(study_name="locked", storage=storage)
    locked = threading.Event()
    holder = _hold_exclusive_lock(tmp_path / "db.sqlite", 4.5, locked)
    locked.wait(5)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="archsearch"):
        trial = study.ask()
        trial.set_user_attr("k", 1)
        study.tell(trial, 1.0)
    waited = time.monotonic() - start
    holder.join()
    assert 3.5 < waited < 8, waited
    assert study.trials[0].state.name == "COMPLETE" and study.trials[0].user_attrs == {"k": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("not answering" in m and "database is locked" in m for m in messages) == 1, messages
    assert sum("answering again" in m for m in messages) == 1


def test_a_sqlite_lock_held_past_the_limit_is_a_clear_error(tmp_path):
    config = structure(
        tiny_config(tmp_path, storage=f"sqlite:///{tmp_path / 'db.sqlite'}", workers={"storage_outage_s": 2})
    )
    study = optuna.create_study(study_name="locked", storage=make_storage(config))
    locked = threading.Event()
    holder = _hold_exclusive_lock(tmp_path / "db.sqlite", 5, locked)
    locked.wait(5)
    start = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"did not answer for 2 s .* database is locked"):
        study.ask()
    assert time.monotonic() - start < 4.5
    holder.join()


def test_storage_outage_s_is_checked(tmp_path):
    with pytest.raises(ArchsearchError, match=r"workers.storage_outage_s: expected seconds >= 0"):
        structure(tiny_config(tmp_path, workers={"storage_outage_s": -1}))
    assert structure(tiny_config(tmp_path)).workers.storage_outage_s == storage_module.STORAGE_OUTAGE_S


# -- passwords -------------------------------------------------------------------------------
@given(st.text(min_size=1, max_size=40))
def test_any_userinfo_password_is_hidden(password):
    url = f"postgresql+psycopg://archer:{password}@db.example.org:5432/archsearch"
    shown = redact(url)
    # A password that reads as `...&password=...` runs into the rest: all of it is hidden then.
    assert shown in (
        "postgresql+psycopg://archer:***@db.example.org:5432/archsearch",
        "postgresql+psycopg://archer:***",
    )


@given(
    st.text(
        alphabet=st.characters(blacklist_characters="&#", blacklist_categories=("Z", "Cc")),
        min_size=1,
        max_size=30,
    )
)
def test_any_query_password_is_hidden(password):
    url = f"postgresql://archer@db:5432/x?sslmode=require&password={password}&application_name=w"
    assert redact(url) == "postgresql://archer@db:5432/x?sslmode=require&password=***&application_name=w"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u@host:5432/db?password=q@r", "postgresql://u@host:5432/db?password=***"),
        # both, and an @ in each: where the userinfo ends is unclear, so all of it is hidden
        ("postgresql://u:p@ss@host/db?password=q@r", "postgresql://u:***"),
        ("mysql://u@host/db?PASSWORD=s3cret", "mysql://u@host/db?PASSWORD=***"),
        ("host=db user=u password=s3cret dbname=x", "host=db user=u password=*** dbname=x"),
        ("host=db password='s3 cret' dbname=x", "host=db password=*** dbname=x"),
        (
            "PGPASSWORD=s3cret python -m archsearch worker c.yaml",
            "PGPASSWORD=*** python -m archsearch worker c.yaml",
        ),
        (
            "error: storage postgresql://u:s3cret@h:1/db failed",
            "error: storage postgresql://u:***@h:1/db failed",
        ),
        ("sqlite:///runs/x/archsearch.db", "sqlite:///runs/x/archsearch.db"),
        ("postgresql://db.example:5432/x", "postgresql://db.example:5432/x"),
    ],
)
def test_every_url_form_is_redacted(text, shown):
    assert redact_text(text) == shown


def test_a_remembered_password_is_hidden_anywhere_also_percent_decoded():
    remember_secrets("postgresql://u:Hunter%2F22@db/x")
    assert redact_text("auth failed for Hunter/22 and Hunter%2F22") == "auth failed for *** and ***"


# -- two experiments in one storage ----------------------------------------------------------
@pytest.mark.slow
def test_studies_are_selected_by_exact_experiment_not_by_name_prefix(tmp_path):
    from archsearch.config import load_config
    from archsearch.report.loading import load_config_storage

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    paths = {
        name: write_config(
            tmp_path,
            name=f"{name}.yaml",
            experiment=name,
            storage=url,
            n_trials=2,
            output_dir=str(tmp_path / name),
        )
        for name in ("sec_b", "sec")
    }
    Engine(load_config(paths["sec_b"])).run()
    with pytest.raises(ArchsearchError, match="holds no study of experiment 'sec'"):
        status_rows(load_config(paths["sec"]))  # only sec_b's studies, which share the prefix sec_
    Engine(load_config(paths["sec"])).run()
    assert [r["study_name"] for r in status_rows(load_config(paths["sec"]))] == ["sec_8K_h2"]
    written = export(load_config(paths["sec"]))
    rows = read_csv(tmp_path / "sec" / "experiment_results.csv")
    assert {r["study_name"] for r in rows} == {"sec_8K_h2"} and len(rows) == 2
    assert [p.name for p in written if p.suffix == ".json"] == ["sec_8K_best.json"]
    assert [c.study_name for c in load_config_storage(paths["sec"]).cells] == ["sec_8K_h2"]


# -- STOP with several workers -----------------------------------------------------------------
def _workers(config: Path, n: int, extra: tuple[str, ...] = ()) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "archsearch", "worker", str(config), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(n)
    ]


def _finished(url: str, name: str = "tiny_8K_h2") -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url)).trials
    except (KeyError, ArchsearchError):
        return []


def _wait_for_complete(url: str, n: int, procs, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sum(t.state.name == "COMPLETE" for t in _finished(url)) >= n:
            return
        assert all(p.poll() is None for p in procs), [
            p.communicate()[1][-2000:] for p in procs if p.poll() is not None
        ]
        time.sleep(0.3)
    raise AssertionError(f"fewer than {n} trials completed in {timeout} s")


def _slow_trials(tmp_path: Path, **overrides) -> Path:
    return write_config(
        tmp_path,
        data={"synthetic_rows": 1500},
        training_search_space={"epochs": {"type": "categorical", "choices": [3]}},
        **overrides,
    )


@pytest.mark.slow
def test_a_stop_file_stops_every_worker_and_stays_until_removed(tmp_path):
    url = f"journal:{tmp_path / 'study.journal'}"
    config = _slow_trials(tmp_path, n_trials=200, storage=url)
    procs = _workers(config, 3)
    _wait_for_complete(url, 3, procs)
    (tmp_path / "out" / "STOP").touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [3, 3, 3], [o[1][-1500:] for o in outs]
    assert (tmp_path / "out" / "STOP").exists(), "a worker removed STOP before the others saw it"
    for out, _ in outs:
        assert "stays until you remove it" in out
    before = len(_finished(url))
    assert sum(t.state.name == "COMPLETE" for t in _finished(url)) < 200
    late = run_cli("worker", str(config))  # started while STOP exists: stops before claiming
    assert late.returncode == 3 and len(_finished(url)) == before


# -- PostgreSQL ----------------------------------------------------------------------------------
def _postgres_url() -> str:
    url = os.environ.get("ARCHSEARCH_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("ARCHSEARCH_TEST_POSTGRES is not set under CI (.ci/run starts PostgreSQL)")
        pytest.skip("set ARCHSEARCH_TEST_POSTGRES (bash .ci/postgres.sh starts a server)")
    return url


def _new_database(url: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return name


STOP_AFTER_TWO = """
from pathlib import Path
from archsearch import hookimpl
from archsearch.registry import SinkPlugin


class StopAfterTwo:
    def __init__(self, output_dir, config):
        self.output_dir = Path(output_dir)

    def trial_finished(self, record, cell):
        if cell.n_complete == 2 and not record.get("replayed"):
            (self.output_dir / "STOP").write_text("")

    def cell_finished(self, cell):
        pass

    def close(self):
        pass


@hookimpl
def archsearch_register_sinks():
    return [SinkPlugin("stop-after-two", StopAfterTwo)]
"""


@pytest.mark.slow
def test_no_output_of_a_run_shows_the_storage_password(tmp_path):
    base = _postgres_url()
    hostpart = base.split("@", 1)[1].rsplit("/", 1)[0]
    db = _new_database(base)
    password = f"Pw@{uuid.uuid4().hex[:10]}!x"  # an unencoded @, as people type it
    userinfo_url = f"postgresql://postgres:{password}@{hostpart}/{db}"
    query_url = f"postgresql://postgres@{hostpart}/{db}?password={quote(password)}"
    (tmp_path / "my_sinks.py").write_text(STOP_AFTER_TWO)
    config = write_config(tmp_path, n_trials=4, sinks=["csv", "json", "stop-after-two"], plugins=["my_sinks"])
    env = {"PYTHONPATH": str(tmp_path)}
    outs = [run_cli("run", str(config), "--no-progress", "--storage", userinfo_url, env=env)]
    assert outs[0].returncode == 3, outs[0].stderr[-2000:]
    assert "Resume with:" in outs[0].stdout and "postgres:***@" in outs[0].stdout
    (tmp_path / "out" / "STOP").unlink(missing_ok=True)
    outs.append(run_cli("worker", str(config), f"--storage={query_url}", env=env))
    outs.append(run_cli("status", str(config), "--storage", userinfo_url, env=env))
    outs.append(run_cli("export", str(config), "--storage", query_url, env=env))
    outs.append(run_cli("report", str(config), "--format", "md", "--storage", userinfo_url, env=env))
    missing = f"postgresql://postgres:{password}@{hostpart}/no_such_db"
    outs.append(run_cli("status", str(config), "--storage", missing, env=env))
    assert [o.returncode for o in outs] == [3, 0, 0, 0, 0, 2], [o.stderr[-1500:] for o in outs]
    assert "password=***" in outs[1].stderr  # the worker start line
    assert "postgresql://postgres:***@" in outs[5].stderr
    forms = {password, quote(password), quote(password, safe=""), password.split("@")[1]}
    for out in outs:
        for form in forms:
            assert form not in out.stdout and form not in out.stderr
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.suffix == ".csv" for p in files) and any(p.suffix == ".md" for p in files)
    for path in files:
        data = path.read_bytes()
        for form in forms:
            assert form.encode() not in data, path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """A throwaway PostgreSQL server of this test alone (so stopping it disturbs no one)."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins or shutil.which("su") is None or os.geteuid() != 0:
            pytest.skip("the outage test runs pg_ctl as the postgres user (root, Debian's server)")
        self.bin = bins[-1].parent
        self.port = _free_port()
        self.data = Path(tempfile.mkdtemp(prefix="archsearch-outage-pg-"))
        shutil.chown(self.data, "postgres")
        self._as_postgres(f"{self.bin}/initdb -D {self.data}/d -A trust -U postgres")
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, command: str) -> None:
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", command], check=True, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._as_postgres(f"{self.bin}/pg_ctl -D {self.data}/d -l {self.data}/log -w start -o '{options}'")

    def stop(self) -> None:
        self._as_postgres(f"{self.bin}/pg_ctl -D {self.data}/d -m fast -w stop")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.data, ignore_errors=True)


@pytest.mark.slow
def test_workers_wait_out_a_postgres_restart_and_finish_with_exact_counts(tmp_path):
    _postgres_url()
    server = PrivatePostgres()
    try:
        common = {
            "n_trials": 16,
            "storage": server.url,
            "workers": {"heartbeat_interval": 1.0, "grace_period": 8.0, "storage_outage_s": 90},
        }
        config = _slow_trials(tmp_path, **common)
        short = _slow_trials(
            tmp_path, name="short.yaml", **{**common, "workers": {**common["workers"], "storage_outage_s": 3}}
        )
        procs = _workers(config, 3)
        quitter = _workers(short, 1)[0]  # gives up after 3 s: its trial is recovered by the others
        _wait_for_complete(server.url, 3, [*procs, quitter])
        server.stop()
        time.sleep(20)
        server.start()
        outs = [p.communicate(timeout=300) for p in procs]
        _, quit_err = quitter.communicate(timeout=60)
        trials = [t for t in _finished(server.url) if not t.user_attrs.get("surplus")]
    finally:
        server.close()
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outs]
    for _, err in outs:
        assert "Traceback" not in err
        # logged when it begins and when it ends (a stale pooled connection may add one more pair)
        assert 1 <= err.count("not answering while") <= 2, err[-2000:]
        assert err.rfind("answering again after") > err.rfind("not answering while"), err[-2000:]
    assert quitter.returncode == 2 and "Traceback" not in quit_err, quit_err[-2000:]
    assert "did not answer for 3 s (workers.storage_outage_s)" in quit_err
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 16, Counter(t.state.name for t in trials)
    assert len({t.number for t in finished}) == 16
    quitter_worker = f":{quitter.pid}"
    for t in trials:
        if t.state.name == "FAIL":  # only the quitter's trial is failed for a missing heartbeat
            assert trial_worker(t).endswith(quitter_worker), t.user_attrs
