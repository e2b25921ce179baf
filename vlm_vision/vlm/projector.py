"""Projectors: vision tokens (B, N, D_vision) -> language-model embeddings (B, N', D_lm).

Three published designs, as configs of one module:
- "linear" (PaliGemma): one Linear on SigLIP's `last_hidden_state`.
- "mlp2x_gelu" (LLaVA-1.5): Linear -> GELU -> Linear, named `linear_1`/`linear_2` as in
  transformers' `LlavaMultiModalProjector`, so its weights load 1:1.
- "pixel_shuffle" (Idefics3 / SmolVLM): merge each r x r block of neighbouring tokens
  into one token of width D * r^2 (r^2 times fewer image tokens), then one Linear, named
  `proj` as in transformers' `Idefics3SimpleMLP` (which has bias=False).
`select_features` picks what the projector reads from the tower's `VisionOutput`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from ..model import VisionOutput

PROJECTOR_TYPES = ("linear", "mlp2x_gelu", "pixel_shuffle")
FEATURE_TYPES = ("patch", "pooled")


@dataclass(frozen=True)
class ProjectorConfig:
    """What the projector reads from the vision tower and how it maps it into the LM's embedding space."""

    kind: str  # one of PROJECTOR_TYPES
    vision_dim: int  # D_vision: the tower's hidden_size
    lm_dim: int  # D_lm: the language model's hidden_size
    scale_by_sqrt_lm_dim: bool = False  # divide the output by sqrt(D_lm), as transformers 4.x PaliGemma did because
    # its Gemma then multiplied all inputs_embeds by sqrt(D_lm). Gemma in transformers 5 scales token embeddings
    # inside its embedding layer (and PaliGemma no longer divides): leave False for such LMs.
    shuffle_factor: int = 2  # r of "pixel_shuffle": r x r tokens become one (Idefics3Config default: 2)
    feature_layer: int = -1  # -1: last_hidden_state (post-LN, PaliGemma); else hidden_states[i] (pre-LN, LLaVA: -2)
    feature: str = "patch"  # "patch": one token per patch; "pooled": the attention-pool head's single vector
    bias: bool = True  # biases in the Linear layers (Idefics3's projection has none)

    def __post_init__(self) -> None:
        if self.kind not in PROJECTOR_TYPES:
            raise ValueError(f"Unknown projector type: {self.kind!r}; choose from {PROJECTOR_TYPES}")
        if self.feature not in FEATURE_TYPES:
            raise ValueError(f"Unknown projector feature: {self.feature!r}; choose from {FEATURE_TYPES}")
        if self.vision_dim <= 0 or self.lm_dim <= 0:
            raise ValueError(f"vision_dim and lm_dim must be positive; got {self.vision_dim} and {self.lm_dim}")
        if self.shuffle_factor < 1:
            raise ValueError(f"shuffle_factor must be >= 1; got {self.shuffle_factor}")
        if self.feature == "pooled" and self.kind == "pixel_shuffle":
            raise ValueError("feature='pooled' is a single vector, which has no token grid to pixel-shuffle")
        if self.feature == "pooled" and self.feature_layer != -1:
            raise ValueError(f"feature='pooled' reads the pooling head, so feature_layer must stay -1; "
                             f"got {self.feature_layer}")

    @property
    def in_features(self) -> int:
        """Width of each token entering the first Linear."""
        return self.vision_dim * self.shuffle_factor**2 if self.kind == "pixel_shuffle" else self.vision_dim

    @property
    def needs_hidden_states(self) -> bool:
        """Whether the tower must return its per-block hidden states for `select_features`."""
        return self.feature == "patch" and self.feature_layer != -1

    def num_image_tokens(self, num_patches: int) -> int:
        """N': how many LM tokens one image becomes, given the tower's N patches."""
        if self.feature == "pooled":
            return 1
        if self.kind == "pixel_shuffle":
            side = shuffle_grid(num_patches, self.shuffle_factor)
            return (side // self.shuffle_factor) ** 2
        return num_patches

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ProjectorConfig:
        unknown = sorted(set(config) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"Unknown ProjectorConfig keys {unknown}")
        return cls(**config)


def shuffle_grid(num_tokens: int, r: int) -> int:
    """The side of the square token grid, checked to split into r x r blocks."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"pixel_shuffle needs a square token grid; {num_tokens} tokens is not a square")
    if side % r:
        raise ValueError(f"pixel_shuffle with factor {r} needs a grid side divisible by {r}; "
                         f"the grid is {side}x{side}")
    return side


def pixel_shuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    """(B, S, D) -> (B, S / r^2, D * r^2): each r x r block of the sqrt(S) x sqrt(S) grid becomes one token.

    Output tokens run row-major over the block grid; within a token, channels run
    (row in block, column in block, D) — the layout of transformers' `Idefics3Connector.pixel_shuffle`.
    """
    B, S, D = x.shape
    side = shuffle_grid(S, r)
    g = side // r
    x = x.reshape(B, g, r, g, r, D)  # (B, block row, row in block, block col, col in block, D)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, g, g, r, r, D)
    return x.reshape(B, g * g, r * r * D)  # (B, S / r^2, D * r^2)


def select_features(vision_output: VisionOutput, config: ProjectorConfig) -> torch.Tensor:
    """The (B, N, D_vision) tokens the projector reads, as `config.feature` and `feature_layer` say.

    feature_layer -1 is `last_hidden_state`, after the post-LayerNorm (PaliGemma). Any other
    index goes into `hidden_states` = (embeddings, block 1, ..., block L), all before the
    post-LayerNorm, exactly as transformers' Llava indexes `vision_feature_layer`: -2 is the
    second-to-last block's output. "pooled" is the head's vector as a single token (B, 1, D).
    """
    if config.feature == "pooled":
        if vision_output.pooler_output is None:
            raise ValueError("feature='pooled' needs a vision tower with the attention-pooling head "
                             "(vision_use_head=True)")
        return vision_output.pooler_output.unsqueeze(1)  # (B, 1, D)
    if config.feature_layer == -1:
        return vision_output.last_hidden_state  # (B, N, D)
    hidden = vision_output.hidden_states
    if hidden is None:
        raise ValueError(f"feature_layer={config.feature_layer} needs hidden states: "
                         f"run the tower with output_hidden_states=True")
    if not -len(hidden) <= config.feature_layer < len(hidden):
        raise ValueError(f"feature_layer={config.feature_layer} is out of range for a tower with "
                         f"{len(hidden) - 1} blocks ({len(hidden)} hidden states)")
    return hidden[config.feature_layer]  # (B, N, D)


class Projector(nn.Module):
    """(B, N, D_vision) -> (B, N', D_lm); N' = N, or N / r^2 for "pixel_shuffle"."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        D_in, D_lm = config.in_features, config.lm_dim
        if config.kind == "linear":
            self.linear = nn.Linear(D_in, D_lm, bias=config.bias)  # PaliGemmaMultiModalProjector.linear
        elif config.kind == "mlp2x_gelu":
            self.linear_1 = nn.Linear(D_in, D_lm, bias=config.bias)  # LlavaMultiModalProjector names
            self.act = nn.GELU()  # exact (erf) GELU: Llava's projector_hidden_act="gelu"
            self.linear_2 = nn.Linear(D_lm, D_lm, bias=config.bias)
        else:
            self.proj = nn.Linear(D_in, D_lm, bias=config.bias)  # Idefics3SimpleMLP.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = self.config.kind
        if kind == "linear":
            x = self.linear(x)  # (B, N, D_lm)
        elif kind == "mlp2x_gelu":
            x = self.linear_2(self.act(self.linear_1(x)))  # (B, N, D_lm)
        else:
            x = pixel_shuffle(x, self.config.shuffle_factor)  # (B, N / r^2, D_vision * r^2)
            x = self.proj(x)  # (B, N / r^2, D_lm)
        if self.config.scale_by_sqrt_lm_dim:
            x = x / math.sqrt(self.config.lm_dim)
        return x
