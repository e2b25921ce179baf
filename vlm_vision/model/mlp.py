"""The transformer MLP: Linear -> GELU -> Linear."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# transformers activation name -> the `approximate` argument of F.gelu
_GELU_APPROXIMATE = {"gelu_pytorch_tanh": "tanh", "gelu": "none"}


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu_pytorch_tanh") -> None:
        super().__init__()
        if act not in _GELU_APPROXIMATE:
            raise ValueError(f"Unknown activation {act!r}; supported: {sorted(_GELU_APPROXIMATE)}")
        self.approximate = _GELU_APPROXIMATE[act]
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)  # (B, N, hidden_dim): the largest activation of the block
        if torch.is_grad_enabled():
            h = F.gelu(h, approximate=self.approximate)
        else:  # inference: reuse h's memory; a fresh 4x-wide buffer costs page faults on every call
            h = torch.ops.aten.gelu_(h, approximate=self.approximate)
        return self.fc2(h)
