"""Config loading: strict types, every problem with its path, round trips, overrides."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from archsearch.cli import main
from archsearch.config import apply_overrides, load_config, structure, to_dict
from archsearch.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))


def problems_of(raw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        structure(raw, "test.yaml")
    return info.value.problems


def test_shipped_configs_load_and_round_trip():
    assert {p.name for p in SHIPPED} >= {
        "quickstart.yaml",
        "phase6a.yaml",
        "architectural_search.yaml",
        "default_search.yaml",
    }
    for path in SHIPPED:
        config = load_config(path)
        assert structure(to_dict(config)) == config
        assert config.source == str(path)


def test_issue_example_message():
    raw = {
        "experiment": "x",
        "budgets": ["2M"],
        "training_search_space": {"learning_rate": {"type": "log_uniform", "low": "1e-3x", "high": 1e-2}},
    }
    assert problems_of(raw) == [
        'training_search_space.learning_rate.low: expected a positive float, got "1e-3x"'
    ]


def test_numeric_strings_from_yaml_are_floats():
    config = structure(yaml.safe_load("experiment: x\nbudgets: [2M]\ntraining: {learning_rate: 1e-3}\n"))
    assert config.training.learning_rate == 0.001


def test_every_problem_reported_together_with_paths_and_suggestions():
    raw = yaml.safe_load(
        """
experiment: ../evil
budgets: [2M, 2Q]
horizons: [1, 0]
n_trails: 5
data: {featurs: [a]}
training_search_space:
  epochs: {type: categorical, choices: []}
  weight_decay: {type: uniform, low: 2, high: 1}
  dropout: {type: normal, low: 0, high: 1}
