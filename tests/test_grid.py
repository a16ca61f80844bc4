"""The budget grid: constraints, the band, the extremes, the default space's sizes."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archsearch.architecture import ArchSpace, ModelSpec
from archsearch.cli import main
from archsearch.errors import BudgetError
from archsearch.space.grid import (
    DEFAULT_SPACE,
    DESIGN_2025,
    extremes,
    filter_by_budget,
    generate_architecture_grid,
    get_architectures_for_budget,
    thin,
)

BUDGETS = ["2M", "20M", "200M", "2B"]


@pytest.mark.parametrize("budget", BUDGETS)
def test_default_space_gives_25_to_35_with_the_extremes(budget):
    archs = get_architectures_for_budget(budget)
    assert 25 <= len(archs) <= 35
    d_models = {a.d_model for a in archs}
    layers = {a.n_layers for a in archs}
    for attr, values in (("d_model", d_models), ("n_layers", layers)):
        assert any(getattr(a, attr) == min(values) for a in extremes(archs))
        assert any(getattr(a, attr) == max(values) for a in extremes(archs))


def test_design_preset_counts_match_the_spec():
    # SPEC.md: the plan's preset holds 75 / 50 / 75 / 15 combinations in the band.
    assert [len(get_architectures_for_budget(b, "design-2025")) for b in BUDGETS] == [75, 50, 75, 15]


def _spaces():
    values = st.lists(st.sampled_from([32, 48, 64, 96, 128, 192, 256]), min_size=1, max_size=5, unique=True)
    return st.builds(
        ArchSpace,
        d_model=values.map(tuple),
        n_layers=st.lists(st.integers(1, 12), min_size=1, max_size=5, unique=True).map(tuple),
        n_heads=st.lists(st.sampled_from([1, 2, 3, 4, 8]), min_size=1, max_size=3, unique=True).map(tuple),
        d_ff_ratios=st.lists(st.integers(1, 4), min_size=1, max_size=2, unique=True).map(tuple),
        head_rule=st.sampled_from(["all", "head-dim-64"]),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(space=_spaces(), budget=st.integers(20_000, 3_000_000), tolerance=st.floats(0.05, 0.9))
def test_band_members_satisfy_every_constraint(pm, space, budget, tolerance):
    spec = ModelSpec(num_features=7)
    estimate = pm.variant("patchtst").estimate
    grid = generate_architecture_grid(space, spec, estimate)
    band = filter_by_budget(grid, budget, tolerance)
    assert len(set(band)) == len(band)
    assert [a.param_count for a in band] == sorted(a.param_count for a in band)
    for a in band:
        assert a.d_model % a.n_heads == 0
        assert a.n_heads in space.n_heads and a.n_layers in space.n_layers
        assert a.d_ff in {r * a.d_model for r in space.d_ff_ratios}
        assert abs(a.param_count - budget) <= tolerance * budget
        assert a.param_count == estimate(a, spec)
    outside = [a for a in grid if a not in band]
    assert all(abs(a.param_count - budget) > tolerance * budget for a in outside)


@settings(max_examples=40, deadline=None)
@given(limit=st.integers(4, 40))
def test_thinning_keeps_the_extremes(limit):
    band = get_architectures_for_budget("2M", "design-2025")
    kept = thin(band, limit)
    assert len(kept) == min(limit, len(band))
    assert set(extremes(band)) <= set(kept)
    for attr in ("d_model", "n_layers"):
        assert min(getattr(a, attr) for a in kept) == min(getattr(a, attr) for a in band)
        assert max(getattr(a, attr) for a in kept) == max(getattr(a, attr) for a in band)


def test_head_rule_one_count_per_width():
    assert DEFAULT_SPACE.head_choices(64) == [2]
    assert DEFAULT_SPACE.head_choices(96) == [2]
    assert DEFAULT_SPACE.head_choices(512) == [8]
    assert DEFAULT_SPACE.head_choices(4096) == [32]
    assert DESIGN_2025.head_choices(192) == [2, 4, 8, 16, 32]


def test_budget_nothing_fits_names_nearest_counts():
    with pytest.raises(BudgetError) as info:
        get_architectures_for_budget("5K")
    text = str(info.value)
    assert "5K" in text and "nearest above is d64-L2-h2-ff128 with 81,345" in text
    with pytest.raises(BudgetError) as info:
        get_architectures_for_budget("50T")
    assert "nearest below" in str(info.value)


def test_cli_grid_json(capsys):
    for budget in BUDGETS:
        assert main(["grid", "--budget", budget, "--format", "json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert 25 <= data["count"] == len(data["architectures"]) <= 35
        labels = {label for a in data["architectures"] for label in a["extreme"].split("; ") if label}
        assert labels == {"smallest d_model", "largest d_model", "fewest layers", "most layers"}


def test_cli_grid_table_csv_and_errors(capsys):
    assert main(["grid", "--budget", "2M", "--space", "design-2025", "--num-features", "20"]) == 0
    assert "75 architectures of patchtst within ±25% of 2M" in capsys.readouterr().out
    assert main(["grid", "--budget", "2M", "--format", "csv", "--model", "patchtst-ci"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "d_model,n_layers,n_heads,d_ff,param_count,extreme"
    assert main(["grid", "--budget", "2M", "--model", "nope"]) == 2
    assert "unknown estimator 'nope'; available estimators: patchtst, patchtst-ci" in capsys.readouterr().err
    assert main(["grid", "--budget", "2M", "--space", "huge"]) == 2
    assert "named spaces are default, design-2025" in capsys.readouterr().err
    assert main(["grid", "--budget", "2M", "--patch-len", "100"]) == 2
    assert "patch_len (100) must not exceed context_length (60)" in capsys.readouterr().err
