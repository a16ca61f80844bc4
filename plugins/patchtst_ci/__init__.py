"""``patchtst-ci``: the paper's canonical PatchTST (Nie et al., ICLR 2023), after the official
implementation: channel independence (every channel through one shared backbone), RevIN, patching
with end padding by ``stride``, BatchNorm (or LayerNorm) post-norm encoder with residual attention,
and a flatten head to the horizon per channel. For classification it uses the official
classification head (the last patch of every channel -> ``n_outputs`` logits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from archsearch import hookimpl
from archsearch.architecture import Architecture, ModelSpec
from archsearch.plugins.patchtst import encoder_layer_params
from archsearch.registry import ActivationShape, ModelVariant

if TYPE_CHECKING:
    import torch


def num_patches(spec: ModelSpec) -> int:
    """``(context_length - patch_len) // stride + 1``, plus one with end padding."""
    return (spec.context_length - spec.patch_len) // spec.stride + 1 + (spec.padding_patch == "end")


def estimate(arch: Architecture, spec: ModelSpec) -> int:
    d, n, c = arch.d_model, num_patches(spec), spec.num_features
    revin = 2 * c if spec.revin and spec.revin_affine else 0
    patch_embedding = spec.patch_len * d + d
    position = n * d
    if spec.head == "forecast":
        head = n * d * spec.n_outputs + spec.n_outputs
    else:
        head = c * d * spec.n_outputs + spec.n_outputs
    return revin + patch_embedding + position + arch.n_layers * encoder_layer_params(d, arch.d_ff) + head


def activation_shape(arch: Architecture, spec: ModelSpec, batch: int, element_bytes: int) -> ActivationShape:
    """Every channel is a sequence of ``num_patches`` tokens; saved outside the layers: the
    input, RevIN's steps and the padded series (fp32), the patches, the positional sum (fp32)
    and the head's input (every patch for a forecast, the last for classification)."""
    c, n, d, e = spec.num_features, num_patches(spec), arch.d_model, element_bytes
    seqs = batch * c
    series = batch * (spec.context_length + spec.stride) * c * 4 * 4
    patches = seqs * n * spec.patch_len * (4 + e)
    head_in = seqs * (n if spec.head == "forecast" else 1) * d * e
    edges = series + patches + seqs * n * 4 * d + head_in
    return ActivationShape(seqs, n, spec.res_attention, edges)


def build(arch: Architecture, spec: ModelSpec) -> torch.nn.Module:
    from archsearch.plugins.patchtst_ci.model import PatchTSTChannelIndependent

    return PatchTSTChannelIndependent(arch, spec)


@hookimpl
def archsearch_register_estimators() -> list[ModelVariant]:
    return [
        ModelVariant(
            "patchtst-ci", estimate, build, "canonical channel-independent PatchTST", activation_shape
        )
    ]
