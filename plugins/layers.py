"""Transformer encoder pieces shared by the PatchTST variants (torch is imported by the caller)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Self-attention with a fused QKV projection; optional residual attention (RealFormer).

    ``dropout`` applies to the attention probabilities, ``proj_dropout`` to the output projection
    (the official PatchTST's ``attn_dropout`` and ``proj_dropout``)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float,
        res_attention: bool = False,
        proj_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.proj_drop = nn.Dropout(proj_dropout)
        self.res_attention = res_attention

    def forward(
        self, x: torch.Tensor, prev: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        if self.res_attention:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if prev is not None:
                scores = scores + prev
            attn = F.dropout(scores.softmax(dim=-1), p=p, training=self.training)
            y = attn @ v
        else:
            scores = None
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj_drop(self.out(y.transpose(1, 2).reshape(b, n, d))), scores


class _BatchNormTokens(nn.BatchNorm1d):
    """BatchNorm over the model dimension of ``[batch, tokens, d_model]`` (PatchTST's choice)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def make_norm(kind: str, d_model: int) -> nn.Module:
    if kind == "batch":
        return _BatchNormTokens(d_model)
    if kind == "layer":
        return nn.LayerNorm(d_model)
    raise ValueError(f"norm must be 'batch' or 'layer', got {kind!r}")


class EncoderLayer(nn.Module):
    """Attention and feed-forward blocks with residuals; pre-norm or post-norm.

    ``dropout`` applies inside the feed-forward block (after the activation) and to each residual
    branch; ``attention_dropout`` (default: ``dropout``, as ``patchtst`` always had it) to the
    attention probabilities and ``proj_dropout`` (default 0) to the attention's output projection.
    ``patchtst-ci`` passes the official layout: ``attention_dropout`` 0 unless set, and
    ``proj_dropout = dropout``."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float,
        norm: str = "layer",
        pre_norm: bool = True,
        res_attention: bool = False,
        attention_dropout: float | None = None,
        proj_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        attention_p = dropout if attention_dropout is None else attention_dropout
        self.attn = MultiHeadAttention(d_model, n_heads, attention_p, res_attention, proj_dropout)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.norm_attn = make_norm(norm, d_model)
        self.norm_ff = make_norm(norm, d_model)
        self.drop = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(
        self, x: torch.Tensor, prev: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pre_norm:
            y, scores = self.attn(self.norm_attn(x), prev)
            x = x + self.drop(y)
            x = x + self.drop(self.ff(self.norm_ff(x)))
        else:
            y, scores = self.attn(x, prev)
            x = self.norm_attn(x + self.drop(y))
            x = self.norm_ff(x + self.drop(self.ff(x)))
        return x, scores
