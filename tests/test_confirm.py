"""The confirmation stage: the top configurations trained again over fresh seeds, once, shared
by workers, resumable; the confirmed answer and its interval."""

from __future__ import annotations

import json
import math
import threading
from collections import Counter

import optuna
from engine_helpers import read_csv, run_cli, tiny_config, write_config
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from archsearch.config import structure
from archsearch.search import queueing
from archsearch.search.confirm import confirm_seed, interval, planned, queue_confirmation, select, summarize
from archsearch.search.matrix import Cell
from archsearch.search.study import enqueue_coverage

ARCH = {"d_model": 16, "n_layers": 2, "n_heads": 2, "d_ff": 32, "param_count": 6225}
DIST = {"lr": FloatDistribution(1e-4, 1e-1, log=True)}


def _trial(number, value, lr, stage=None, of=None, seed=None, state=TrialState.COMPLETE):
    attrs = {"setup": {**ARCH, "training": {"learning_rate": lr}}}
    if stage:
        attrs.update(stage=stage, confirm_of=of, confirm_seed=seed)
    t = create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"lr": lr},
        distributions=DIST,
        user_attrs=attrs,
    )
    t.number = number
    return t


def test_select_takes_distinct_configurations_best_first():
    trials = [_trial(0, 0.5, 1e-3), _trial(1, 0.4, 1e-2), _trial(2, 0.4, 1e-2), _trial(3, 0.45, 1e-3)]
    # 2 repeats 1's configuration and 0 repeats 3's: each is named by its best trial
    assert [t.number for t in select(trials, 3)] == [1, 3]
    assert [t.number for t in select(trials, 1, "maximize")] == [0]
    specs = planned(trials, 2, 3, base_seed=5)
    assert [(u["confirm_of"], u["confirm_seed"]) for _, u in specs] == [
        (n, confirm_seed(5, i)) for i in range(3) for n in (1, 3)
    ]
    assert len({confirm_seed(5, i) for i in range(3)}) == 3


def test_summarize_names_the_best_mean_and_whether_it_is_separated():
    search = [_trial(0, 0.30, 1e-3), _trial(1, 0.35, 1e-2)]
    close = [
        _trial(2, 0.50, 1e-3, "confirm", 0, 1),
        _trial(3, 0.40, 1e-2, "confirm", 1, 1),
        _trial(4, 0.52, 1e-3, "confirm", 0, 2),
        _trial(5, 0.41, 1e-2, "confirm", 1, 2),
        _trial(6, 0.51, 1e-3, "confirm", 0, 3),
        _trial(7, 0.42, 1e-2, "confirm", 1, 3),
    ]
    c = summarize(search + close)
    assert c.winner.config_of == 1 and c.runner_up.config_of == 0
    assert math.isclose(c.winner.mean, 0.41) and c.winner.values == [0.40, 0.41, 0.42]
    assert c.separated is True and c.complete and c.seeds == 3
    assert c.search_best_of == 0 and c.agrees is False  # the search's single best was not the best mean
    noisy = [_trial(8, 0.7, 1e-3, "confirm", 0, 4), _trial(9, 0.1, 1e-2, "confirm", 1, 4)]
    c = summarize(search + close + noisy)
    assert c.separated is False  # wide intervals overlap
    twice = _trial(11, 0.9, 1e-2, "confirm", 1, 1)  # seed 1 of trial 1 again (a retried queueing)
    assert summarize(search + close + [twice]).winner.values == [0.40, 0.41, 0.42]
    waiting = _trial(10, None, 1e-2, "confirm", 1, 5, state=TrialState.WAITING)
    assert summarize(search + close + [waiting]).complete is False
    assert summarize(search) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 10.0), min_size=2, max_size=8))
def test_interval_holds_the_mean(values):
    mean, _std, low, high = interval(values)
    assert low <= mean + 1e-12 and mean - 1e-12 <= high
    assert math.isclose(high - mean, mean - low, rel_tol=1e-9, abs_tol=1e-12)
    assert min(values) - 1e-9 <= mean <= max(values) + 1e-9


def _confirm_rows(rows):
    return [r for r in rows if r["stage"] == "confirm"]


def test_run_confirms_the_top_configurations(tmp_path):
    config = write_config(tmp_path, n_trials=5, confirm={"top_k": 2, "seeds": 2})
    out = run_cli("run", str(config))
    assert out.returncode == 0, out.stderr
    assert "confirmed: d_model=" in out.stdout
    rows = read_csv(tmp_path / "out" / "experiment_results.csv")
    search, confirm = [r for r in rows if r["stage"] == "search"], _confirm_rows(rows)
    assert len(search) == 5 and len(confirm) == 4
    assert all(r["state"] == "COMPLETE" for r in confirm)
    best = json.loads((tmp_path / "out" / "tiny_8K_best.json").read_text())
    c = best["confirmed"]
    assert best["n_trials_completed"] == 5 and c["complete"] and c["seeds"] == 2
    won = [r for r in confirm if (r["d_model"], r["learning_rate"]) == (
        str(c["winner"]["arch"]["d_model"]), repr(c["winner"]["params"]["learning_rate"]))]
    assert sorted(float(r["val_loss"]) for r in won) == sorted(c["winner"]["values"])
    assert math.isclose(c["winner"]["mean"], sum(c["winner"]["values"]) / 2)
    assert c["winner"]["test_loss"] is not None and c["winner"]["baseline_test_loss"] is not None
    assert c["runner_up"]["test_loss"] is None  # test loss: the winner's alone
    status = run_cli("status", str(config))
    assert status.returncode == 0 and "tiny_8K_h2" in status.stdout
    assert status.stdout.splitlines()[1].split()[1:7] == ["5", "0", "0", "0", "0", "4/4"]
    plan = run_cli("plan", str(config))
    assert "5+4" in plan.stdout and "5 search trials + 4 confirmation trials" in plan.stdout


