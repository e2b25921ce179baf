"""vlm-vision: a readable, from-scratch SigLIP vision encoder with exact transformers parity.

The package in layers, lowest first, each importing only those below it:
- `checkpoints`: names resolved to files, transformers' weights converted both ways, the embedded default model;
- `model`: the vision transformer, its processor, tokenizer and the image-text dual encoder;
- `training`: losses, data, the train loop and evaluation;
- `vlm`: projectors and the wrapper that feeds patch tokens to a causal LM, and their training;
- `emoji`: the open-emoji corpus builder that the default model was trained on;
- `explain`: attention heatmaps; `export`: ONNX graphs of the towers;
- `inference`: the vision tower's inference modes (exact, compiled, int8, ONNX Runtime), chosen by `optimize`.
The photo index (`vlm_vision.index`) and the app (`vlm_vision.app`) sit on top.
"""

from .errors import CheckpointError, ImageLoadError
from .inference import optimize
from .lazy import lazy_attributes
from .model import (
    PRESETS,
    ImageProcessor,
    NaFlexProcessor,
    VisionConfig,
    VisionOutput,
    VisionTransformer,
    load_image,
)
from .vlm import Projector, ProjectorConfig, select_features

_LAZY = {"DualEncoder": "model", "VisionLanguageModel": "vlm"}  # they import transformers (seconds): on first use

__all__ = [
    "PRESETS",
    "CheckpointError",
    "DualEncoder",
    "ImageLoadError",
    "ImageProcessor",
    "NaFlexProcessor",
    "Projector",
    "ProjectorConfig",
    "VisionConfig",
    "VisionOutput",
    "VisionLanguageModel",
    "VisionTransformer",
    "load_image",
    "optimize",
    "select_features",
]

__getattr__ = lazy_attributes(__name__, _LAZY)
