"""The tower as the vision encoder of a language model: projectors (LLaVA's MLP, PaliGemma's linear, Idefics3's
pixel shuffle), the wrapper that feeds projected patch tokens to any transformers causal LM, and stage-1 training
(`vlm.train`, imported on its own: it builds on `training`)."""

from ..lazy import lazy_attributes
from .projector import FEATURE_TYPES, PROJECTOR_TYPES, Projector, ProjectorConfig, pixel_shuffle, select_features

_LAZY = {"VisionLanguageModel": "model"}  # imports transformers (seconds): on first use only

__all__ = [
    "FEATURE_TYPES",
    "PROJECTOR_TYPES",
    "Projector",
    "ProjectorConfig",
    "VisionLanguageModel",
    "pixel_shuffle",
    "select_features",
]

__getattr__ = lazy_attributes(__name__, _LAZY)
