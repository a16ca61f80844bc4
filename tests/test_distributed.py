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
from archsearch.storage import redact

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
    from archsearch.storage import make_storage

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

    from archsearch.config import structure
    from archsearch.search import workers as local_workers
    from archsearch.search.engine import Engine
    from archsearch.training import memory

    config = structure(tiny_config(tmp_path, training={"device": "cuda"}))
    monkeypatch.setattr(memory, "visible_devices", lambda: [0, 1])
    monkeypatch.setattr(memory, "free_memory", lambda i: 80 * 2**30)
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

    from archsearch.config import structure
    from archsearch.search import workers
    from archsearch.search.engine import run_worker

    seen = []
    monkeypatch.setattr(workers, "run_workers", lambda slots, target, args: seen.append(args[0]) or [])
    monkeypatch.setattr(workers, "available_cores", lambda: 16)
    slots = [workers.WorkerSlot(0, i, {}, i) for i in range(8)]
    workers.run_budget(structure(tiny_config(tmp_path)), None, slots, run_worker)
    workers.run_budget(structure(tiny_config(tmp_path, training={"cpu_threads": 3})), None, slots, run_worker)
    workers.run_budget(structure(tiny_config(tmp_path)), None, slots * 3, run_worker)
    assert [raw["training"]["cpu_threads"] for raw in seen] == [2, 3, 1]
    assert all(raw["workers"]["processes"] == 1 for raw in seen)


# --- the races, one interleaving at a time ------------------------------------------------------


def study_with_a_dead_trial(tmp_path, fixed: dict | None = None):
    """Two complete trials and a RUNNING one whose worker is gone (n_trials = 3)."""
    from archsearch.storage import open_storage

    storage = open_storage(f"journal:{tmp_path / 's.journal'}")
    study = optuna.create_study(study_name="s", storage=storage)
    for x in (0.1, 0.2):
        t = study.ask()
        t.suggest_float("x", 0, 1)
        study.tell(t, x)
    if fixed is not None:
        study.enqueue_trial(fixed, user_attrs={"coverage": True})
    dead = study.ask()
    if fixed is None:
        dead.suggest_float("x", 0, 1)
    return study, storage.get_trial(dead._trial_id)


def queued_params(study, trial) -> dict:
    """What a popped queued trial will suggest (Optuna applies them at the suggest calls)."""
    return study._storage.get_trial(trial._trial_id).system_attrs["fixed_params"]


def test_a_retry_is_queued_before_the_dead_trial_frees_its_slot(tmp_path):
    from archsearch.search.coordination import Coordinator, fail_and_retry

    study, dead = study_with_a_dead_trial(tmp_path)
    seen = []
    enqueue = study.enqueue_trial

    def enqueue_and_look(*args, **kwargs):
        seen.append(Coordinator(study, 3, 1.0, 2.0).may_claim())  # before the retry is queued
        enqueue(*args, **kwargs)
        seen.append(Coordinator(study, 3, 1.0, 2.0).may_claim())  # queued, dead one not yet failed

    study.enqueue_trial = enqueue_and_look
    assert fail_and_retry(study, dead, "no heartbeat")
    assert seen == [None, None], "no worker may claim a fresh trial while the retry is not queued"
    assert not fail_and_retry(study, dead, "no heartbeat"), "a second watcher does not retry it again"
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == dead.number
    retry = study.ask()
    assert queued_params(study, retry) == dead.params and retry.number == 3
    assert study.trials[dead.number].state.name == "FAIL"


def test_a_trial_that_died_before_suggesting_is_retried_with_its_queued_parameters(tmp_path):
    from archsearch.search.coordination import fail_and_retry

    study, dead = study_with_a_dead_trial(tmp_path, fixed={"x": 0.75})
    assert dead.params == {}
    assert fail_and_retry(study, dead, "died")
    retry = study.ask()
    assert queued_params(study, retry) == {"x": 0.75}
    assert retry.user_attrs == {"retry_of": 2, "coverage": True}


def test_a_trial_that_finishes_after_all_takes_its_retry_back(tmp_path):
    from archsearch.search.coordination import fail_and_retry

    study, dead = study_with_a_dead_trial(tmp_path)
    enqueue = study.enqueue_trial

    def enqueue_then_the_slow_worker_finishes(*args, **kwargs):
        enqueue(*args, **kwargs)
        study.tell(dead.number, 0.3)

    study.enqueue_trial = enqueue_then_the_slow_worker_finishes
    assert not fail_and_retry(study, dead, "no heartbeat")
    states = [(t.state.name, t.user_attrs.get("surplus", False)) for t in study.trials]
    assert states == [("COMPLETE", False)] * 3 + [("FAIL", True)]


def test_a_trial_failed_by_another_worker_is_dropped_not_crashed_on(tmp_path, caplog):
    """A stalled worker whose trial another worker failed (no heartbeat) gives it up and goes on."""
    from engine_helpers import tiny_config

    from archsearch.bench.overhead import NullResult
    from archsearch.config import structure
    from archsearch.search.engine import Engine

    taken = []

    def train_while_a_watcher_fails_the_trial(model, data, config, on_epoch=None):
        if not taken:  # the first trial: another worker gives up on it meanwhile
            study = optuna.load_study(study_name="tiny_8K_h2", storage=storage_url)
            (running,) = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
            from archsearch.search.coordination import fail_and_retry

            taken.append(fail_and_retry(study, running, "no heartbeat from worker x for 130 s"))
        return NullResult(best_val_loss=config.learning_rate)

    storage_url = f"sqlite:///{tmp_path / 'out' / 'archsearch.db'}"
    config = structure(tiny_config(tmp_path, n_trials=6))  # 5 coverage trials, then the retry
    with caplog.at_level("WARNING", logger="archsearch"):
        Engine(config, train_fn=train_while_a_watcher_fails_the_trial, build_fn=lambda a, s: None).run()
    assert taken == [True]
    trials = optuna.load_study(study_name="tiny_8K_h2", storage=storage_url).trials
    assert [t.state.name for t in trials].count("COMPLETE") == 6
    assert trials[0].state.name == "FAIL" and "no heartbeat" in trials[0].user_attrs["fail_reason"]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 0)
    assert retry.state.name == "COMPLETE" and retry.params == trials[0].params
    assert "trial 0 was failed by another worker while this one ran it" in caplog.text


QUEUED, POPPERS = 200, 6


def test_sqlite_claims_each_queued_trial_once(tmp_path):
    """Six processes pop 200 queued trials from one SQLite file: each exactly once (without
    BEGIN IMMEDIATE about one in ten was claimed twice)."""
    from archsearch.storage import open_storage

    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=open_storage(url))
    for i in range(QUEUED):
        study.enqueue_trial({"x": float(i)})
    code = (
        "import sys, optuna\n"
        "from archsearch.storage import open_storage\n"
        "optuna.logging.set_verbosity(optuna.logging.ERROR)\n"
        f"s = optuna.load_study(study_name='q', storage=open_storage({url!r}))\n"
        "while True:\n"
        "    t = s.ask()\n"
        "    if 'fixed_params' not in s._storage.get_trial(t._trial_id).system_attrs: break\n"
        "    print(t.number, flush=True)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(POPPERS)
    ]
    popped = [int(n) for p in procs for n in p.communicate(timeout=240)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(popped) == list(range(QUEUED)), Counter(popped).most_common(3)
