"""The ``patchtst-ci`` model (torch), after the official PatchTST implementation."""

from __future__ import annotations

import torch
from torch import nn

from archsearch.architecture import Architecture, ModelSpec
from archsearch.plugins.layers import EncoderLayer
from archsearch.plugins.patchtst_ci import num_patches


class RevIN(nn.Module):
    """Reversible instance normalisation over time, per series (Kim et al., ICLR 2022)."""

    def __init__(self, num_features: int, affine: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))

    def normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        x = (x - mean) / std
        if self.affine:
            x = x * self.weight + self.bias
        return x, (mean, std)

    def denormalise(
        self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor], channels: torch.Tensor
    ) -> torch.Tensor:
        mean, std = stats
        if self.affine:
            y = (y - self.bias[channels]) / (self.weight[channels] + self.eps * self.eps)
        return y * std[..., channels] + mean[..., channels]


class PatchTSTChannelIndependent(nn.Module):
    """Input ``[batch, context_length, channels]``; output ``[batch, horizon, n_targets]``
    (forecast of the target channels) or ``[batch, n_outputs]`` (classification logits)."""

    def __init__(self, arch: Architecture, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        d, n, c = arch.d_model, num_patches(spec), spec.num_features
        self.n_patches = n
        self.revin = RevIN(c, spec.revin_affine) if spec.revin else None
        self.pad = nn.ReplicationPad1d((0, spec.stride)) if spec.padding_patch == "end" else None
        self.patch_embedding = nn.Linear(spec.patch_len, d)
        self.position = nn.Parameter(torch.empty(n, d).uniform_(-0.02, 0.02))
        self.drop = nn.Dropout(spec.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(
                d,
                arch.n_heads,
                arch.d_ff,
                spec.dropout,
                norm=spec.norm,
                pre_norm=False,
                res_attention=spec.res_attention,
                # The official layout: no dropout on the attention probabilities unless asked for,
                # the dropout on the output projection, in the feed-forward block and on both
                # residual branches (the layer's own), and after the positional embedding (below).
                attention_dropout=spec.attention_dropout or 0.0,
                proj_dropout=spec.dropout,
            )
            for _ in range(arch.n_layers)
        )
        self.head_drop = nn.Dropout(spec.head_dropout)
        if spec.head == "forecast":
            self.head = nn.Linear(n * d, spec.n_outputs)
        else:
            self.head = nn.Linear(c * d, spec.n_outputs)
        self.register_buffer("targets", torch.tensor(spec.targets, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        stats = None
        if self.revin is not None:
            x, stats = self.revin.normalise(x)
        series = x.transpose(1, 2)  # [b, c, L]
        if self.pad is not None:
            series = self.pad(series)
        patches = series.unfold(-1, self.spec.patch_len, self.spec.stride)  # [b, c, N, patch_len]
        z = self.patch_embedding(patches).reshape(b * c, self.n_patches, -1) + self.position
        z = self.drop(z)
        scores = None
        for layer in self.layers:
            z, scores = layer(z, scores)
        z = z.reshape(b, c, self.n_patches, -1)
        if self.spec.head == "forecast":
            y = self.head(self.head_drop(z.transpose(2, 3).flatten(2)))  # [b, c, horizon]
            y = y.transpose(1, 2)[..., self.targets]  # [b, horizon, n_targets]
            if stats is not None:
                y = self.revin.denormalise(y, stats, self.targets)
            return y
        return self.head(self.head_drop(z[:, :, -1, :].flatten(1)))