def test_confirmation_resumes_without_queueing_twice(tmp_path):
    """Queued, then stopped before any ran (a timeout of ~0); the next run runs them, once."""
    first = write_config(tmp_path, "a.yaml", n_trials=4, confirm=None)
    assert run_cli("run", str(first)).returncode == 0
    queued_only = write_config(tmp_path, "b.yaml", n_trials=4, confirm={"top_k": 2, "seeds": 2}, timeout_hours=1e-9)
    assert run_cli("run", str(queued_only)).returncode == 0
    full = write_config(tmp_path, "c.yaml", n_trials=4, confirm={"top_k": 2, "seeds": 2})
    out = run_cli("run", str(full))
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="tiny_8K_h2", storage=f"sqlite:///{tmp_path / 'out' / 'archsearch.db'}")
    confirm = [t for t in study.trials if t.user_attrs.get("stage") == "confirm"]
    assert len(confirm) == 4 and all(t.state == TrialState.COMPLETE for t in confirm)
    assert len({(t.user_attrs["confirm_of"], t.user_attrs["confirm_seed"]) for t in confirm}) == 4
    assert len(_confirm_rows(read_csv(tmp_path / "out" / "experiment_results.csv"))) == 4


def test_local_workers_share_the_confirmation_exactly(tmp_path):
    config = write_config(tmp_path, n_trials=6, confirm={"top_k": 2, "seeds": 3}, workers={"processes": 2})
    out = run_cli("run", str(config))
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="tiny_8K_h2", storage=f"sqlite:///{tmp_path / 'out' / 'archsearch.db'}")
    real = [t for t in study.trials if not t.user_attrs.get("surplus")]
    confirm = [t for t in real if t.user_attrs.get("stage") == "confirm"]
    search = [t for t in real if t.user_attrs.get("stage") != "confirm" and t.state == TrialState.COMPLETE]
    assert len(search) == 6
    assert Counter((t.user_attrs["confirm_of"], t.user_attrs["confirm_seed"]) for t in confirm) == Counter(
        {k: 1 for k in {(t.user_attrs["confirm_of"], t.user_attrs["confirm_seed"]) for t in confirm}}
    )
    assert len(confirm) == 6 and all(t.state == TrialState.COMPLETE for t in confirm)
    assert optuna.study.get_all_study_names(study._storage) == ["tiny_8K_h2"]  # no marker left


def _search_study(tmp_path, n=5):
    study = optuna.create_study(study_name="c_8K_h2", storage=f"sqlite:///{tmp_path / 'c.db'}")
    for i in range(n):
        study.add_trial(_trial(i, 0.5 + 0.01 * i, 1e-3 * (i + 1)))
    return study


def test_racing_processes_queue_the_confirmation_once(tmp_path):
    study = _search_study(tmp_path)
    config = structure({"experiment": "c", "budgets": ["8K"], "confirm": {"top_k": 3, "seeds": 2}})
    barrier, queued = threading.Barrier(4), []

    def go():
        s = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 'c.db'}")
        barrier.wait()
        queued.append(queue_confirmation(s, config))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(queued) == [0, 0, 0, 6]
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert len(waiting) == 6 and {t.user_attrs["confirm_of"] for t in waiting} == {0, 1, 2}
    assert optuna.study.get_all_study_names(study._storage) == ["c_8K_h2"]


def test_a_dead_queueing_is_completed_round_by_round(tmp_path, monkeypatch):
    """Coverage with k=2 queues every architecture twice; a process killed half-way left a marker
    and 6 of 12: the next one completes the multiset (it used to skip parameters already queued,
    dropping the second round while recording all 12)."""
    monkeypatch.setattr(queueing, "STALL_S", 0.5)
    from archsearch.architecture import Architecture
    from archsearch.space.encodings import IndexEncoding

    archs = tuple(Architecture(d, n, 2, 2 * d, d * n * 100) for d in (8, 16, 32) for n in (1, 2))
    config = structure(tiny_config(tmp_path, allocation={"strategy": "coverage", "k": 2}))
    cell = Cell(1000, 2, "cov_1K_h2", archs)
    encoding = IndexEncoding(archs)
    url = f"sqlite:///{tmp_path / 'cov.db'}"
    study = optuna.create_study(study_name=cell.study_name, storage=url)
    optuna.create_study(study_name=f"{cell.study_name}:coverage", storage=url)  # the dead one's marker
    from archsearch.search.matrix import coverage_order

    order = coverage_order(archs, 2)
    for arch in order[:6]:
        study.enqueue_trial(encoding.params(arch), user_attrs={"coverage": True})
    assert enqueue_coverage(study, config, cell, encoding) == 12
    queued = Counter(t.system_attrs["fixed_params"]["architecture"] for t in study.trials)
    assert queued == Counter({a.key: 2 for a in archs})
    assert optuna.study.get_all_study_names(study._storage) == [cell.study_name]
