"""The read side at scale: ``status`` counts in the storage (not by loading every trial) and
agrees with reading every trial; the ``readside`` bench builds its study in the engine's format."""

from __future__ import annotations

import math
import uuid

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from archsearch.bench.readside import build_study, copy_trials
from archsearch.config import load_config
from archsearch.records import (
    CELL_ATTR,
    CONFIRM,
    SEARCH,
    STAGE,
    STUDY_UID,
    SURPLUS,
    CellSummary,
    is_surplus,
    stage_of,
    trial_record,
)
from archsearch.search.tally import tally

STATES = ["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]
TRIALS = st.lists(
    st.tuples(
        st.sampled_from(STATES),
        st.sampled_from([0.5, 0.25, 1.0, math.inf, -math.inf]),  # ties and infinities
        st.sampled_from([None, True, False]),  # no surplus mark, a surplus claim, a mark set false
        st.sampled_from([None, SEARCH, CONFIRM]),  # a search trial (marked or not), a confirmation one
    ),
    max_size=20,
)


def _summary_fields(s: CellSummary) -> tuple:
    best = None if s.best_trial is None else (s.best_trial.number, s.best_trial.value)
    counts = (s.n_complete, s.n_pruned, s.n_failed, s.n_running, s.n_waiting)
    return (*counts, s.confirm_done, s.confirm_failed, s.confirm_pending, best, s.best, s.study_uid)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    trials=TRIALS,
    direction=st.sampled_from(["minimize", "maximize"]),
    kind=st.sampled_from(["sqlite", "memory"]),
)
def test_tally_agrees_with_reading_every_trial(tmp_path, trials, direction, kind):
    storage = "memory" if kind == "memory" else f"sqlite:///{tmp_path / 'tally.db'}"
    study = optuna.create_study(
        storage=None if kind == "memory" else storage, study_name=uuid.uuid4().hex, direction=direction
    )
    study.set_user_attr(CELL_ATTR, {"experiment": "x", "budget": 1000, "horizon": 1})
    study.set_user_attr(STUDY_UID, "uid-1")
    for state, value, surplus, stage in trials:
        attrs = {} if surplus is None else {SURPLUS: surplus}
        attrs |= {} if stage is None else {STAGE: stage}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState[state], value=value if state == "COMPLETE" else None, user_attrs=attrs
            )
        )
    loaded = study if kind == "memory" else optuna.load_study(study_name=study.study_name, storage=storage)
    expected = CellSummary.from_trials("x", 1000, 1, loaded)
    assert _summary_fields(tally("x", 1000, 1, loaded)) == _summary_fields(expected)


@pytest.fixture(scope="module")
def study_config(tmp_path_factory):
    return build_study(tmp_path_factory.mktemp("readside"), 60)


def test_status_counts_without_loading_every_trial(study_config, monkeypatch):
    from optuna.storages._cached_storage import _CachedStorage

    from archsearch.search.overview import status_rows

    config = load_config(study_config)
    study = optuna.load_study(study_name=config.study_name(config.budgets[0], 1), storage=config.storage_url)
    expected = CellSummary.from_trials(config.experiment, config.budgets[0], 1, study)

    def every_trial(*args, **kwargs):
        raise AssertionError("status read every trial")

    monkeypatch.setattr(optuna.storages.RDBStorage, "get_all_trials", every_trial)
    monkeypatch.setattr(_CachedStorage, "get_all_trials", every_trial)
    (row,) = status_rows(config)
    counts = (row["complete"], row["pruned"], row["failed"], row["running"], row["waiting"])
    assert counts == (60, expected.n_pruned, expected.n_failed, 0, 0)
    assert (row["best_trial"], row["best_value"]) == (expected.best_trial.number, expected.best_trial.value)


def test_the_bench_study_is_in_the_engines_format(study_config):
    config = load_config(study_config)
    name = config.study_name(config.budgets[0], 1)
    every = optuna.load_study(study_name=name, storage=config.storage_url).get_trials()
    assert [t.number for t in every] == list(range(len(every)))
    trials = [t for t in every if stage_of(t) != CONFIRM and not is_surplus(t)]
    assert len(trials) == 60 and {t.state for t in trials} == {TrialState.COMPLETE}
    engine_keys = set(trials[0].user_attrs)
    assert {"setup", "result"} <= engine_keys and all(set(t.user_attrs) == engine_keys for t in trials)
    assert len({t.value for t in trials}) == 60, "each copy has a value of its own"
    for t in trials:
        row = trial_record(t, name)
        assert row["d_model"] and row["learning_rate"] and row["val_loss"] == t.value
    assert copy_trials(config.storage_url, name, 60) == 0, "a study that holds the trials is left alone"
