"""``read_trials`` (archsearch.search.trial_reader) reads an RDB study's trials without the ORM and
gives what ``study.get_trials(deepcopy=False)`` gives, trial by trial: every state, value kind
(finite, +/-inf, NaN intermediate values), distribution and attribute; through archsearch's own
storage wrapper too. Any other storage, or a schema it does not know, reads ``get_trials``; and
``export`` writes the same files either way."""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from archsearch.search import trial_reader
from archsearch.search.trial_reader import read_trials
from archsearch.storage import open_storage, rdb_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)
INF = float("inf")
NAN = float("nan")
CHOICES = ("a", 3, None, True, False)


def _key(value: Any) -> Any:
    """NaN compares unequal to itself; as a marker it compares equal."""
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def assert_same(got: list[optuna.trial.FrozenTrial], want: list[optuna.trial.FrozenTrial]) -> None:
    assert [t.number for t in got] == [t.number for t in want]
    for a, b in zip(got, want, strict=True):
        assert a._trial_id == b._trial_id and a.number == b.number
        assert a.state is b.state
        assert a.values == b.values
        assert a.datetime_start == b.datetime_start and a.datetime_complete == b.datetime_complete
        assert list(a.params.items()) == list(b.params.items())  # values, types and order
        assert [type(v) for v in a.params.values()] == [type(v) for v in b.params.values()]
        assert a.distributions == b.distributions
        assert list(a.user_attrs.items()) == list(b.user_attrs.items())
        assert list(a.system_attrs.items()) == list(b.system_attrs.items())
        assert {k: _key(v) for k, v in a.intermediate_values.items()} == {
            k: _key(v) for k, v in b.intermediate_values.items()
        }
        if not any(math.isnan(v) for v in b.intermediate_values.values()):
            assert a == b


def no_get_trials(monkeypatch: pytest.MonkeyPatch, study: optuna.Study) -> None:
    """Make the ORM path unusable, so a passing comparison shows the Core reader ran."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("read_trials fell back to get_trials")

    monkeypatch.setattr(study, "get_trials", refuse)


def every_kind(study: optuna.Study) -> None:
    """Complete (finite, +inf, -inf), pruned with NaN/inf reports, failed, waiting, running."""

    def suggest(trial: optuna.Trial) -> None:
        trial.suggest_int("layers", 1, 8)
        trial.suggest_int("width", 8, 512, log=True)
        trial.suggest_int("steps", 0, 100, step=5)
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        trial.suggest_float("dropout", 0.0, 0.5, step=0.1)
        trial.suggest_float("plain", -1.0, 1.0)
        trial.suggest_categorical("choice", CHOICES)
        trial.set_user_attr("setup", {"arch": {"d": 16, "tags": ["x", None]}, "ok": True})
        trial.set_user_attr("result", [1.5, {"nested": {"deep": -2}}])
        study._storage.set_trial_system_attr(trial._trial_id, "sys", {"k": [1, 2, {"z": None}]})

    for i, value in enumerate([0.25, INF, -INF, 1e-300, 3.0]):
        trial = study.ask()
        suggest(trial)
        trial.report(value / 2 if math.isfinite(value) else 1.0, 0)
        study.tell(trial, value)
        assert i == trial.number
    pruned = study.ask()
    suggest(pruned)
    for step, v in enumerate([0.5, NAN, INF, -INF, 0.0]):
        pruned.report(v, step)
    study.tell(pruned, state=TrialState.PRUNED)
    failed = study.ask()
    suggest(failed)
    study.tell(failed, state=TrialState.FAIL)
    study.enqueue_trial(
        {"layers": 3, "lr": 1e-3, "choice": None}, user_attrs={"queued": {"by": "coverage", "n": 1}}
    )
    study.enqueue_trial({"choice": True})
    running = study.ask()  # the first queued one: RUNNING with its fixed params
    suggest(running)
    running.report(0.75, 3)
    study.ask()  # running, nothing suggested
    study.enqueue_trial({"layers": 2}, user_attrs={"retry_of": 4, "setup": {"n": [1]}})  # WAITING


def test_every_state_value_and_distribution_reads_as_get_trials(tmp_path, monkeypatch):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", study_name="s")
    every_kind(study)
    other = optuna.create_study(storage=study._storage, study_name="other")  # not read
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    want = study.get_trials(deepcopy=False)
    assert {t.state for t in want} == set(TrialState)
    assert any(math.isnan(v) for t in want for v in t.intermediate_values.values())
    no_get_trials(monkeypatch, study)
    assert_same(read_trials(study), want)


def test_a_study_opened_the_archsearch_way(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    every_kind(optuna.create_study(storage=url, study_name="s"))
    storage = open_storage(url)  # RetryingStorage(_CachedStorage(RDBStorage)), BEGIN IMMEDIATE
    assert isinstance(rdb_storage(storage), optuna.storages.RDBStorage)
    study = optuna.load_study(study_name="s", storage=storage)
    want = study.get_trials(deepcopy=False)
    no_get_trials(monkeypatch, study)
    got = read_trials(study)
    assert_same(got, want)
    assert len(got) == 10
    assert gc.isenabled(), "the collector paused for the read is on again"
    gc.disable()
    try:
        assert_same(read_trials(study), want)
        assert not gc.isenabled(), "and stays off where the caller had it off"
    finally:
        gc.enable()


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_datetimes_are_local_time_as_optuna_gives_them(tmp_path, monkeypatch, zone):
    """SQLite holds naive UTC; Optuna gives naive local time (this machine's zone may be UTC)."""
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'z.db'}")
        every_kind(study)
        want = study.get_trials(deepcopy=False)
        got = read_trials(study)
        assert_same(got, want)
        assert got[0].datetime_start.utcoffset() is None  # naive, as Optuna's
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_multi_objective_study(tmp_path, monkeypatch):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'm.db'}", directions=["minimize", "maximize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), INF), n_trials=4)
    want = study.get_trials(deepcopy=False)
    no_get_trials(monkeypatch, study)
    got = read_trials(study)
    assert_same(got, want)
    assert all(len(t.values) == 2 and t.values[1] == INF for t in got)


