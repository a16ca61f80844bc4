"""The benchmark suites' plumbing: a quick suite writes its files, with measured content."""

import itertools
import json

from engine_helpers import run_cli

from archsearch.architecture import Architecture
from archsearch.bench import SUITES
from archsearch.bench.tabular import STRATEGIES, Table, load_table, replay
from archsearch.plugin.manager import get_plugin_manager


def test_bench_estimator_quick_writes_json_and_markdown(tmp_path):
    out = run_cli("bench", "estimator", "--quick", "--output", str(tmp_path))
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "estimator.json").read_text())
    assert doc["suite"] == "estimator" and doc["quick"] is True and doc["machine"]["torch"]
    assert {r["variant"] for r in doc["rows"]} == {"patchtst", "patchtst-ci"}
    for row in doc["rows"]:
        assert row["mismatches"] == 0 and row["architectures"] == 16
        assert row["speedup"] > 1  # building a model is never faster than a closed form
    assert all(g["grid_size"] == 560 for g in doc["grid"])
    md = (tmp_path / "estimator.md").read_text()
    assert md.startswith("## estimator") and "| patchtst |" in md


def test_unknown_suite_is_named(tmp_path):
    out = run_cli("bench", "nope", "--output", str(tmp_path))
    assert out.returncode == 2 and "unknown suite 'nope'; the suites are " + ", ".join(SUITES) in out.stderr


def test_replay_regret_reaches_zero_when_every_pair_is_tried():
    archs = [Architecture(d, n, 2, 2 * d, d * n) for d in (8, 16) for n in (1, 2)]
    configs = [(1e-3, 64), (3e-3, 64)]
    by_seed = {
        (a.key, c): [0.5 + a.d_model / 100 + a.n_layers / 10 + c[0] * 10] * 2 for a in archs for c in configs
    }
    table = Table(archs, configs, by_seed)
    plugins = get_plugin_manager(autoload=False)
    for strategy in STRATEGIES[:5]:
        regrets = replay(table, strategy, 0, 30, plugins)
        assert all(a >= b for a, b in itertools.pairwise(regrets)), "best-so-far never worsens"
        assert regrets[-1] == 0.0 and min(regrets) >= 0
    # coverage tries every architecture first: after 4 trials the best one was seen, at most
    # with the other learning rate (0.02 worse)
    cover = next(s for s in STRATEGIES if s.coverage)
    assert replay(table, cover, 0, 4, plugins)[-1] <= 0.02 + 1e-9


def test_shipped_table_loads():
    from archsearch.bench.tabular import TABLE

    assert TABLE.exists(), f"the tabular benchmark is committed at {TABLE}"
    table = load_table(TABLE)
    assert len(table.configs) == 3 and len(table.archs) >= 5
    assert all(len(v) == 2 for v in table.by_seed.values())


def test_overhead_rows_grow_with_the_trial_count(monkeypatch):
    """The overhead suite reads rows at each trial count from one run per loop, and plots both loops."""
    import math

    from archsearch.bench import overhead

    monkeypatch.setattr(overhead, "QUICK_COUNTS", (8, 20))
    monkeypatch.setattr(overhead, "PAIR_TRIALS", 6)
    monkeypatch.setattr(overhead, "QUICK_PAIRS", 2)
    result = overhead.suite(quick=True)
    pairs = result["pairs"]
    assert [(r["storage"], r["trials"], r["pairs"]) for r in pairs] == [("memory", 6, 2), ("sqlite", 6, 2)]
    for r in pairs:
        assert 0 < r["ratio_low"] <= r["ratio"] <= r["ratio_high"] and r["cpu_ratio"] > 0
    assert "| sqlite | 6 | 2 |" in result["markdown"]
    rows = result["rows"]
    assert [(r["storage"], r["trials"]) for r in rows] == [
        ("memory", 8),
        ("memory", 20),
        ("sqlite", 8),
        ("sqlite", 20),
    ]
    for small, big in (rows[:2], rows[2:]):
        assert (
            0 < small["raw_total_s"] < big["raw_total_s"]
            and 0 < small["archsearch_total_s"] < big["archsearch_total_s"]
        )
    for r in rows:
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0 and math.isfinite(r["tail_ratio"])
        assert math.isclose(r["ratio"], r["archsearch_ms"] / r["raw_optuna_ms"])
    assert "| sqlite | 20 |" in result["markdown"]
    (figure,) = result["plots"].values()
    assert len(figure.axes[0].lines) == 4  # archsearch and raw Optuna, in memory and with SQLite


def test_readside_suite_times_each_command(tmp_path, monkeypatch):
    """The readside suite builds its studies, times every command and says which targets it met."""
    from archsearch.bench import readside

    monkeypatch.setattr(readside, "SIZES", (25, 50))
    monkeypatch.setattr(readside, "TARGETS", {"status": ("s", 2.0), "export": ("x", 2.0)})
    rows = readside.read_side_rows(tmp_path, repeats=1)
    assert [r["command"] for r in rows] == ["status", "export"]
    for r in rows:
        assert r["s_25"] > 0 and r["s_50"] > 0 and abs(r["ratio"] - r["s_50"] / r["s_25"]) < 1e-9
        assert r["imports"] == "-", "status and export import neither torch nor pandas"
    assert rows[0]["met"] == (rows[0]["s_50"] <= 2.0)
    assert "readside" in SUITES


def test_the_pool_pace_leaves_out_start_up_and_stragglers():
    """The steady rate counts completions between the 10th and 90th percentile only: a slow start
    (one trial, then a pause) does not weigh on it; the whole span does."""
    import datetime as dt
    from types import SimpleNamespace

    from archsearch.bench.distributed import _span, _steady_rate

    t0 = dt.datetime(2026, 1, 1)
    state = SimpleNamespace(name="COMPLETE")
    trials = [SimpleNamespace(state=state, datetime_start=t0, datetime_complete=t0 + dt.timedelta(seconds=1))]
    later = t0 + dt.timedelta(seconds=10)
    trials += [
        SimpleNamespace(state=state, datetime_start=later, datetime_complete=later + dt.timedelta(seconds=i / 10))
        for i in range(1, 100)
    ]
    study = SimpleNamespace(get_trials=lambda deepcopy=False: trials)
    done, span = _span(study)
    assert done == 100 and abs(span - 19.9) < 1e-6
    assert abs(_steady_rate(study) - 10.0) < 1e-6  # ten a second once running


def test_pool_rounds_report_the_median_and_every_round():
    from archsearch.bench.distributed import _rounds

    def run(ours: float, raw: float, raw_complete: int) -> dict:
        return {
            "workers": 4,
            "archsearch_per_s": ours,
            "raw_per_s": raw,
            "archsearch_complete": 200,
            "raw_complete": raw_complete,
            "ratio": ours / raw,
            "steady_ratio": ours / raw,
        }

    row = _rounds([run(30, 60, 203), run(50, 50, 205), run(45, 50, 203)])
    assert row["ratios"] == [0.5, 1.0, 0.9] and row["ratio"] == 0.9
    assert row["archsearch_per_s"] == 45 and row["raw_per_s"] == 50
    assert row["archsearch_complete"] == "200" and row["raw_complete"] == "203, 205"
