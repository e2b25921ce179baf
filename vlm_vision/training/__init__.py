"""Training: the sigmoid and softmax losses (one process or many), image-caption data with augmentation and
batching, the train loop with its command-line config, and zero-shot evaluation. It builds on `model`; nothing
below imports it.

The loop itself is `vlm_vision.training.train` (`TrainConfig`, `train`); its function `train` is not offered here,
where it would hide that module's name.
"""

from ..lazy import lazy_attributes
from .augment import EmojiAugment, StyleAugment, affine_warp
from .batching import epoch_batches
from .cli_config import parse_config
from .data import CaptionRecord, ImageCaptionDataset, MissingImagesError, PreloadedImageCaptionDataset, read_records
from .losses import distributed_sigmoid_loss, sigmoid_loss, softmax_loss

# These import transformers (seconds): loaded on first use. The losses and the data stay light, for the
# processes that torch.multiprocessing starts.
_LAZY = {
    "EMOJI_TEMPLATES": "evaluate",
    "ZeroShotResult": "evaluate",
    "class_embeddings": "evaluate",
    "class_targets": "evaluate",
    "metrics": "evaluate",
    "recall_at": "evaluate",
    "zero_shot": "evaluate",
    "TrainConfig": "train",
    "TrainResult": "train",
    "finish": "train",
    "init_distributed": "train",
    "lr_factor": "train",
    "optimizer_step": "train",
    "process_batches": "train",
    "save_atomically": "train",
}

__all__ = [
    "CaptionRecord",
    "EmojiAugment",
    "ImageCaptionDataset",
    "MissingImagesError",
    "PreloadedImageCaptionDataset",
    "StyleAugment",
    "affine_warp",
    "distributed_sigmoid_loss",
    "epoch_batches",
    "parse_config",
    "read_records",
    "sigmoid_loss",
    "softmax_loss",
    *_LAZY,
]

__getattr__ = lazy_attributes(__name__, _LAZY)
