"""The sampler contract, checked for every registered sampler, and the skopt and cmaes specifics."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from archsearch.errors import PluginError
from archsearch.plugin.manager import Plugins, get_plugin_manager

SAMPLERS_MODULE = "archsearch.plugins.samplers"
CMAES_INSTALLED = importlib.util.find_spec("cmaes") is not None

# Options that make the model-based samplers leave their random start-up phase within a short study.
FAST_OPTIONS: dict[str, dict[str, Any]] = {
    "tpe": {"n_startup_trials": 4},
    "gp": {"n_startup_trials": 3},
    "cmaes": {"n_startup_trials": 2},
    "skopt": {"n_initial_points": 3},
}
# GPSampler (about 1 s an ask on this mixed space) and skopt refit their model on every ask.
N_TRIALS: dict[str, int] = {"gp": 6, "skopt": 8}
DEFAULT_N_TRIALS = 12

SPACE: dict[str, BaseDistribution] = {
    "dropout": FloatDistribution(0.0, 0.5),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "frac": FloatDistribution(0.0, 1.0, step=0.25),
    "n_layers": IntDistribution(1, 6),
    "d_model": IntDistribution(16, 256, log=True),
    "patch": IntDistribution(4, 32, step=4),
    "act": CategoricalDistribution(["relu", "gelu", None]),
    "heads": CategoricalDistribution([1, 2, 4.5, "auto"]),
    "norm": CategoricalDistribution(["layer"]),  # single-valued: Optuna fills it in itself
}


def manager() -> Plugins:
    """A fresh manager with the built-ins; adds the samplers module while it is not built in yet."""
    pm = get_plugin_manager(autoload=False)
    if "tpe" not in pm.names("sampler"):
        pm = get_plugin_manager(config_plugins=[SAMPLERS_MODULE], autoload=False)
    return pm


SAMPLER_NAMES = manager().names("sampler")


@pytest.fixture(autouse=True)
def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def make_sampler(
    name: str, seed: int | None = 0, options: Mapping[str, Any] | None = None
) -> optuna.samplers.BaseSampler:
    if name == "cmaes" and not CMAES_INSTALLED:
        pytest.skip("the cmaes package is not installed (see test_cmaes_needs_its_package)")
    opts = dict(FAST_OPTIONS.get(name, {}) if options is None else options)
    return manager().sampler(name).factory(opts, seed)


def n_trials(name: str) -> int:
    return N_TRIALS.get(name, DEFAULT_N_TRIALS)


def suggest_all(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
        "frac": trial.suggest_float("frac", 0.0, 1.0, step=0.25),
        "n_layers": trial.suggest_int("n_layers", 1, 6),
        "d_model": trial.suggest_int("d_model", 16, 256, log=True),
        "patch": trial.suggest_int("patch", 4, 32, step=4),
        "act": trial.suggest_categorical("act", ["relu", "gelu", None]),
        "heads": trial.suggest_categorical("heads", [1, 2, 4.5, "auto"]),
        "norm": trial.suggest_categorical("norm", ["layer"]),
    }


def loss(p: Mapping[str, Any]) -> float:
    return (
        (p["dropout"] - 0.1) ** 2
        + (math.log10(p["lr"]) + 3) ** 2
        + p["frac"]
        + abs(p["n_layers"] - 3)
        + abs(math.log2(p["d_model"]) - 6)
        + p["patch"] / 32
        + {"relu": 0.0, "gelu": 0.2, None: 0.5}[p["act"]]
        + {1: 0.3, 2: 0.0, 4.5: 0.1, "auto": 0.4}[p["heads"]]
    )


def objective(trial: optuna.Trial) -> float:
    return loss(suggest_all(trial))


def assert_valid(trial: optuna.trial.FrozenTrial) -> None:
    """Every parameter in the trial lies in its distribution and has the distribution's type."""
    assert set(trial.params) == set(SPACE), trial.params
    for name, value in trial.params.items():
        dist = SPACE[name]
        assert trial.distributions[name] == dist
        if isinstance(dist, CategoricalDistribution):
            assert any(value == c and type(value) is type(c) for c in dist.choices), (name, value)
        elif isinstance(dist, IntDistribution):
            assert isinstance(value, int) and not isinstance(value, bool), (name, value)
            assert dist._contains(dist.to_internal_repr(value)), (name, value)
        else:
            assert isinstance(value, float), (name, value)
            assert dist._contains(dist.to_internal_repr(value)), (name, value)


def run(
    sampler: optuna.samplers.BaseSampler,
    n: int,
    func: Callable[[optuna.Trial], float] = objective,
    **study_kwargs: Any,
) -> optuna.Study:
    study = optuna.create_study(sampler=sampler, **study_kwargs)
    study.optimize(func, n_trials=n, catch=(RuntimeError,))
    return study


