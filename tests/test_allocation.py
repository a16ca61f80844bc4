"""Coverage allocation is queued exactly once, however many processes start at the same moment."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter

import optuna
import pytest

from archsearch.architecture import Architecture
from archsearch.config import structure
from archsearch.search.matrix import Cell, coverage_order
from archsearch.search.study import enqueue_coverage
from archsearch.space.encodings import IndexEncoding
from archsearch.space.grid import extremes

ARCHS = tuple(Architecture(d, n, 2, 2 * d, d * n * 100) for d in (8, 16, 32) for n in (1, 2, 3))


def _enqueue(url: str, k: int, barrier) -> int:
    config = structure({"experiment": "cov", "budgets": ["1K"], "allocation": {"k": k}})
    cell = Cell(1000, 1, "cov_1K_h1", ARCHS)
    study = optuna.create_study(study_name=cell.study_name, storage=url, load_if_exists=True)
    barrier.wait()
    return enqueue_coverage(study, config, cell, IndexEncoding(ARCHS))


@pytest.mark.parametrize("k", [1, 2])
def test_coverage_queued_exactly_once_by_concurrent_processes(tmp_path, k):
    url = f"sqlite:///{tmp_path / 'cov.db'}"
    optuna.create_study(study_name="cov_1K_h1", storage=url)  # the schema, before the race
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(4) as pool:
        barrier = manager.Barrier(4)
        queued = pool.starmap(_enqueue, [(url, k, barrier)] * 4)
    study = optuna.load_study(study_name="cov_1K_h1", storage=url)
    waiting = [
        t.system_attrs["fixed_params"]["architecture"] for t in study.trials if t.state.name == "WAITING"
    ]
    assert Counter(waiting) == Counter(a.key for a in ARCHS * k)
    assert sorted(queued) == [0, 0, 0, len(ARCHS) * k]


def test_coverage_order_puts_the_extremes_first():
    order = coverage_order(ARCHS, 2)
    first = extremes(ARCHS)
    assert order[: len(first)] == first
    assert {a.d_model for a in first} == {8, 32} and {a.n_layers for a in first} >= {1, 3}
    assert order[: len(ARCHS)] == order[len(ARCHS) :]
    assert sorted(order[: len(ARCHS)]) == sorted(ARCHS)
