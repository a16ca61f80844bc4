"""The ``patchtst`` model (torch)."""

from __future__ import annotations

import torch
from torch import nn

from archsearch.architecture import Architecture, ModelSpec
from archsearch.plugins.layers import EncoderLayer


class PatchTST(nn.Module):
    """Input ``[batch, context_length, num_features]``; output ``[batch, n_outputs]``
    (classification logits) or ``[batch, horizon, n_targets]`` (forecast)."""

    def __init__(self, arch: Architecture, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        d = arch.d_model
        n = spec.num_patches
        self.outputs = spec.n_outputs * (spec.n_targets if spec.head == "forecast" else 1)
        self.patch_embedding = nn.Linear(spec.patch_len * spec.num_features, d)
        self.position = nn.Parameter(torch.empty(n, d).uniform_(-0.02, 0.02))
        self.drop = nn.Dropout(spec.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(
                d,
                arch.n_heads,
                arch.d_ff,
                spec.dropout,
                norm="layer",
                pre_norm=True,
                attention_dropout=spec.attention_dropout,  # null: the dropout, as before
            )
            for _ in range(arch.n_layers)
        )
        self.final_norm = nn.LayerNorm(d)
        self.head_drop = nn.Dropout(spec.head_dropout)
        self.head = nn.Linear(n * d, self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        spec = self.spec
        # [b, L, F] -> [b, N, patch_len, F] -> [b, N, patch_len * F]
        patches = x.unfold(1, spec.patch_len, spec.stride).transpose(2, 3).reshape(b, spec.num_patches, -1)
        z = self.drop(self.patch_embedding(patches) + self.position)
        for layer in self.layers:
            z, _ = layer(z)
        out = self.head(self.head_drop(self.final_norm(z).flatten(1)))
        if spec.head == "forecast":
            return out.view(b, spec.n_outputs, spec.n_targets)
        return out
