"""Each variant's closed-form estimator equals the built model's parameter count."""

import attrs
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
        dropout=draw(st.sampled_from([0.0, 0.3])),
        attention_dropout=draw(st.sampled_from([None, 0.0, 0.2])),
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


def dropout_layout(model: torch.nn.Module) -> dict[str, float]:
    """Each kind of dropout in the first encoder layer (and after the positional embedding)."""
    layer = model.layers[0]
    return {
        "embedding": model.drop.p,
        "attention_probabilities": layer.attn.dropout,
        "attention_projection": layer.attn.proj_drop.p,
        "feed_forward": layer.ff[2].p,
        "residual": layer.drop.p,
    }


def test_patchtst_ci_places_dropout_as_the_official_code(pm):
    """PatchTST_supervised/layers/PatchTST_backbone.py: dropout after the positional embedding,
    on the attention output projection (proj_dropout), inside the feed-forward block and on each
    residual branch; attn_dropout (0 unless set) on the attention probabilities."""
    arch = Architecture(16, 2, 4, 32)
    spec = ModelSpec(num_features=3, context_length=32, patch_len=8, stride=4, dropout=0.3)
    official = pm.variant("patchtst-ci").build(arch, spec)
    assert dropout_layout(official) == {
        "embedding": 0.3,
        "attention_probabilities": 0.0,
        "attention_projection": 0.3,
        "feed_forward": 0.3,
        "residual": 0.3,
    }
    with_attention = pm.variant("patchtst-ci").build(arch, attrs.evolve(spec, attention_dropout=0.1))
    assert dropout_layout(with_attention)["attention_probabilities"] == 0.1
    # patchtst keeps its layout: the dropout on the attention probabilities, none on the projection.
    joint = pm.variant("patchtst").build(arch, spec)
    assert dropout_layout(joint) == {
        "embedding": 0.3,
        "attention_probabilities": 0.3,
        "attention_projection": 0.0,
        "feed_forward": 0.3,
        "residual": 0.3,
    }
    assert (
        dropout_layout(pm.variant("patchtst").build(arch, attrs.evolve(spec, attention_dropout=0.0)))[
            "attention_probabilities"
        ]
        == 0.0
    )


def test_the_attention_projection_dropout_acts_in_training_only():
    from archsearch.plugins.layers import MultiHeadAttention

    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 4, dropout=0.0, res_attention=True, proj_dropout=0.5)
    x = torch.randn(64, 10, 16)
    out, _ = attention.train()(x)
    assert 0.4 < (out == 0).float().mean().item() < 0.6  # whole output entries dropped
    clean, _ = attention.eval()(x)
    assert (clean == 0).float().mean().item() == 0.0
    torch.testing.assert_close(out[out != 0], 2 * clean[out != 0])


@pytest.mark.parametrize(("horizon", "count"), [(96, 81_728), (192, 146_336), (336, 243_248), (720, 501_680)])
def test_the_papers_etth1_model_counts(pm, horizon, count):
    """PatchTST/42 on ETTh1: 7 channels, look-back 336, patch 16, stride 8, end padding (42
    patches), d_model 16, 3 layers, 4 heads, d_ff 128, RevIN without affine."""
    arch = Architecture(16, 3, 4, 128)
    spec = ModelSpec(
        num_features=7,
        context_length=336,
        patch_len=16,
        stride=8,
        head="forecast",
        n_outputs=horizon,
        n_targets=7,
        revin_affine=False,
    )
    assert (
        pm.variant("patchtst-ci").estimate(arch, spec) == count == built_count(pm, "patchtst-ci", arch, spec)
    )
