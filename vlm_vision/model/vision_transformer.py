"""The SigLIP vision transformer, written from scratch.

pixels (B, C, H, W) -> patch embedding + position embedding -> pre-LN encoder
blocks -> post-LayerNorm -> attention-pooling head. The output fields mean
exactly what they mean in transformers' `SiglipVisionModel`.

SigLIP 2 NaFlex (`config.naflex`) is the same tower fed differently: each image comes as up to N flattened
patches cut at its own aspect ratio (`NaFlexProcessor`), padded to N, with a mask of the real ones and its
patch grid (h, w). The patch embedding is then a linear layer, the position grid is resized to each image's
(h, w), and padding is masked out of every attention, as in transformers' `Siglip2VisionModel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import (
    default_model,
    hf_to_ours,
    load_weights,
    ours_to_hf,
    read_json,
    resolve_checkpoint,
    weight_files,
    write_json,
    write_safetensors,
)
from ..errors import CheckpointError
from .attention import Attention
from .attention_pool import AttentionPoolHead
from .config import VisionConfig
from .device import as_device, compute_dtype
from .mlp import Mlp

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass
class VisionOutput:
    last_hidden_state: torch.Tensor  # (B, N, D), after the post-LayerNorm
    pooler_output: torch.Tensor | None  # (B, D) from the attention-pooling head; None without a head
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings, then each block's output (pre-LayerNorm)
    attentions: tuple[torch.Tensor, ...] | None = None  # each block's weights (B, H, N, N)
    head_attention: torch.Tensor | None = None  # the probe's weights over patches (B, H, 1, N)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.norm1 = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.attn = Attention(D, config.num_attention_heads, config.attention_dropout)
        self.norm2 = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.mlp = Mlp(D, config.intermediate_size, config.hidden_act)

    def forward(self, x: torch.Tensor, return_weights: bool = False, keys: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, weights = self.attn(self.norm1(x), return_weights, keys)
        x = x + h
        x = x + self.mlp(self.norm2(x))
        return x, weights


class VisionTransformer(nn.Module):
    """SigLIP's vision tower. Build with `from_pretrained(...)` or, for random weights, `VisionTransformer(config)`."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        D, p = config.hidden_size, config.patch_size
        if config.naflex:  # patches arrive cut and flattened: the same product as the convolution's
            self.patch_embed = nn.Linear(config.num_channels * p * p, D)
        else:
            self.patch_embed = nn.Conv2d(config.num_channels, D, kernel_size=p, stride=p)  # non-overlapping patches
        self.pos_embed = nn.Parameter(torch.empty(config.num_patches, D))  # learned, one per patch, no class token
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.head = (
            AttentionPoolHead(D, config.num_attention_heads, config.intermediate_size, config.hidden_act,
                              config.layer_norm_eps)
            if config.vision_use_head else None
        )
        if not self.pos_embed.is_meta:
            self.init_weights()

    @property
    def dtype(self) -> torch.dtype:
        return self.pos_embed.dtype

    @property
    def device(self) -> torch.device:
        return self.pos_embed.device

    def set_attn_implementation(self, name: str) -> None:
        """"sdpa" (fused PyTorch kernel, the default) or "eager" (explicit softmax, can return the weights;
        on CPU it trains short sequences faster, see vlm_vision.training.train.set_attn_implementation)."""
        if name not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"Unknown attention implementation {name!r}; choose from {ATTN_IMPLEMENTATIONS}")
        for module in self.modules():
            if isinstance(module, Attention):
                module.eager = name == "eager"

    def position_embedding(self, grid_h: int, grid_w: int, interpolate: bool) -> torch.Tensor:
        """(grid_h * grid_w, D) position embeddings, resized bicubically from the trained grid if asked."""
        g = self.config.grid_size
        if (grid_h, grid_w) == (g, g):
            return self.pos_embed
        if not interpolate:
            size = self.config.image_size
            raise ValueError(
                f"Input is {grid_h * self.config.patch_size}x{grid_w * self.config.patch_size} px but the model "
                f"was trained at {size}x{size}: resize the images to {size}x{size}, or pass "
                f"interpolate_pos_encoding=True to resize the position embeddings instead."
            )
        pos = self.pos_embed.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
        pos = F.interpolate(pos, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)  # (grid_h * grid_w, D)

    def naflex_position_embedding(self, spatial_shapes: torch.Tensor, length: int) -> torch.Tensor:
        """(B, length, D): the position grid resized to each image's (h, w) patch grid, then padded to `length`.

        As transformers resizes it: `F.interpolate(mode="bilinear", antialias=True, align_corners=False)` in
        float32, written as the weights that resize computes, so that one batched product serves images of any
        grid (and compiles and exports without a loop). Padding takes the first position; its tokens are masked
        out of attention either way."""
        g = self.config.grid_size
        shapes = spatial_shapes.to(self.device, torch.float32)  # (B, 2): each image's h, w
        n = torch.arange(length, device=self.device, dtype=torch.float32)  # output positions, row by row
        real = n < shapes.prod(-1, keepdim=True)  # (B, length)
        rows = torch.where(real, torch.div(n, shapes[:, 1:], rounding_mode="floor"), 0)  # (B, length)
        cols = torch.where(real, n - rows * shapes[:, 1:], 0)
        row_weights = _resize_weights(rows, shapes[:, :1], g)  # (B, length, g)
        col_weights = _resize_weights(cols, shapes[:, 1:], g)
        weights = row_weights[..., :, None] * col_weights[..., None, :]  # (B, length, g, g): over the trained grid
        grid = self.pos_embed.float()  # (g * g, D), row by row
        return (weights.flatten(2) @ grid).to(self.dtype)

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool,
              pixel_attention_mask: torch.Tensor | None, spatial_shapes: torch.Tensor | None) -> torch.Tensor:
        """Patch embeddings plus position embeddings, (B, N, D)."""
        if self.config.naflex:
            self._check_patches(pixel_values, pixel_attention_mask, spatial_shapes)
            x = self.patch_embed(pixel_values.to(self.dtype))  # (B, N, D)
            return x + self.naflex_position_embedding(spatial_shapes, pixel_values.shape[1])
        if spatial_shapes is not None or pixel_attention_mask is not None:
            raise ValueError("pixel_attention_mask and spatial_shapes are inputs of SigLIP 2 NaFlex towers; this one "
                             "takes whole images (B, C, H, W) from vlm_vision.ImageProcessor")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must be (B, {self.config.num_channels}, H, W); got {tuple(pixel_values.shape)}. "
                f"Use vlm_vision.ImageProcessor to turn images into pixel values."
            )
        p = self.config.patch_size
        x = self.patch_embed(pixel_values.to(self.dtype))  # (B, D, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        return x + self.position_embedding(pixel_values.shape[2] // p, pixel_values.shape[3] // p,
                                           interpolate_pos_encoding)

    def _check_patches(self, pixel_values: torch.Tensor, mask: torch.Tensor | None,
                       spatial_shapes: torch.Tensor | None) -> None:
        per_patch = self.config.num_channels * self.config.patch_size ** 2
        if pixel_values.ndim != 3 or pixel_values.shape[2] != per_patch or mask is None or spatial_shapes is None:
            raise ValueError(
                f"A SigLIP 2 NaFlex tower takes pixel_values (B, N, {per_patch}) of flattened patches with "
                f"pixel_attention_mask (B, N) and spatial_shapes (B, 2); got pixel_values "
                f"{tuple(pixel_values.shape)}. Use vlm_vision.NaFlexProcessor to cut images into patches."
            )
        B, N = pixel_values.shape[:2]
        if mask.shape != (B, N) or spatial_shapes.shape != (B, 2):
            raise ValueError(f"pixel_attention_mask must be (B, N) = {(B, N)} and spatial_shapes (B, 2) = {(B, 2)}; "
                             f"got {tuple(mask.shape)} and {tuple(spatial_shapes.shape)}")
        if torch.compiler.is_compiling():
            return  # the checks below read values: a compiled or exported graph takes them on trust
        patches = spatial_shapes.prod(-1)
        if (patches > N).any() or (patches < 1).any() or (mask.sum(-1) != patches.to(mask.device)).any():
            raise ValueError("Each image's spatial_shapes h x w must count its unmasked patches, between 1 and N")

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool = False,
        *,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        output_head_attention: bool = False,
    ) -> VisionOutput:
        """`pixel_attention_mask` and `spatial_shapes` come with NaFlex patches (see the module's docstring).
        `output_head_attention` returns the pooling head's weights alone (a heatmap's), the blocks staying fused."""
        x = self.embed(pixel_values, interpolate_pos_encoding, pixel_attention_mask, spatial_shapes)
        keys = None if pixel_attention_mask is None else pixel_attention_mask.to(x.device, torch.bool)
        # Keep intermediate tensors only when asked: holding them all defeats the allocator's reuse.
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for block in self.blocks:
            x, weights = block(x, return_weights=output_attentions, keys=keys)
            if hidden_states is not None:
                hidden_states.append(x)
            if attentions is not None:
                attentions.append(weights)
        x = self.norm(x)
        head_weights = output_attentions or output_head_attention
        pooled, head_attention = self.head(x, head_weights, keys) if self.head is not None else (None, None)
        return VisionOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
            head_attention=head_attention,
        )

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random init following transformers' `SiglipPreTrainedModel._init_weights` scheme."""
        D = self.config.hidden_size
        nn.init.normal_(self.pos_embed, std=1 / math.sqrt(D))
        _lecun_normal_(self.patch_embed.weight)
        nn.init.zeros_(self.patch_embed.bias)
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, Attention):
                for w in module.qkv.weight.chunk(3):  # as three separate D x D projections
                    nn.init.xavier_uniform_(w)
                nn.init.xavier_uniform_(module.proj.weight)
                nn.init.zeros_(module.qkv.bias)
                nn.init.zeros_(module.proj.bias)
            elif isinstance(module, Mlp):
                for fc in (module.fc1, module.fc2):
                    nn.init.xavier_uniform_(fc.weight)
                    nn.init.normal_(fc.bias, std=1e-6)
        if self.head is not None:
            head = self.head
            nn.init.xavier_uniform_(head.probe)
            bound = math.sqrt(6 / (D + 3 * D))  # xavier over the (3D, D) in_proj of nn.MultiheadAttention
            nn.init.uniform_(head.q.weight, -bound, bound)
            nn.init.uniform_(head.kv.weight, -bound, bound)
            nn.init.zeros_(head.q.bias)
            nn.init.zeros_(head.kv.bias)
            _lecun_normal_(head.proj.weight)
            nn.init.zeros_(head.proj.bias)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        *,
        revision: str | None = None,
        config: VisionConfig | None = None,
        allow_pickle: bool = False,
    ) -> VisionTransformer:
        """Load a SigLIP vision tower in eval mode (float32 unless `dtype` says otherwise).

        `name_or_path` is a Hub id (e.g. "google/siglip-base-patch16-224"), a checkpoint
        folder of a `SiglipVisionModel` or `SiglipModel`, or a `.safetensors` file
        (its config comes from a `config.json` beside it, or from `config`); with none, the embedded
        default model's tower.
        """
        device = as_device(device)
        name_or_path = default_model() if name_or_path is None else name_or_path
        path = resolve_checkpoint(name_or_path, revision=revision, allow_pickle=allow_pickle)
        folder = path if path.is_dir() else path.parent
        files = weight_files(folder, allow_pickle) if path.is_dir() else [path]
        if config is None:
            raw = read_json(folder, "config.json")
            if raw is None:
                raise CheckpointError(
                    f"No config.json in {folder}, so the architecture of {path.name} is unknown: "
                    f"pass config=VisionConfig(...) (see vlm_vision.PRESETS)."
                )
            config = VisionConfig.from_hf_dict(raw)
        model = cls.from_hf_state_dict(load_weights(files, allow_pickle=allow_pickle), config)
        return model.to(device=device, dtype=compute_dtype(dtype, device)).eval()

    @classmethod
    def from_hf_state_dict(cls, state: dict[str, torch.Tensor], config: VisionConfig) -> VisionTransformer:
        """A tower holding transformers-format weights (strictly checked), built without random init."""
        with torch.device("meta"):  # no memory, no random init: every tensor comes from `state`
            model = cls(config)
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        model.load_state_dict(hf_to_ours(state, config, shapes), strict=True, assign=True)
        return model

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights under transformers' keys, `vision_model.`-prefixed as SigLIP checkpoints store them."""
        return {f"vision_model.{k}": v for k, v in ours_to_hf(self.state_dict(), self.config).items()}

    def save_pretrained(self, folder: str | Path) -> None:
        """Write config.json and model.safetensors that transformers' `SiglipVisionModel` loads."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_safetensors(folder / "model.safetensors", self.hf_state_dict())
        write_json(folder / "config.json", self.config.to_hf_dict())


def vision_inputs(batch: torch.Tensor | dict[str, torch.Tensor], device: torch.device | str | None = None
                  ) -> dict[str, torch.Tensor]:
    """A processor's output as the vision tower's keyword arguments, moved to `device` if given: pixel values
    (B, 3, H, W), or a NaFlex processor's dict of patches, mask and spatial shapes."""
    inputs = batch if isinstance(batch, dict) else {"pixel_values": batch}
    return inputs if device is None else {k: v.to(device) for k, v in inputs.items()}


def _resize_weights(index: torch.Tensor, size: torch.Tensor, source: int) -> torch.Tensor:
    """(B, N, source): the weights of antialiased bilinear resizing (align_corners=False) from `source` positions to
    `size` (B, 1) ones, for output position `index` (B, N) along one axis: a triangle as wide as one source step
    when upsampling, as one output step when downsampling, normalised to sum to 1."""
    scale = source / size  # source positions per output position
    center = (index + 0.5) * scale - 0.5  # where the output position falls on the source axis
    positions = torch.arange(source, device=index.device, dtype=torch.float32)
    distance = (positions - center[..., None]).abs() / scale.clamp(min=1)[..., None]
    weights = (1 - distance).clamp(min=0)
    return weights / weights.sum(-1, keepdim=True)


def _lecun_normal_(weight: torch.Tensor) -> None:
    """Truncated normal with variance 1/fan_in (flax's lecun_normal, as transformers uses for SigLIP)."""
    fan_in = weight[0].numel()
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # undo the truncation's variance loss
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
