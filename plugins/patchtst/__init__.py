"""``patchtst``: the user's variant. Patches cut across all features jointly
(``patch_len * num_features -> d_model``), learned position embedding, a pre-norm encoder with a
final LayerNorm, and a flatten head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from archsearch import hookimpl
from archsearch.architecture import Architecture, ModelSpec
from archsearch.registry import ModelVariant
from archsearch.training.memory import joint_patches_shape

if TYPE_CHECKING:
    import torch


def encoder_layer_params(d_model: int, d_ff: int) -> int:
    """Exact parameters of one encoder layer (fused QKV + output projection, two-layer
    feed-forward, two norms; LayerNorm and BatchNorm both hold 2 * d_model)."""
    attention = 4 * d_model * d_model + 4 * d_model
    feed_forward = 2 * d_model * d_ff + d_ff + d_model
    norms = 2 * 2 * d_model
    return attention + feed_forward + norms


def estimate(arch: Architecture, spec: ModelSpec) -> int:
    d, n = arch.d_model, spec.num_patches
    outputs = spec.n_outputs * (spec.n_targets if spec.head == "forecast" else 1)
    patch_embedding = spec.patch_len * spec.num_features * d + d
    position = n * d
    final_norm = 2 * d
    head = n * d * outputs + outputs
    return patch_embedding + position + arch.n_layers * encoder_layer_params(d, arch.d_ff) + final_norm + head


def build(arch: Architecture, spec: ModelSpec) -> torch.nn.Module:
    from archsearch.plugins.patchtst.model import PatchTST

    return PatchTST(arch, spec)


@hookimpl
def archsearch_register_estimators() -> list[ModelVariant]:
    return [
        ModelVariant(
            "patchtst", estimate, build, "joint-feature patches, pre-norm encoder", joint_patches_shape
        )
    ]
