"""A study cannot be silently corrupted: a resume with other data, model or training settings is
refused; no two trials draw a seed-derived repeat; plugins' mistakes are clear errors naming the
plugin; a user's mistakes are one-paragraph errors, never tracebacks."""

from __future__ import annotations

import optuna
import pytest
import yaml
from engine_helpers import read_csv, run_cli, tiny_config, write_config

from archsearch.cli import main
from archsearch.data.sources import synthetic_frame


def storage_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'out' / 'archsearch.db'}"


def n_trials_in(tmp_path, study: str = "tiny_8K_h2") -> int:
    return len(optuna.load_study(study_name=study, storage=storage_url(tmp_path)).trials)


# -- a resume with another meaning is refused ------------------------------------------------------
def test_a_resume_after_the_data_file_changed_is_refused_and_writes_nothing(tmp_path):
    data = tmp_path / "bars.csv"
    frame = synthetic_frame(600, 5, seed=1)
    frame.to_csv(data, index=False)
    path = write_config(tmp_path, n_trials=2, data={"source": str(data)})
    assert run_cli("run", str(path), "--no-progress").returncode == 0
    rows_before = read_csv(tmp_path / "out" / "experiment_results.csv")
    trials_before = n_trials_in(tmp_path)
    frame.iloc[:500].assign(close=frame["close"].to_numpy()[:500][::-1]).to_csv(data, index=False)
    out = run_cli("run", str(path), "--no-progress", "--n-trials", "4")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "was created with another search: data.content: content " in out.stderr
    assert "give this search a new experiment name" in out.stderr
    assert "nothing was written" in out.stderr
    assert n_trials_in(tmp_path) == trials_before
    assert read_csv(tmp_path / "out" / "experiment_results.csv") == rows_before


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"model": {"context_length": 16}}, "model.context_length: 20 -> 16"),
        ({"training": {"dropout": 0.3}}, "training.dropout: 0.0 -> 0.3"),
        ({"task": {"threshold": 0.01}}, "task.threshold: 0.005 -> 0.01"),
        ({"split": {"fractions": [0.6, 0.2, 0.2]}}, "split.fractions: [0.7, 0.15, 0.15] -> [0.6, 0.2, 0.2]"),
    ],
)
def test_a_resume_with_another_model_or_setting_lists_each_change(tmp_path, change, expected):
    path = write_config(tmp_path, n_trials=2)
    assert run_cli("run", str(path), "--no-progress").returncode == 0
    trials_before = n_trials_in(tmp_path)
    path = write_config(tmp_path, n_trials=3, **change)
    out = run_cli("run", str(path), "--no-progress")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert expected in out.stderr, out.stderr
    assert n_trials_in(tmp_path) == trials_before


def test_what_only_changes_how_a_trial_runs_may_change_on_resume(tmp_path):
    path = write_config(tmp_path, n_trials=2)
    assert run_cli("run", str(path), "--no-progress").returncode == 0
    path = write_config(tmp_path, n_trials=3, training={"cpu_threads": 1, "seed": 5})
    out = run_cli("run", str(path), "--no-progress")
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="tiny_8K_h2", storage=storage_url(tmp_path))
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3


# -- distinct draws ----------------------------------------------------------------------------------
def test_extending_a_coverage_study_one_trial_at_a_time_never_repeats_a_draw(tmp_path):
    path = write_config(
        tmp_path,
        training_search_space={
            "learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 1e-2},
            "epochs": {"type": "categorical", "choices": [1]},
        },
    )
    for n in range(1, 11):
        assert main(["run", str(path), "--no-progress", "--n-trials", str(n)]) == 0
    study = optuna.load_study(study_name="tiny_8K_h2", storage=storage_url(tmp_path))
    rates = [t.params["learning_rate"] for t in study.trials if t.state.name == "COMPLETE"]
    assert len(rates) == 10 and len(set(rates)) == 10, rates
    sessions = [k for k in study.user_attrs if k.startswith("archsearch_session:")]
    assert len(sessions) == 10, "each session's nonce is recorded on the study"


