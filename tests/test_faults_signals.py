"""Signals reach every process (issue 19, item 3): SIGTERM or SIGINT to a ``run`` with local
workers stops them the way it stops the run itself, and the workers stop when their parent dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from engine_helpers import read_csv, write_config

from archsearch.records import trial_worker

N_TRIALS = 60


def start_run(tmp_path, **overrides):
    config = write_config(
        tmp_path,
        n_trials=N_TRIALS,
        data={"synthetic_rows": 1500},
        training_search_space={"epochs": {"type": "categorical", "choices": [3]}},
        workers={"processes": 2, **overrides},
    )
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "archsearch", "run", str(config), "--no-progress"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, tmp_path / "run.log"


def trials(tmp_path):
    db = tmp_path / "out" / "archsearch.db"
    return optuna.load_study(study_name="tiny_8K_h2", storage=f"sqlite:///{db}").trials


def worker_pids(tmp_path, parent: int) -> set[int]:
    """The local workers' process ids, from the trials they ran or run (their worker is host:pid)."""
    host = socket.gethostname()
    pids = set()
    for t in trials(tmp_path):
        h, _, pid = trial_worker(t).rpartition(":")
        if h == host and pid.isdigit() and int(pid) != parent:
            pids.add(int(pid))
    return pids


def wait_until_both_workers_run(tmp_path, proc) -> set[int]:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            pids = worker_pids(tmp_path, proc.pid)
            done = sum(t.state.name == "COMPLETE" for t in trials(tmp_path))
        except Exception:  # noqa: BLE001 - the study may not exist yet
            continue
        if len(pids) == 2 and done >= 2:
            return pids
    pytest.fail(f"the workers never both ran a trial: {(tmp_path / 'run.log').read_text()[-2000:]}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM from outside is POSIX")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_run_stops_its_local_workers_and_exits_stopped(tmp_path, sig):
    proc, log = start_run(tmp_path)
    pids = wait_until_both_workers_run(tmp_path, proc)
    proc.send_signal(sig)  # to the parent alone, as kill, docker stop, systemd and Slurm send it
    sent = time.monotonic()
    rc = proc.wait(timeout=90)
    took = time.monotonic() - sent
    text = log.read_text()
    assert rc == 3, text[-3000:]  # stopped, not finished
    assert "Resume with:" in text
    for index in (0, 1):  # each worker heard it and stopped as the run does
        lines = [line for line in text.splitlines() if f"[worker {index}]" in line]
        assert any("SIGTERM received" in line for line in lines), text[-3000:]
    assert not any(alive(p) for p in pids), "a worker outlived its run"
    states = [t.state.name for t in trials(tmp_path)]
    assert "RUNNING" not in states, "each worker finished its trial before exiting"
    assert states.count("COMPLETE") < N_TRIALS, (
        f"the workers ran the whole budget ({took:.0f} s after the signal)"
    )
    rows = read_csv(tmp_path / "out" / "experiment_results.csv")
    assert sorted(int(r["trial"]) for r in rows) == sorted(
        t.number for t in trials(tmp_path) if t.state.is_finished() and not t.user_attrs.get("surplus")
    )


@pytest.mark.skipif(os.name != "posix", reason="kill -9 is POSIX")
def test_local_workers_stop_when_their_parent_is_killed(tmp_path):
    proc, _ = start_run(tmp_path)
    pids = wait_until_both_workers_run(tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 60
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(alive(p) for p in pids), "the workers carried on as orphans"
    states = [t.state.name for t in trials(tmp_path)]
    assert states.count("COMPLETE") < N_TRIALS
    assert "RUNNING" not in states, "each worker finished (and recorded) its trial before exiting"


# -- orphans (item 7) ------------------------------------------------------------------------------
BLOCKING_SAMPLER = """
import os
import time

import optuna
from archsearch import hookimpl
from archsearch.registry import SamplerPlugin


class Blocking(optuna.samplers.RandomSampler):
    def sample_independent(self, study, trial, name, distribution):
        if os.environ.get("BLOCK_SAMPLING"):  # stuck right after the claim, before any attribute
            time.sleep(600)
        return super().sample_independent(study, trial, name, distribution)


@hookimpl
def archsearch_register_samplers():
    return [SamplerPlugin("blocking", lambda options, seed: Blocking(seed=seed))]
"""


@pytest.mark.skipif(os.name != "posix", reason="kill -9 is POSIX")
def test_a_process_killed_between_its_claim_and_its_first_attribute_is_recovered_at_once(tmp_path):
    (tmp_path / "blocking_sampler.py").write_text(BLOCKING_SAMPLER)
    config = write_config(
        tmp_path,
        n_trials=1,
        sampler={"name": "blocking"},
        plugins=["blocking_sampler"],
        allocation={"strategy": "none"},
        workers={"heartbeat_interval": 5.0, "grace_period": 30.0},  # the watch alone waits 30 s
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "archsearch", "run", str(config), "--no-progress"],
        stdout=(tmp_path / "blocked.log").open("w"),
        stderr=subprocess.STDOUT,
        env={**env, "BLOCK_SAMPLING": "1"},
    )
    deadline = time.time() + 60
    claimed = None
    while time.time() < deadline and claimed is None:
        time.sleep(0.2)
        try:
            claimed = next((t for t in trials(tmp_path) if t.state.name == "RUNNING"), None)
        except Exception:  # noqa: BLE001 - the study may not exist yet
            continue
    assert claimed is not None, (tmp_path / "blocked.log").read_text()[-2000:]
    time.sleep(0.5)  # now inside the sampler, stuck
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stuck = next(t for t in trials(tmp_path) if t.number == claimed.number)
    assert stuck.state.name == "RUNNING" and "setup" not in stuck.user_attrs, (
        "killed before its first attribute"
    )
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "archsearch", "run", str(config), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr[-2000:]
    killed = next(t for t in trials(tmp_path) if t.number == claimed.number)
    assert killed.state.name == "FAIL" and "died mid-trial" in killed.user_attrs["fail_reason"]
    assert took < 25, f"recovered only after {took:.0f} s (the heartbeat grace), not at once"
    retries = [t for t in trials(tmp_path) if t.user_attrs.get("retry_of") == claimed.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE", "retried exactly once"
