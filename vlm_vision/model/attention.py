"""Multi-head self-attention, fused (PyTorch SDPA) or eager (returns weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scaled_dot_product(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, eager: bool = False, dropout: float = 0.0,
    keys: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(Dh)) v over (B, H, N, Dh) tensors; weights only on the eager path.

    `keys`, a bool (B, Nk) mask, says which keys take part (False: padding, never attended to).
    The eager path does its softmax in float32, as transformers does, so bf16
    and fp16 weights stay well-behaved and the two paths agree.
    """
    mask = None if keys is None else keys[:, None, None, :]  # (B, 1, 1, Nk): the same for every head and query
    if not eager:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, Nq, Nk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    out = F.dropout(weights, p=dropout) @ v  # (B, H, Nq, Dh)
    return out, weights


class Attention(nn.Module):
    """Self-attention with one fused q/k/v projection (one matmul instead of three)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.eager = False  # True: explicit softmax path; set via VisionTransformer.set_attn_implementation
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_weights: bool = False, keys: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, N, D) -> (B, N, D), and the weights (B, H, N, N) if asked; `keys` (B, N) masks out padding."""
        B, N, D = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).view(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each (B, H, N, Dh)
        dropout = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product(q, k, v, eager=self.eager or return_weights, dropout=dropout, keys=keys)
        out = out.transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        return self.proj(out), weights
