"""vlm-vision: a readable, from-scratch SigLIP vision encoder with exact transformers parity."""

from .config import PRESETS, VisionConfig
from .errors import CheckpointError, ImageLoadError
from .processor import ImageProcessor, load_image
from .projector import Projector, ProjectorConfig, select_features
from .vision_transformer import VisionOutput, VisionTransformer

__all__ = [
    "PRESETS",
    "CheckpointError",
    "DualEncoder",
    "ImageLoadError",
    "ImageProcessor",
    "Projector",
    "ProjectorConfig",
    "VisionConfig",
    "VisionOutput",
    "VisionLanguageModel",
    "VisionTransformer",
    "load_image",
    "select_features",
]


def __getattr__(name: str):
    # These import transformers (seconds to import): load them on first use only.
    if name == "DualEncoder":
        from .dual_encoder import DualEncoder

        return DualEncoder
    if name == "VisionLanguageModel":
        from .vlm import VisionLanguageModel

        return VisionLanguageModel
    raise AttributeError(f"module 'vlm_vision' has no attribute {name!r}")
