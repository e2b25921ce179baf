"""The SigLIP model, leaves first: config, attention, MLP, attention-pooling head, the vision transformer; then the
image processor, the text tokenizer and prompt templates, and the image-text dual encoder. `device` says where a
model runs and in what precision ("auto": bf16 where the hardware computes it)."""

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
from .processor import (
    DEFAULT_MAX_PIXELS,
    DRAFT_SCALE,
    ImageInput,
    ImageProcessor,
    convert_to_rgb,
    load_image,
    open_image,
)
from .prompts import fill_template
from .vision_transformer import ATTN_IMPLEMENTATIONS, VisionOutput, VisionTransformer

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
    "use_bf16_autocast",
    *_LAZY,
]

__getattr__ = lazy_attributes(__name__, _LAZY)
