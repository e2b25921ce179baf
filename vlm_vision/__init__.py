"""vlm-vision: a readable, from-scratch SigLIP vision encoder with exact transformers parity."""

from .config import PRESETS, VisionConfig
from .errors import CheckpointError, ImageLoadError
from .vision_transformer import VisionOutput, VisionTransformer

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ImageLoadError",
    "VisionConfig",
    "VisionOutput",
    "VisionTransformer",
]