def test_other_storages_read_get_trials(tmp_path):
    for storage in (open_storage("memory"), open_storage(str(tmp_path / "j.log")), None):
        study = optuna.create_study(storage=storage)
        every_kind(study)
        assert rdb_storage(study._storage) is None
        assert_same(read_trials(study), study.get_trials(deepcopy=False))
        assert len(read_trials(study)) == 10


def test_a_schema_it_does_not_know_reads_get_trials(tmp_path, monkeypatch):
    """A future Optuna without a model read here is slower, never wrong."""
    from optuna.storages._rdb import models

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'c.db'}")
    every_kind(study)
    want = study.get_trials(deepcopy=False)
    monkeypatch.setattr(models, "TrialParamModel", object())
    assert trial_reader._tables() is None
    calls = []
    real = study.get_trials
    monkeypatch.setattr(study, "get_trials", lambda **kw: calls.append(kw) or real(**kw))
    assert_same(read_trials(study), want)
    assert calls == [{"deepcopy": False}]


# -- random trials ---------------------------------------------------------------------------------
DISTS = {
    "i": IntDistribution(-5, 5),
    "il": IntDistribution(1, 1024, log=True),
    "is": IntDistribution(0, 30, step=3),
    "f": FloatDistribution(-2.0, 2.0),
    "fl": FloatDistribution(1e-6, 1.0, log=True),
    "fs": FloatDistribution(0.0, 1.0, step=0.25),
    "c": CategoricalDistribution(CHOICES),
}
floats = st.one_of(st.floats(allow_nan=False, allow_infinity=True, width=64), st.sampled_from([INF, -INF]))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def trials(draw: st.DrawFn) -> optuna.trial.FrozenTrial:
    state = draw(st.sampled_from(list(TrialState)))
    names = draw(st.lists(st.sampled_from(sorted(DISTS)), unique=True, max_size=len(DISTS)))
    dists = {n: DISTS[n] for n in names}
    params = {}
    for n, d in dists.items():
        if isinstance(d, CategoricalDistribution):
            params[n] = draw(st.sampled_from(d.choices))
        elif isinstance(d, IntDistribution):
            params[n] = draw(st.integers(d.low, d.high).filter(lambda v, d=d: d._contains(v)))
        else:
            grid = [d.low + k * d.step for k in range(int((d.high - d.low) / d.step) + 1)] if d.step else None
            params[n] = draw(st.sampled_from(grid) if grid else st.floats(d.low, d.high))
    reports = st.one_of(floats, st.just(NAN))
    value = draw(floats) if state == TrialState.COMPLETE else None
    return create_trial(
        state=state,
        value=value,
        params=params,
        distributions=dists,
        user_attrs=draw(st.dictionaries(st.text(min_size=1, max_size=6), json_values, max_size=3)),
        system_attrs=draw(st.dictionaries(st.text(min_size=1, max_size=6), json_values, max_size=2)),
        intermediate_values=draw(st.dictionaries(st.integers(0, 50), reports, max_size=4)),
    )


def test_random_trials_read_as_get_trials(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}")
    count = iter(range(10**6))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(trials(), max_size=6))
    def check(made: list[optuna.trial.FrozenTrial]) -> None:
        study = optuna.create_study(storage=storage, study_name=f"s{next(count)}")
        for t in made:
            study.add_trial(t)
        want = study.get_trials(deepcopy=False)
        got = read_trials(study)
        assert_same(got, want)

    check()


# -- export ----------------------------------------------------------------------------------------
def exported(config: Path) -> dict[str, Any]:
    """The CSV's text and each best JSON's document without its ``timestamp`` (when it was written)."""
    import json

    from archsearch.config import load_config
    from archsearch.search.overview import export

    files = {p.name: p.read_text() for p in export(load_config(config))}
    for name, text in files.items():
        if name.endswith(".json"):
            doc = json.loads(text)
            assert doc.pop("timestamp")
            files[name] = doc
    return files


def test_export_writes_the_same_files_as_with_get_trials(tmp_path, monkeypatch):
    from archsearch.bench.readside import build_study
    from archsearch.search import overview

    config = build_study(tmp_path / "study", 60)
    with_reader = exported(config)
    monkeypatch.setattr(overview, "read_trials", lambda study: study.get_trials(deepcopy=False))
    assert exported(config) == with_reader
    assert len(with_reader["experiment_results.csv"].splitlines()) > 60  # a row per trial
    assert len(with_reader) >= 2  # the CSV and a best JSON
