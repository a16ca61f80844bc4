"""Each variant's closed-form estimator equals the built model's parameter count."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archsearch.architecture import Architecture, ModelSpec
from archsearch.space.grid import DEFAULT_SPACE, estimate_param_count, get_architectures_for_budget

VARIANTS = ["patchtst", "patchtst-ci"]


def built_count(pm, variant, arch, spec, device="cpu"):
    with torch.device(device):
        model = pm.variant(variant).build(arch, spec)
    return sum(p.numel() for p in model.parameters())


@st.composite
def small_configs(draw):
    n_heads = draw(st.sampled_from([1, 2, 4, 8]))
    d_model = n_heads * draw(st.integers(1, 8)) * 2
    arch = Architecture(d_model, draw(st.integers(1, 3)), n_heads, d_model * draw(st.integers(1, 4)))
    context = draw(st.integers(8, 64))
    patch_len = draw(st.integers(1, min(context, 16)))
    head = draw(st.sampled_from(["classification", "forecast"]))
    num_features = draw(st.integers(1, 12))
    spec = ModelSpec(
        num_features=num_features,
        context_length=context,
        patch_len=patch_len,
        stride=draw(st.integers(1, patch_len)),
        head=head,
        n_outputs=draw(st.integers(1, 6)),
        n_targets=draw(st.integers(1, num_features)),
        revin=draw(st.booleans()),
        revin_affine=draw(st.booleans()),
        norm=draw(st.sampled_from(["batch", "layer"])),
        padding_patch=draw(st.sampled_from(["end", "none"])),
    )
    return arch, spec


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=small_configs())
def test_estimator_equals_built_model(pm, variant, config):
    arch, spec = config
    assert pm.variant(variant).estimate(arch, spec) == built_count(pm, variant, arch, spec)


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    d_model=st.sampled_from(DEFAULT_SPACE.d_model),
    n_layers=st.sampled_from(DEFAULT_SPACE.n_layers),
    ratio=st.sampled_from([2, 4]),
)
def test_estimator_exact_on_meta_for_the_default_space(pm, variant, d_model, n_layers, ratio):
    spec = ModelSpec()
    arch = Architecture(d_model, n_layers, DEFAULT_SPACE.head_choices(d_model)[0], ratio * d_model)
    assert pm.variant(variant).estimate(arch, spec) == built_count(pm, variant, arch, spec, "meta")


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_2b_configuration_is_exact_on_meta(pm, variant):
    archs = get_architectures_for_budget("2B", variant=variant)
    largest = archs[-1]
    assert 1.5e9 <= largest.param_count <= 2.5e9
    assert largest.param_count == built_count(pm, variant, largest, ModelSpec(), "meta")


def test_known_count_of_the_spec_table_model():
    # SPEC.md's "d128 L8 ff512, 1.6M" row, written out by hand:
    # patch embedding 10*20*128+128, position 11*128, 8 layers of (4d²+4d + 2d*ff+ff+d + 4d),
    # final norm 2*128, head 11*128*1+1.
    per_layer = 4 * 128 * 128 + 4 * 128 + 2 * 128 * 512 + 512 + 128 + 4 * 128
    expected = 10 * 20 * 128 + 128 + 11 * 128 + 8 * per_layer + 2 * 128 + 11 * 128 + 1
    assert estimate_param_count(128, 8, 4, 512) == expected == 1_614_977


def test_heads_do_not_change_the_count():
    counts = {estimate_param_count(256, 4, h, 1024) for h in (2, 4, 8, 16, 32)}
    assert len(counts) == 1
