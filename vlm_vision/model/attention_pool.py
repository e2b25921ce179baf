"""The MAP head: multi-head attention pooling with one learned probe query.

SigLIP pools its patch tokens into one vector by letting a learned probe attend
over them (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", 2023;
the head of big_vision's ViT). The attention weights show where the pooled
embedding looks, which the app draws as a heatmap.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import scaled_dot_product
from .mlp import Mlp


class AttentionPoolHead(nn.Module):
    """`h = attn(probe, x, x); h = h + mlp(norm(h))`, returning h for the single probe."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, act: str, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.probe = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, act)

    def forward(self, x: torch.Tensor, return_weights: bool = False, keys: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, N, D) -> pooled (B, D), and attention weights (B, H, 1, N) if asked; `keys` (B, N) masks padding."""
        B, N, D = x.shape
        H = self.num_heads
        q = self.q(self.probe).view(1, 1, H, D // H).transpose(1, 2).expand(B, -1, -1, -1)  # (B, H, 1, Dh)
        k, v = self.kv(x).view(B, N, 2, H, D // H).permute(2, 0, 3, 1, 4)  # each (B, H, N, Dh)
        h, weights = scaled_dot_product(q, k, v, eager=return_weights, keys=keys)
        h = self.proj(h.transpose(1, 2).reshape(B, 1, D))  # (B, 1, D)
        h = h + self.mlp(self.norm(h))
        return h[:, 0], weights