sampler: {name: tpe, sead: 3}
training: {batch_size: true, dropout: 1.5}
"""
    )
    found = problems_of(raw)
    expected_starts = [
        "budgets[1]: budget '2Q' is not understood",
        "data.featurs: unknown key; did you mean 'features'?",
        "training.batch_size: expected a whole number, got True",
        "training_search_space.epochs.choices: expected a non-empty list, got []",
        "training_search_space.weight_decay.low: low (2) must not exceed high (1)",
        "training_search_space.dropout.type: expected one of log_uniform, uniform, int, categorical",
        "sampler.sead: unknown key; did you mean 'seed'?",
        "n_trails: unknown key; did you mean 'n_trials'?",
        "experiment: '../evil' cannot name files and studies",
        "horizons[1]: expected a positive number of steps, got 0",
    ]
    for start in expected_starts:
        assert any(p.startswith(start) for p in found), (start, found)
    assert not any(p.startswith("budgets: expected at least one") for p in found)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {
                "experiment": "x",
                "budgets": ["2M"],
                "training_search_space": {"lr": {"type": "uniform", "low": 0, "high": 1}},
            },
            "training_search_space.lr: unknown key; did you mean 'learning_rate'?",
        ),
        ({"experiment": "x", "budgets": [-5]}, "budgets[0]: budget -5 must be positive"),
        ({"experiment": "x", "budgets": ["2M", "2_000_000"]}, "budgets: ['2M', '2M'] lists a budget twice"),
        ({"experiment": "x"}, "budgets: expected at least one budget"),
        ({"experiment": "a/b", "budgets": ["2M"]}, "experiment: 'a/b' cannot name files and studies"),
        (
            {"experiment": "x", "budgets": ["2M"], "tolerance": 1.5},
            "tolerance: expected a fraction strictly between 0 and 1",
        ),
        (
            {"experiment": "x", "budgets": ["2M"], "model": {"patch_len": 80}},
            "model.patch_len: 80 must not exceed",
        ),
        (
            {"experiment": "x", "budgets": ["2M"], "direction": "up"},
            "direction: expected one of 'minimize', 'maximize', got 'up'",
        ),
        (
            {"experiment": "x", "budgets": ["2M"], "pruner": {"name": "medain"}},
            "pruner.name: expected one of 'none', 'median', 'successive_halving', 'hyperband', got 'medain'",
        ),
        (
            {"experiment": "x", "budgets": ["2M"], "split": {"fractions": [0.8, 0.2]}},
            "split.fractions: expected a list of 3 values, got [0.8, 0.2]",
        ),
        ({"budgets": ["2M"]}, "experiment: required key is missing"),
        (
            {"experiment": "x", "budgets": ["2M"], "data": {"zscore_window": 1}},
            "data.zscore_window: must be at least 2, got 1",
        ),
        (
            {"experiment": "x", "budgets": ["2M"], "training": {"device": "tpu"}},
            "training.device: expected auto, cpu, cuda, cuda:N or mps, got 'tpu'",
        ),
        (
            {"experiment": "x", "budgets": ["2M"], "training": {"grad_clip": 0}},
            "training.grad_clip: expected a positive number or null, got 0",
        ),
        ({"experiment": 3, "budgets": ["2M"]}, "experiment: expected a string, got 3"),
        (
            {"experiment": "x", "budgets": ["2M"], "n_trials": 2.5},
            "n_trials: expected a whole number, got 2.5",
        ),
        ({"experiment": "x", "budgets": ["2M"], "source": "y"}, "source: unknown key"),
        ([1, 2], "top level: expected a mapping of keys"),
        (
            {"experiment": "x", "budgets": ["2M"], "architecture": {"space": "huge"}},
            "architecture.space: unknown space 'huge'",
        ),
    ],
)
def test_bad_values_name_their_path(raw, message):
    assert any(p.startswith(message) for p in problems_of(raw)), problems_of(raw)


def test_unquoted_yaml_dates_are_dates():
    raw = yaml.safe_load(
        "experiment: d\nbudgets: [2M]\nsplit: {method: dates, val_start: 2016-01-04, test_start: 2018-01-02}"
    )
    split = structure(raw).split
    assert (split.val_start, split.test_start) == ("2016-01-04", "2018-01-02")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_reports_config_errors_as_one_paragraph(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\nbudgets: [2M]\nn_trails: 3\n")
    assert main(["plan", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{bad}: 1 problem in the configuration:" in err and "did you mean 'n_trials'" in err


def test_overrides_replace_and_revalidate():
    config = load_config(REPO / "configs" / "phase6a.yaml")
    out = apply_overrides(config, budgets=["20M"], horizons=[3], n_trials=4, output="elsewhere", device="cpu")
    assert out.budgets == (20_000_000,) and out.horizons == (3,) and out.n_trials == 4
    assert str(out.output_path) == "elsewhere" and out.training.device == "cpu"
    with pytest.raises(ConfigError, match="n_trials: expected a positive"):
        apply_overrides(config, n_trials=0)
    assert apply_overrides(config, sinks=["mlflow", "csv"]).sinks == ("csv", "json", "mlflow")


def test_an_unknown_sink_on_the_command_line_is_named(tmp_path):
    from engine_helpers import run_cli, write_config

    out = run_cli("run", str(write_config(tmp_path)), "--sink", "nosuch")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "nosuch" in out.stderr and "sinks" in out.stderr


# Ranges inside every sampled parameter's domain (all >= 1): out-of-domain ones are refused.
ranges = st.one_of(
    st.tuples(st.floats(1.0, 10.0), st.floats(10.0, 100.0)).map(
        lambda t: {"type": "log_uniform", "low": t[0], "high": t[1]}
    ),
    st.tuples(st.floats(1, 5), st.floats(5, 10)).map(
        lambda t: {"type": "uniform", "low": t[0], "high": t[1]}
    ),
    st.tuples(st.integers(1, 50), st.integers(50, 500)).map(
        lambda t: {"type": "int", "low": t[0], "high": t[1]}
    ),
    st.lists(st.integers(1, 512), min_size=1, max_size=5, unique=True).map(
        lambda c: {"type": "categorical", "choices": c}
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    space=st.dictionaries(st.sampled_from(["learning_rate", "epochs", "batch_size", "weight_decay"]), ranges),
    budgets=st.lists(st.integers(10_000, 10**10), min_size=1, max_size=4, unique=True),
    horizons=st.lists(st.integers(1, 30), min_size=1, max_size=4, unique=True),
    n_trials=st.integers(1, 1000),
)
def test_config_round_trips(space, budgets, horizons, n_trials):
    raw = {
        "experiment": "rt",
        "budgets": budgets,
        "horizons": horizons,
        "n_trials": n_trials,
        "training_search_space": space,
    }
    config = structure(raw)
    again = structure(yaml.safe_load(yaml.safe_dump(to_dict(config))))
    assert again == config
    assert list(config.budgets) == budgets


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"training": {"lr_schedule": {"kind": "exponential", "gamma": 1.5}}},
            "training.lr_schedule.gamma: must be a number in (0, 1], got 1.5",
        ),
        (
            {"training": {"lr_schedule": {"kind": "cosine", "gamma": 0.5}}},
            "training.lr_schedule.gamma: must not be set with kind cosine (it is a key of kind exponential)",
        ),
        (
            {"training": {"lr_schedule": {"kind": "expo"}}},
            "training.lr_schedule.kind: expected one of 'cosine', 'constant', 'exponential', 'onecycle', got 'expo'",
        ),
        (
            {"training": {"lr_schedule": {"kind": "onecycle", "pct_start": 1.2}}},
            "training.lr_schedule.pct_start: must be a number in (0, 1), got 1.2",
        ),
        (
            {"training": {"lr_schedule": {"kind": "exponential", "hold_epochs": -1}}},
            "training.lr_schedule.hold_epochs: must be a whole number >= 0, got -1",
        ),
        (
            {"training": {"lr_schedule": {"kind": "exponential", "gama": 0.9}}},
            "training.lr_schedule.gama: unknown key; did you mean 'gamma'?",
        ),
        (
            {"training": {"lr_schedule": {"kind": "onecycle"}, "warmup_steps": 100}},
            "training.warmup_steps: must be 0 with lr_schedule kind onecycle",
        ),
        (
            {
                "training": {"lr_schedule": {"kind": "onecycle"}},
                "training_search_space": {"warmup_steps": {"type": "int", "low": 0, "high": 10}},
            },
            "training_search_space.warmup_steps: lr_schedule kind onecycle warms up by itself",
        ),
        (
            {"training": {"precision": "fp16"}},
            "training.precision: expected one of 'auto', 'bf16', 'fp32', got 'fp16'",
        ),
        ({"training": {"drop_last": 0}}, "training.drop_last: expected true or false, got 0"),
        (
            {"model": {"attention_dropout": 1.0}},
            "model.attention_dropout: must be a fraction in [0, 1) or null, got 1.0",
        ),
        (
            {"split": {"context_from_previous": "yes"}},
            'split.context_from_previous: expected true or false, got "yes"',
        ),
    ],
)
def test_the_papers_keys_are_checked(extra, message):
    found = problems_of({"experiment": "x", "budgets": ["2M"], **extra})
    assert any(p.startswith(message) for p in found), found


def test_the_papers_keys_read_and_round_trip():
    config = load_config(REPO / "configs" / "paper" / "patchtst_etth1.yaml")
    t = config.training
    assert (t.lr_schedule.kind, t.lr_schedule.gamma, t.lr_schedule.hold_epochs) == ("exponential", 0.9, 4)
    assert (t.drop_last, t.precision, t.learning_rate, t.batch_size, t.epochs, t.seed) == (
        True,
        "fp32",
        1e-4,
        128,
        100,
        2021,
    )
    assert (t.weight_decay, t.grad_clip, t.dropout, t.patience) == (0.0, None, 0.3, None)
    assert config.split.context_from_previous and config.split.train_rows == (0, 8640)
    assert (config.model.attention_dropout, config.model.revin_affine, config.model.head_dropout) == (
        0.0,
        False,
        0.0,
    )
    assert config.horizons == (96, 192, 336, 720) and config.data.source == "data/ETTh1.csv"
    defaults = structure({"experiment": "x", "budgets": ["2M"]})
    assert defaults.training.lr_schedule.kind == "cosine" and defaults.training.drop_last
    assert defaults.training.precision == "auto" and not defaults.split.context_from_previous
    assert defaults.model.attention_dropout is None


def test_new_training_keys_reach_the_trainer():
    """train_settings copies every TrainConfig field the config's training section has, by name."""
    import attrs

    from archsearch.search.objective import train_settings
    from archsearch.training.settings import LRSchedule

    config = structure(
        {
            "experiment": "x",
            "budgets": ["2M"],
            "training": {
                "lr_schedule": {"kind": "onecycle", "pct_start": 0.25},
                "drop_last": False,
                "precision": "bf16",
            },
        }
    )
    settings = train_settings(attrs.asdict(config.training), seed=3)
    assert settings.lr_schedule == LRSchedule("onecycle", pct_start=0.25)
    assert (settings.drop_last, settings.precision, settings.seed) == (False, "bf16", 3)
