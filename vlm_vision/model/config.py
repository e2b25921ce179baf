"""The vision tower's configuration, read from and written to HF `config.json`, and the dual encoder's initial
logit scale and bias.

Field names are transformers' own (`SiglipVisionConfig`), so a checkpoint's
config reads the same here and there. Variants are data: see `PRESETS`.
A SigLIP 2 NaFlex tower (`Siglip2VisionConfig`) is the same ViT with `naflex=True`: it takes patches
cut from images at their own aspect ratio, and resizes its position grid to each image's patch grid.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import CheckpointError

# The dual encoder's learned logit scale t' (t = exp(t')) and bias b at init, before any training.
INIT_LOGIT_SCALE = math.log(10)  # SigLIP paper, sec. 3.2: t' = log 10
INIT_LOGIT_BIAS = -10.0  # SigLIP paper, sec. 3.2: b = -10 starts near the prior that most pairs are negatives

# The vision towers' model_type in config.json: SigLIP (and fixed-resolution SigLIP 2), and SigLIP 2 NaFlex.
VISION_MODEL_TYPES = ("siglip_vision_model", "siglip2_vision_model")

# The activations SigLIP checkpoints use, by their transformers name.
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu")


@dataclass(frozen=True)
class VisionConfig:
    """Shape of a SigLIP vision transformer. Defaults are SigLIP B/16 at 224 px."""

    hidden_size: int = 768  # width D of every token
    intermediate_size: int = 3072  # hidden width of each MLP
    num_hidden_layers: int = 12  # encoder blocks
    num_attention_heads: int = 12  # heads per attention; D must divide evenly
    num_channels: int = 3  # input image channels
    image_size: int = 224  # square input side the position grid was trained at
    patch_size: int = 16  # square patch side; image_size // patch_size patches per side (So400m: 384 // 14 = 27)
    hidden_act: str = "gelu_pytorch_tanh"  # MLP activation (transformers name)
    layer_norm_eps: float = 1e-6  # epsilon of every LayerNorm
    attention_dropout: float = 0.0  # dropout on attention weights while training
    vision_use_head: bool = True  # attention-pooling head producing `pooler_output`
    naflex: bool = False  # SigLIP 2 NaFlex: flattened patches in, any patch grid; image_size = trained grid x patch

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"Unknown hidden_act {self.hidden_act!r}; supported: {ACTIVATIONS}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> int:
        """Patches per side at the trained resolution."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @classmethod
    def from_hf_dict(cls, config: dict[str, Any]) -> VisionConfig:
        """Build from a `config.json` dict of a vision tower (`siglip_vision_model`, `siglip2_vision_model`) or a
        full model (`siglip`, `siglip2`).

        Any other architecture raises `CheckpointError`, so a CLIP or text-only
        checkpoint never becomes a silently half-random SigLIP.
        """
        model_type = config.get("model_type")
        if model_type in ("siglip", "siglip2"):
            config = config.get("vision_config") or {}
            model_type = config.get("model_type", f"{model_type}_vision_model")
        if model_type not in VISION_MODEL_TYPES:
            hint = {
                "siglip_text_model": "it is a SigLIP *text* tower only, with no vision weights",
                "siglip2_text_model": "it is a SigLIP 2 *text* tower only, with no vision weights",
            }.get(model_type, "vlm_vision loads SigLIP and SigLIP 2 vision towers only")
            raise CheckpointError(
                f"Not a SigLIP vision checkpoint: config.json has model_type {model_type!r}; {hint}."
            )
        known = {f.name for f in fields(cls)} - {"image_size", "naflex"}
        values = {k: v for k, v in config.items() if k in known}
        if model_type == "siglip2_vision_model":
            # NaFlex configs give the trained position grid as a patch count (256 = 16 x 16), not a size.
            grid = math.isqrt(config.get("num_patches", 256))
            if grid * grid != config.get("num_patches", 256):
                raise CheckpointError(f"num_patches {config['num_patches']} is not a square grid of positions")
            patch = config.get("patch_size", 16)
            patch = patch[0] if isinstance(patch, (list, tuple)) else patch
            values |= {"naflex": True, "image_size": grid * patch}
        elif "image_size" in config:
            values["image_size"] = config["image_size"]
        for key in ("image_size", "patch_size"):
            value = values.get(key)
            if isinstance(value, (list, tuple)):
                if len(set(value)) != 1:
                    raise CheckpointError(f"Non-square {key} {value} is not supported; SigLIP uses square sizes")
                values[key] = value[0]
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"Invalid SigLIP vision config: {e}") from e

    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` dict that transformers' `SiglipVisionModel` (or, NaFlex, `Siglip2VisionModel`) reads."""
        values = asdict(self)
        del values["naflex"]
        if not self.naflex:
            return {"architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model", **values}
        del values["image_size"]
        return {"architectures": ["Siglip2VisionModel"], "model_type": "siglip2_vision_model",
                "num_patches": self.num_patches, **values}


# Published SigLIP vision towers (big_vision / transformers configs of the same names).
PRESETS: dict[str, VisionConfig] = {
    "siglip-base-patch16-224": VisionConfig(),
    "siglip-base-patch16-384": VisionConfig(image_size=384),
    "siglip-large-patch16-256": VisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=256
    ),
    "siglip-so400m-patch14-384": VisionConfig(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
        image_size=384, patch_size=14,
    ),
    # SigLIP 2 NaFlex: a 16 x 16 position grid, resized to each image's own grid of up to max_num_patches.
    "siglip2-base-patch16-naflex": VisionConfig(image_size=256, naflex=True),
    "siglip2-so400m-patch16-naflex": VisionConfig(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
        image_size=256, naflex=True,
    ),
}
