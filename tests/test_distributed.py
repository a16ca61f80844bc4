"""Many workers on one study, with real PostgreSQL and with a journal file.

PostgreSQL comes from ``ARCHSEARCH_TEST_POSTGRES`` (``.ci/run`` starts a server with
``.ci/postgres.sh``); without it the PostgreSQL cases are skipped here and fail under CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import optuna
import pytest
from engine_helpers import read_csv, run_cli, write_config

from archsearch.bench.distributed import throughput
from archsearch.engine import redact

pytestmark = pytest.mark.slow


@pytest.fixture(params=["postgresql", "journal"])
def storage(request, tmp_path):
    if request.param == "journal":
        return f"journal:{tmp_path / 'study.journal'}"
    url = os.environ.get("ARCHSEARCH_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("ARCHSEARCH_TEST_POSTGRES is not set under CI (.ci/run starts PostgreSQL)")
        pytest.skip("set ARCHSEARCH_TEST_POSTGRES (bash .ci/postgres.sh starts a server)")
    # A fresh database per test, so studies never meet.
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}"


def arch_key(trial) -> str:
    s = trial.user_attrs["setup"]
    return f"d{s['d_model']}-L{s['n_layers']}-h{s['n_heads']}-ff{s['d_ff']}"


def start_workers(n: int, config, env=None) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "archsearch", "worker", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        for _ in range(n)
    ]


def finished_trials(storage: str, study: str = "tiny_8K_h2"):
    from archsearch.config import structure
    from archsearch.engine import make_storage

    s = make_storage(structure({"experiment": "x", "budgets": ["1M"], "storage": storage}))
    return optuna.load_study(study_name=study, storage=s).trials


def test_four_workers_exact_count_no_duplicates_coverage_once(tmp_path, storage):
    config = write_config(tmp_path, n_trials=14, storage=storage)
    procs = start_workers(4, config)
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    trials = [t for t in finished_trials(storage) if not t.user_attrs.get("surplus")]
    complete = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(complete) == 14, Counter(t.state.name for t in trials)
    coverage = Counter(arch_key(t) for t in trials if t.user_attrs.get("coverage"))
    assert len(coverage) == 5 and set(coverage.values()) == {1}
    workers = {t.user_attrs["setup"]["worker"] for t in complete}
    assert len(workers) >= 2, "the trials were shared between workers"
    rates = [t.params["learning_rate"] for t in complete]
    assert len(set(rates)) == len(rates), "the workers' samplers proposed the same parameters"
    rows = read_csv(tmp_path / "out" / "experiment_results.csv")
    keys = [(r["study_name"], r["trial"]) for r in rows]
    assert len(keys) == len(set(keys)), "no row twice"
    assert {int(r["trial"]) for r in rows if r["state"] == "COMPLETE"} == {t.number for t in complete}
    for out, _ in outs:
        assert "password" not in out


def test_killed_worker_trial_is_retried_and_nothing_is_lost(tmp_path, storage):
    config = write_config(
        tmp_path,
        n_trials=10,
        storage=storage,
        data={"synthetic_rows": 1500},
        training_search_space={"epochs": {"type": "categorical", "choices": [4]}},
        workers={"heartbeat_interval": 0.5, "grace_period": 3.0},
    )
    procs = start_workers(3, config)
    victim, before = None, {}
    deadline = time.time() + 120
    while time.time() < deadline and victim is None:
        time.sleep(0.3)
        try:
            trials = finished_trials(storage)
        except Exception:  # noqa: BLE001 - the study may not exist yet
            continue
        running = [t for t in trials if t.state.name == "RUNNING" and "setup" in t.user_attrs]
        if sum(t.state.name == "COMPLETE" for t in trials) >= 2 and running:
            pid = int(running[0].user_attrs["setup"]["worker"].rsplit(":", 1)[1])
            victim = next((p for p in procs if p.pid == pid), None)
            if victim is not None:
                before = {t.number: t.value for t in trials if t.state.name == "COMPLETE"}
                victim.send_signal(signal.SIGKILL)
                killed_trial = running[0].number
    assert victim is not None, "no worker could be caught mid-trial"
    for p in procs:
        p.communicate(timeout=300)
    assert all(p.returncode == 0 for p in procs if p is not victim)
    trials = [t for t in finished_trials(storage) if not t.user_attrs.get("surplus")]
    complete = {t.number: t.value for t in trials if t.state.name == "COMPLETE"}
    assert len(complete) == 10
    assert all(complete[n] == v for n, v in before.items())
    killed = next(t for t in trials if t.number == killed_trial)
    assert killed.state.name == "FAIL" and "no heartbeat from worker" in killed.user_attrs["fail_reason"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed_trial]
    assert len(retries) == 1 and retries[0].params == killed.params and retries[0].state.name == "COMPLETE"


def test_worker_index_is_logged_and_checked(tmp_path):
    config = write_config(tmp_path, n_trials=1)
    out = run_cli("worker", str(config), "--worker-index", "-1")
    assert out.returncode == 2 and "--worker-index: expected a non-negative integer, got '-1'" in out.stderr
    out = run_cli("worker", str(config), "--worker-index", "5")
    assert out.returncode == 0, out.stderr
    assert "(index 5)" in out.stderr


def test_unreachable_storage_is_a_clear_error_without_the_password(tmp_path):
    url = "postgresql://alice:s3cret@127.0.0.1:1/nowhere"
    config = write_config(tmp_path, storage=url)
    out = run_cli("worker", str(config))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "s3cret" not in out.stderr and "postgresql://alice:***@127.0.0.1:1/nowhere" in out.stderr
    assert redact(url) == "postgresql://alice:***@127.0.0.1:1/nowhere"


def test_eight_workers_are_faster_than_two(tmp_path):
    two = throughput(2, 24, 0.4, f"journal:{tmp_path / 'two.journal'}", tmp_path / "two")
    eight = throughput(8, 24, 0.4, f"journal:{tmp_path / 'eight.journal'}", tmp_path / "eight")
    assert two["complete"] == eight["complete"] == 24
    assert eight["trials_per_s"] > two["trials_per_s"]


def test_run_with_local_worker_processes(tmp_path):
    """``workers.processes`` (and on CUDA, several workers per GPU) share the cell exactly."""
    config = write_config(tmp_path, n_trials=9, workers={"processes": 2})
    out = run_cli("run", str(config), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "2 worker processes on CPU" in out.stderr and "[worker 1]" in out.stderr
    trials = [
        t
        for t in finished_trials(f"sqlite:///{tmp_path / 'out' / 'archsearch.db'}")
        if not t.user_attrs.get("surplus")
    ]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 9
    assert len({t.user_attrs["setup"]["worker"] for t in complete}) == 2
    rates = [t.params["learning_rate"] for t in complete]
    assert len(set(rates)) == len(rates), "each worker's sampler has its own seed: no trial repeats another"
    rows = read_csv(tmp_path / "out" / "experiment_results.csv")
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in complete)
    assert "9 complete" in out.stdout


def test_gpu_plan_uses_several_workers_for_small_models(tmp_path, monkeypatch):
    """With (mocked) CUDA devices, a small budget gets several workers per GPU by default."""
    from engine_helpers import tiny_config

    from archsearch import gpu, local_workers
    from archsearch.config import structure
    from archsearch.engine import Engine

    config = structure(tiny_config(tmp_path, training={"device": "cuda"}))
    monkeypatch.setattr(gpu, "visible_devices", lambda: [0, 1])
    monkeypatch.setattr(gpu, "free_memory", lambda i: 80 * 2**30)
    engine = Engine(config)
    cells = engine.cells()
    slots = local_workers.plan(config, cells, engine.datasets())
    assert [s.device_id for s in slots] == [0] * 8 + [1] * 8
    assert slots[9].env["CUDA_VISIBLE_DEVICES"] == "1"
    explicit = structure(
        tiny_config(tmp_path, training={"device": "cuda"}, workers={"per_gpu": 3, "devices": [1]})
    )
    assert [s.device_id for s in local_workers.plan(explicit, cells, engine.datasets())] == [1, 1, 1]
    cpu = structure(tiny_config(tmp_path, training={"device": "cpu"}))
    assert local_workers.plan(cpu, cells, engine.datasets()) is None


def test_local_workers_share_the_cores(tmp_path, monkeypatch):
    """Each of several local workers gets its share of the cores unless cpu_threads is set."""
    from engine_helpers import tiny_config

    from archsearch import engine, gpu, local_workers
    from archsearch.config import structure

    seen = []
    monkeypatch.setattr(gpu, "run_workers", lambda slots, target, args: seen.append(args[0]) or [])
    monkeypatch.setattr(engine, "available_cores", lambda: 16)
    slots = [gpu.WorkerSlot(0, i, {}, i) for i in range(8)]
    local_workers.run_budget(structure(tiny_config(tmp_path)), None, slots)
    local_workers.run_budget(structure(tiny_config(tmp_path, training={"cpu_threads": 3})), None, slots)
    local_workers.run_budget(structure(tiny_config(tmp_path)), None, slots * 3)
    assert [raw["training"]["cpu_threads"] for raw in seen] == [2, 3, 1]
    assert all(raw["workers"]["processes"] == 1 for raw in seen)
