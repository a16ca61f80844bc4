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