# -- the contract ----------------------------------------------------------------------------


def test_all_builtin_samplers_are_registered() -> None:
    assert {"tpe", "random", "gp", "cmaes", "qmc", "skopt"} <= set(SAMPLER_NAMES)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_same_seed_same_suggestions(name: str) -> None:
    first = run(make_sampler(name, seed=123), n_trials(name))
    second = run(make_sampler(name, seed=123), n_trials(name))
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    for trial in first.trials:
        assert trial.state == TrialState.COMPLETE
        assert_valid(trial)
    # The sampler did not get stuck on one point.
    assert len({tuple(map(repr, t.params.values())) for t in first.trials}) > 1


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_failed_and_pruned_trials(name: str) -> None:
    def flaky(trial: optuna.Trial) -> float:
        value = objective(trial)
        if trial.number % 4 == 1:
            raise RuntimeError("out of memory")
        if trial.number % 4 == 2:
            trial.report(value, step=0)
            raise optuna.TrialPruned()
        return value

    n = n_trials(name)
    study = run(make_sampler(name, seed=5), n, flaky)
    states = [t.state for t in study.trials]
    assert len(states) == n
    assert states.count(TrialState.FAIL) == len(range(1, n, 4))
    assert states.count(TrialState.PRUNED) == len(range(2, n, 4))
    for trial in study.trials:
        assert_valid(trial)
    assert math.isfinite(study.best_value)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_enqueued_trials(name: str) -> None:
    fixed = {
        "dropout": 0.2,
        "lr": 1e-3,
        "frac": 0.5,
        "n_layers": 2,
        "d_model": 64,
        "patch": 8,
        "act": None,
        "heads": "auto",
    }
    study = optuna.create_study(sampler=make_sampler(name, seed=9))
    study.enqueue_trial(fixed)
    study.optimize(objective, n_trials=3)
    study.enqueue_trial({"n_layers": 5, "act": "gelu"})  # partly fixed
    study.enqueue_trial({**fixed, "lr": 0.5})  # out of range: Optuna warns and keeps it
    with pytest.warns(UserWarning, match="out of range"):
        study.optimize(objective, n_trials=n_trials(name) - 3)

    trials = study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].params == {**fixed, "norm": "layer"}
    assert trials[3].params["n_layers"] == 5 and trials[3].params["act"] == "gelu"
    assert trials[4].params["lr"] == 0.5
    for trial in trials[:4] + trials[5:]:
        assert_valid(trial)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_shared_storage_trials_from_other_workers(name: str, tmp_path: Path) -> None:
    """Workers sharing a storage: trials written by others are picked up by a fresh sampler."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
    )
    study = optuna.create_study(
        study_name="cell", storage=storage, sampler=make_sampler(name, seed=1), direction="maximize"
    )
    for value, params in enumerate(
        [
            {**{n: d.low for n, d in SPACE.items() if not isinstance(d, CategoricalDistribution)}},
            {**{n: d.high for n, d in SPACE.items() if not isinstance(d, CategoricalDistribution)}},
        ]
    ):
        params = {**params, "act": "relu", "heads": 2, "norm": "layer"}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=SPACE, value=float(value)))
    study.optimize(lambda t: -objective(t), n_trials=3)

    other = optuna.load_study(study_name="cell", storage=storage, sampler=make_sampler(name, seed=2))
    other.optimize(lambda t: -objective(t), n_trials=3)
    trials = optuna.load_study(study_name="cell", storage=storage).trials
    assert len(trials) == 8
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        assert_valid(trial)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_unknown_option_is_rejected(name: str) -> None:
    factory = manager().sampler(name).factory
    with pytest.raises(PluginError, match="unknown option 'no_such_option'") as info:
        factory({"no_such_option": 1}, 0)
    assert repr(name) in str(info.value)
    assert "accepted options:" in str(info.value)
    with pytest.raises(PluginError, match="'seed' cannot be set"):
        factory({"seed": 3}, 0)


def test_listing_samplers_imports_no_optimiser() -> None:
    code = (
        "import sys\n"
        "import archsearch.plugin.spec\n"
        "before = set(sys.modules)\n"
        f"import {SAMPLERS_MODULE} as samplers\n"
        "assert 'tpe' in [s.name for s in samplers.archsearch_register_samplers()]\n"
        "new = set(sys.modules) - before\n"
        "print(sorted(m for m in ('optuna', 'skopt', 'cmaes', 'sklearn', 'torch') if m in new))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tpe_options_pass_through() -> None:
    sampler = make_sampler("tpe", options={"n_startup_trials": 3, "multivariate": False})
    assert sampler._n_startup_trials == 3
    assert sampler._multivariate is False
    assert make_sampler("tpe", options={})._multivariate is True


def test_bad_option_value_is_a_plugin_error() -> None:
    with pytest.raises(PluginError, match="sampler 'tpe': invalid options"):
        make_sampler("tpe", options={"group": True, "multivariate": False})


# -- skopt -----------------------------------------------------------------------------------


def test_skopt_rejects_gbrt() -> None:
    with pytest.raises(PluginError) as info:
        make_sampler("skopt", options={"base_estimator": "GBRT"})
    message = str(info.value)
    assert "GBRT" in message and "scikit-optimize 0.10.2" in message and "scikit-learn" in message
    assert "'GP'" in message and "'RF'" in message and "'ET'" in message


@pytest.mark.parametrize(
    "options, match",
    [
        ({"base_estimator": "XGB"}, "unknown base_estimator 'XGB'"),
        ({"acq_func": "EIps"}, "unknown acq_func 'EIps'"),
        ({"acq_optimizer": "adam"}, "unknown acq_optimizer 'adam'"),
        ({"n_initial_points": -1}, "n_initial_points must be"),
        ({"base_estimator": "RF", "acq_optimizer": "lbfgs"}, "acq_optimizer='sampling'"),
    ],
)
def test_skopt_rejects_bad_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(PluginError, match=match):
        make_sampler("skopt", options=options)


@pytest.mark.parametrize("estimator", ["RF", "ET"])
def test_skopt_tree_estimators(estimator: str) -> None:
    options = {"base_estimator": estimator, "n_initial_points": 2}
    first = run(make_sampler("skopt", seed=4, options=options), 6)
    second = run(make_sampler("skopt", seed=4, options=options), 6)
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    for trial in first.trials:
        assert_valid(trial)


def test_skopt_keeps_no_state_between_trials() -> None:
    """A sampler rebuilt elsewhere (another process) proposes what the original would have."""
    study = run(make_sampler("skopt", seed=11), 5)
    trial = study.ask()
    running = study.trials[-1]
    fresh = make_sampler("skopt", seed=11)
    space = fresh.infer_relative_search_space(study, running)
    assert set(space) == set(SPACE) - {"norm"}
    assert fresh.sample_relative(study, running, space) == trial.relative_params
    assert trial.relative_params  # the model-based path was taken


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_skopt_follows_the_direction(direction: str) -> None:
    sampler = make_sampler("skopt", seed=0, options={"n_initial_points": 3})
    study = run(sampler, 9, lambda t: t.suggest_float("x", 0.0, 1.0), direction=direction)
    late = [t.params["x"] for t in study.trials[5:]]
    if direction == "maximize":
        assert min(late) > 0.5, late
    else:
        assert max(late) < 0.5, late


def test_skopt_pruned_trials_counted_only_when_asked() -> None:
    from archsearch.plugins.skopt_sampler import _Codec

    def pruned_at_2(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 2:
            trial.report(0.7, step=0)
            trial.report(0.3, step=1)
            raise optuna.TrialPruned()
        if trial.number == 3:
            raise optuna.TrialPruned()  # no intermediate value: never told
        return x

    study = run(optuna.samplers.RandomSampler(seed=0), 5, pruned_at_2)
    codec = _Codec({"x": FloatDistribution(0.0, 1.0)})
    _, ys = make_sampler("skopt", options={})._history(study, codec)
    assert len(ys) == 3
    _, ys = make_sampler("skopt", options={"consider_pruned_trials": True})._history(study, codec)
    assert len(ys) == 4 and 0.3 in ys
    run(make_sampler("skopt", options={"consider_pruned_trials": True, "n_initial_points": 2}), 3)


def test_skopt_refuses_multi_objective() -> None:
    study = optuna.create_study(sampler=make_sampler("skopt"), directions=["minimize", "minimize"])
    with pytest.raises(PluginError, match="single objective"):
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)


# -- cmaes -----------------------------------------------------------------------------------


@pytest.mark.skipif(CMAES_INSTALLED, reason="the cmaes package is installed")
def test_cmaes_needs_its_package() -> None:
    with pytest.raises(PluginError, match=r"pip install cmaes") as info:
        manager().sampler("cmaes").factory({}, 0)
    assert "sampler 'cmaes'" in str(info.value)


@pytest.mark.skipif(not CMAES_INSTALLED, reason="the cmaes package is not installed")
def test_cmaes_samples_numeric_parameters() -> None:
    def numeric(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1.0, 1.0)
        n = trial.suggest_int("n", 1, 8)
        return x**2 + (n - 3) ** 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = run(make_sampler("cmaes", seed=0, options={}), 10, numeric)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(-1.0 <= t.params["x"] <= 1.0 and 1 <= t.params["n"] <= 8 for t in study.trials)