# -- plugin contracts ------------------------------------------------------------------------------
PLUGINS = """
import optuna
from archsearch import hookimpl, Architecture
from archsearch.plugins.patchtst import build, estimate
from archsearch.registry import ArchitectureGenerator, ModelVariant, SamplerPlugin, SinkPlugin


def low_estimate(arch, spec):
    return estimate(arch, spec) - 1000


def zero_count(request):
    return [Architecture(16, 2, 2, 32)]


def too_big(request):
    arch = Architecture(512, 8, 8, 2048)
    return [Architecture(512, 8, 8, 2048, request.estimate(arch, request.spec))]


def raising_generator(request):
    raise ValueError("no grid today")


def raising_build(arch, spec):
    raise RuntimeError("cannot build")


def wrong_shape(arch, spec):
    import torch

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = build(arch, spec)

        def forward(self, x):
            return self.inner(x).reshape(-1)[:1]

    return Flat()


class RaisingSampler(optuna.samplers.RandomSampler):
    def sample_independent(self, study, trial, name, distribution):
        raise RuntimeError("sampler exploded")


def raising_factory(options, seed):
    raise KeyError("no such option")


def raising_sink(output_dir, config):
    raise OSError("no disk")


@hookimpl
def archsearch_register_estimators():
    return [
        ModelVariant("low-estimate", low_estimate, build),
        ModelVariant("raising-build", estimate, raising_build),
        ModelVariant("wrong-shape", estimate, wrong_shape),
    ]


@hookimpl
def archsearch_register_generators():
    return [
        ArchitectureGenerator("zero-count", zero_count),
        ArchitectureGenerator("too-big", too_big),
        ArchitectureGenerator("raising", raising_generator),
    ]


@hookimpl
def archsearch_register_samplers():
    return [
        SamplerPlugin("raising", lambda options, seed: RaisingSampler(seed=seed)),
        SamplerPlugin("bad-factory", raising_factory),
    ]


@hookimpl
def archsearch_register_sinks():
    return [SinkPlugin("raising", raising_sink)]
"""
LABEL = "plugin 'contract_plugins' (listed under 'plugins' in the config)"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"model": {"variant": "low-estimate"}},
            "parameters, but its estimator counts",
        ),
        (
            {"architecture": {"generator": "zero-count"}},
            "with param_count 0, but the variant's estimator counts",
        ),
        ({"architecture": {"generator": "too-big"}}, "outside the band"),
        (
            {"architecture": {"generator": "raising"}},
            "failed while generating architectures for budget 8,000",
        ),
        ({"model": {"variant": "raising-build"}}, "failed while building d"),
        ({"model": {"variant": "wrong-shape"}}, "the task needs (2, 1)"),
        (
            {"sampler": {"name": "raising"}},
            "failed while sampling arch_width: RuntimeError: sampler exploded",
        ),
        ({"sampler": {"name": "bad-factory"}}, "failed while building sampler 'bad-factory': KeyError"),
        ({"sinks": ["csv", "raising"]}, "failed while opening sink 'raising': OSError: no disk"),
    ],
)
def test_a_plugins_mistake_is_an_error_naming_the_plugin(tmp_path, overrides, message):
    (tmp_path / "contract_plugins.py").write_text(PLUGINS)
    path = write_config(
        tmp_path, n_trials=2, plugins=["contract_plugins"], allocation={"strategy": "none"}, **overrides
    )
    out = run_cli("run", str(path), "--no-progress", env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert LABEL in out.stderr and message in out.stderr, out.stderr


# -- a user's mistakes -----------------------------------------------------------------------------
def plan_error(tmp_path, capsys, *extra: str, **overrides) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, **overrides), sort_keys=False))
    capsys.readouterr()
    assert main(["plan", str(path), *extra]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"budgets": [1.0e99]}, "budgets[0]: budget 1e+99 is larger than any model archsearch can count"),
        ({"horizons": 3}, "horizons: expected a list, got 3 (write it as [3])"),
        ({"budgets": "25K"}, 'budgets: expected a list, got "25K" (write it as [25K])'),
        ({"data": "file.csv"}, 'data: expected a mapping of keys, got "file.csv"'),
        (
            {"architecture": {"d_model": [16, 0, -8]}},
            "architecture.d_model: expected a list of positive whole",
        ),
        (
            {"training_search_space": {"dropout": {"type": "uniform", "low": 0.5, "high": 1.5}}},
            "training_search_space.dropout.high: 1.5 is outside dropout's domain (a fraction in [0, 1))",
        ),
        (
            {"training_search_space": {"batch_size": {"type": "int", "low": 0, "high": 0}}},
            "training_search_space.batch_size.low: 0 is outside batch_size's domain (at least 1)",
        ),
        (
            {"training_search_space": {"epochs": {"type": "int", "low": 1, "high": 3, "step": 0}}},
            "training_search_space.epochs.step: expected a positive whole number, got 0",
        ),
    ],
)
def test_bad_values_are_refused_at_load_time_with_their_key(tmp_path, capsys, overrides, expected):
    err = plan_error(tmp_path, capsys, **overrides)
    assert expected in err and "Traceback" not in err


