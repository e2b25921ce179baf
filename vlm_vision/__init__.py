"""vlm-vision: a readable, from-scratch SigLIP vision encoder with exact transformers parity."""

from .config import PRESETS, VisionConfig
from .errors import CheckpointError, ImageLoadError
from .processor import ImageProcessor, load_image
from .vision_transformer import VisionOutput, VisionTransformer

__all__ = [
    "PRESETS",
    "CheckpointError",
    "DualEncoder",
    "ImageLoadError",
    "ImageProcessor",
    "VisionConfig",
    "VisionOutput",
    "VisionTransformer",
    "load_image",
]


def __getattr__(name: str):
    # DualEncoder imports transformers' text tower (seconds to import): load it on first use only.
    if name == "DualEncoder":
        from .dual_encoder import DualEncoder

        return DualEncoder
    raise AttributeError(f"module 'vlm_vision' has no attribute {name!r}")
