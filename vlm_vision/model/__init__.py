"""The SigLIP model, leaves first: config, attention, MLP, attention-pooling head, the vision transformer; then the
image processors (fixed-size, and SigLIP 2 NaFlex), the text tokenizer and prompt templates, and the image-text
dual encoder. `device` says where a model runs and in what precision ("auto": bf16 where the hardware computes it)."""

from ..lazy import lazy_attributes
from .config import INIT_LOGIT_BIAS, INIT_LOGIT_SCALE, PRESETS, VisionConfig
from .device import (
    AUTO,
    DTYPE_CHOICES,
    DTYPE_HELP,
    as_device,
    as_dtype,
    auto_dtype,
    compute_dtype,
    native_bf16,
    use_bf16_autocast,
)
from .naflex import NaFlexProcessor, patch_grid_size, processor_from_dict, processor_from_pretrained
from .processor import (
    DEFAULT_MAX_PIXELS,
    DRAFT_SCALE,
    ImageInput,
    ImageProcessor,
    Preprocessing,
    convert_to_rgb,
    load_image,
    open_image,
)
from .prompts import fill_template
from .vision_transformer import ATTN_IMPLEMENTATIONS, VisionOutput, VisionTransformer, vision_inputs

# These import transformers (seconds): loaded on first use.
_LAZY = {
    "DEFAULT_TEMPLATE": "dual_encoder",
    "DualEncoder": "dual_encoder",
    "load_processor": "dual_encoder",
    "token_ids": "dual_encoder",
    "train_tokenizer": "tokenizer",
}

__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "AUTO",
    "DTYPE_CHOICES",
    "DTYPE_HELP",
    "DEFAULT_MAX_PIXELS",
    "DRAFT_SCALE",
    "INIT_LOGIT_BIAS",
    "INIT_LOGIT_SCALE",
    "PRESETS",
    "ImageInput",
    "ImageProcessor",
    "NaFlexProcessor",
    "Preprocessing",
    "VisionConfig",
    "VisionOutput",
    "VisionTransformer",
    "as_device",
    "as_dtype",
    "auto_dtype",
    "compute_dtype",
    "convert_to_rgb",
    "fill_template",
    "load_image",
    "native_bf16",
    "open_image",
    "patch_grid_size",
    "processor_from_dict",
    "processor_from_pretrained",
    "use_bf16_autocast",
    "vision_inputs",
    *_LAZY,
]

__getattr__ = lazy_attributes(__name__, _LAZY)