def test_a_device_error_is_reported_with_the_others(tmp_path, capsys):
    err = plan_error(tmp_path, capsys, training={"device": "gpu", "epochs": "x"})
    assert "2 problems" in err
    assert 'training.epochs: expected a whole number, got "x"' in err
    assert "training.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'" in err


def test_a_thirty_digit_budget_is_refused(tmp_path, capsys):
    err = plan_error(tmp_path, capsys, "--budget", "123456789012345678901234567890")
    assert "is larger than any model archsearch can count" in err


def test_an_output_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    path = write_config(tmp_path, n_trials=1)
    for output, says in (("afile", "afile is a file, not a directory"), ("afile/sub", "which is a file")):
        capsys.readouterr()
        assert main(["run", str(path), "--no-progress", "--output", str(tmp_path / output)]) == 2
        assert says in capsys.readouterr().err


@pytest.mark.parametrize("command", ["status", "export", "report"])
def test_reading_an_output_with_no_experiment_says_so_and_creates_nothing(tmp_path, capsys, command):
    path = write_config(tmp_path, output_dir=str(tmp_path / "nothing"))
    assert main([command, str(path)]) == 2
    assert "nothing to" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


# -- the contract checks a plugin's own tests can run -------------------------------------------------
def test_the_shipped_contract_checks_pass_the_builtins_and_catch_a_broken_variant(tmp_path, monkeypatch):
    from archsearch.errors import PluginError
    from archsearch.testing import check_generator, check_model_variant, check_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for variant in ("patchtst", "patchtst-ci"):
        check_model_variant(variant)
    check_generator("budget-grid")
    check_sampler("tpe")
    (tmp_path / "contract_plugins.py").write_text(PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="but its estimator counts"):
        check_model_variant("low-estimate", plugin_modules=["contract_plugins"])
    with pytest.raises(PluginError, match="the task needs"):
        check_model_variant("wrong-shape", plugin_modules=["contract_plugins"])
    with pytest.raises(PluginError, match="with param_count 0"):
        check_generator("zero-count", plugin_modules=["contract_plugins"])
    with pytest.raises(PluginError, match="sampler exploded"):
        check_sampler("raising", plugin_modules=["contract_plugins"])


def test_the_progress_bar_listener_closes_at_the_end_of_a_run_without_an_error(caplog):
    """A run stopped mid-cell closes its bar through ``close()`` (no summary): nothing raises."""
    from archsearch.records import CellSummary
    from archsearch.search.listeners import Listeners, ProgressBars

    closed = []

    class Bar:
        def close(self):
            closed.append(True)

    class Progress:
        def cell(self, cell, summary, total):
            return Bar()

    listeners = Listeners({"progress bar": ProgressBars(Progress())})
    listeners.cell_started(object(), CellSummary("e", 1, 1, "e_1_h1"), 3)
    listeners.close()
    assert closed == [True] and "failed" not in caplog.text
    assert "progress bar" in listeners.named, "not switched off"


def test_a_key_a_later_archsearch_adds_is_not_a_change_but_a_changed_value_is():
    from archsearch.search.identity import differences

    base = {
        "encoding": {"name": "structured", "architectures": []},
        "training_search_space": {},
        "model": "p",
    }
    stored = {**base, "identity": {"training.dropout": 0.1}}
    assert (
        differences(stored, {**base, "identity": {"training.dropout": 0.1, "training.drop_last": True}}) == []
    )
    assert differences(stored, {**base, "identity": {"training.dropout": 0.3}}) == [
        "training.dropout: 0.1 -> 0.3"
    ]
