"""The index's use of a model: encode prepared pixels, and fingerprint the model so that one index never holds
vectors of two models.

The fingerprint is the model's embedding of a fixed synthetic probe image, recorded in the index (`ModelInfo`).
Every process that adds vectors (a build, each actor of a distributed build) compares its own with the recorded one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .db import ModelInfo
from .errors import ModelMismatchError

if TYPE_CHECKING:
    from vlm_vision.model import DualEncoder

# Two loads of one model (fp32 and bf16, CPU and GPU) embed the probe image with cosine > 0.999;
# different models land far below this.
PROBE_MIN_COSINE = 0.99


def probe_image() -> Image.Image:
    """A fixed synthetic 96x96 RGB image: its embedding fingerprints the model that made an index."""
    y, x = np.mgrid[0:96, 0:96]
    rgb = np.stack([x * 2.65, y * 2.65, (x + y) * 1.3], axis=-1) % 256
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def model_info(model: DualEncoder, name: str, folder: Path) -> ModelInfo:
    """The fingerprint of `model`, loaded as `name` from `folder`."""
    probe = model.encode_images(probe_image())[0]
    revision = folder.name if folder.parent.name == "snapshots" else None  # a Hub snapshot's commit hash
    return ModelInfo(name, revision, probe.numel(), tuple(round(v, 6) for v in probe.tolist()))


@torch.inference_mode()
def encode_pixels(model: DualEncoder, pixels: torch.Tensor, grids: torch.Tensor | None = None) -> np.ndarray:
    """Resized uint8 images (B, 3, H, W), or NaFlex uint8 patches with their `grids`, -> embeddings (B, D), as
    `model.encode_images` gives for the same images."""
    pixels = pixels.to(model.device, non_blocking=True)  # pinned on a GPU build
    inputs = model.processor.normalize(pixels) if grids is None else model.processor.from_patches(pixels, grids)
    return model.encode_images(inputs, batch_size=len(pixels)).numpy()


def check_same_model(recorded: ModelInfo, current: ModelInfo) -> None:
    same = recorded.dim == current.dim and float(
        np.dot(recorded.probe, current.probe) / (np.linalg.norm(recorded.probe) * np.linalg.norm(current.probe))
    ) >= PROBE_MIN_COSINE
    if not same and recorded.name == current.name:
        raise ModelMismatchError(
            f"This index was built with an earlier version of model {recorded.name!r}, which now embeds images "
            f"differently (a newer vlm-vision's embedded model, or an updated checkpoint). Build a new index: "
            f"another --db, or delete this index's files and build again (your photos are not touched).")
    if not same:
        raise ModelMismatchError(
            f"This index was built with model {recorded.name!r} (embedding dim {recorded.dim}), but the model "
            f"given is {current.name!r} (dim {current.dim}) and embeds images differently. Use --model "
            f"{recorded.name!r} with this index, or build a separate index (another --db) with the new model.")
