"""SigLIP 2 NaFlex preprocessing: each image keeps its aspect ratio and becomes a variable number of patches.

An image is resized so that its sides are whole numbers of patches and their product, its patch grid (h, w),
holds at most `max_num_patches`; then it is rescaled and normalised like any SigLIP input, cut into h * w
flattened patches, and padded with zero patches to `max_num_patches`. A batch carries the patches, a mask
of the real ones and each image's (h, w). Numerically identical to transformers' `Siglip2ImageProcessorPil`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..checkpoints import read_json
from ..errors import CheckpointError
from .processor import CONFIG_NAME, ImageInput, ImageProcessor, Preprocessing, as_image_list

# transformers' bisection for the resize scale: its bounds and the width at which it stops.
_SCALE_RANGE = (1e-6, 100.0)
_SCALE_TOLERANCE = 1e-5


def patch_grid_size(height: int, width: int, patch_size: int, max_num_patches: int) -> tuple[int, int]:
    """The (height, width) in pixels a NaFlex image is resized to, both whole numbers of patches.

    The largest scale whose sides, each rounded up to whole patches (at least one), hold at most
    `max_num_patches` patches: found by bisection to 1e-5, as transformers finds it, so that the sizes agree
    even where rounding makes several scales tie.
    """
    def side(size: int, scale: float) -> int:
        return max(patch_size, math.ceil(size * scale / patch_size) * patch_size)

    low, high = _SCALE_RANGE
    while high - low >= _SCALE_TOLERANCE:
        scale = (low + high) / 2
        if (side(height, scale) // patch_size) * (side(width, scale) // patch_size) <= max_num_patches:
            low = scale
        else:
            high = scale
    return side(height, low), side(width, low)


@dataclass(frozen=True)
class NaFlexProcessor(Preprocessing):
    """SigLIP 2 NaFlex preprocessing settings, read from and written to HF `preprocessor_config.json`.

    Defaults are those of `transformers.Siglip2ImageProcessorPil` (google/siglip2-*-naflex checkpoints).
    """

    resample: int = 2  # PIL resampling filter for the resize: 2 = Image.Resampling.BILINEAR
    patch_size: int = 16  # square patch side in pixels
    max_num_patches: int = 256  # patches per image at most; every image is padded to this many

    image_processor_type = "Siglip2ImageProcessor"

    def __post_init__(self) -> None:
        for name in ("patch_size", "max_num_patches"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        super().__post_init__()

    def resized(self, image: Image.Image) -> np.ndarray:
        """One RGB image resized to its patch grid, as uint8 (3, H, W); H and W are multiples of `patch_size`."""
        self.check_rgb(image)
        if self.do_resize:
            height, width = patch_grid_size(image.height, image.width, self.patch_size, self.max_num_patches)
            image = image.resize((width, height), resample=self.resample)
        elif image.height % self.patch_size or image.width % self.patch_size:
            raise ValueError(f"Without resizing, image sides must be multiples of patch_size {self.patch_size}; "
                             f"got {image.width}x{image.height}")
        return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))

    def patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (3, H, W) -> (H/p * W/p, p * p * 3) patches, row by row, each flattened (y, x, channel)."""
        C, H, W = pixels.shape
        p = self.patch_size
        grid = pixels.reshape(C, H // p, p, W // p, p).permute(1, 3, 2, 4, 0)  # (h, w, p, p, C)
        return grid.reshape((H // p) * (W // p), p * p * C)

    def cut(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        """The first half of `__call__`, for loader workers: one RGB image resized and cut into uint8 patches
        (max_num_patches, p * p * 3), zero-padded, and its patch grid (h, w). `from_patches` finishes the batch."""
        pixels = torch.from_numpy(self.resized(image))
        grid = (pixels.shape[1] // self.patch_size, pixels.shape[2] // self.patch_size)
        if grid[0] * grid[1] > self.max_num_patches:
            raise ValueError(f"A {pixels.shape[2]}x{pixels.shape[1]} image makes {grid[0] * grid[1]} patches, more "
                             f"than max_num_patches {self.max_num_patches}: resize it, or let the processor resize "
                             f"(do_resize=True)")
        patches = torch.zeros(self.max_num_patches, self.patch_size ** 2 * 3, dtype=torch.uint8)
        patches[: grid[0] * grid[1]] = self.patches(pixels)
        return patches, grid

    def from_patches(self, patches: torch.Tensor, grids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The second half of `__call__`, on any device: uint8 patches (B, N, p * p * 3) from `cut` and their grids
        (B, 2) -> the tower's inputs, the same numbers as `__call__` gives."""
        B, N, per_patch = patches.shape
        channels_first = patches.reshape(B, N * per_patch // 3, 3).transpose(1, 2)[..., None]  # (B, 3, values, 1)
        values = self.normalize(channels_first)[..., 0].transpose(1, 2).reshape(B, N, per_patch)
        real = torch.arange(N, device=patches.device) < grids.prod(-1, keepdim=True).to(patches.device)  # (B, N)
        return {"pixel_values": values.masked_fill(~real[..., None], 0),  # transformers pads after normalising
                "pixel_attention_mask": real.to(torch.int32), "spatial_shapes": grids.to(patches.device, torch.int64)}

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> dict[str, torch.Tensor]:
        """Load and cut one image or a list (paths or PIL) into the tower's inputs, transformers' names and dtypes:
        `pixel_values` float32 (B, max_num_patches, p * p * 3), `pixel_attention_mask` int32 (B, max_num_patches),
        1 for real patches, and `spatial_shapes` int64 (B, 2), each image's patch grid (h, w)."""
        cuts = [self.cut(self.load(image)) for image in as_image_list(images)]
        return self.from_patches(torch.stack([patches for patches, _ in cuts]), torch.tensor([g for _, g in cuts]))


def processor_from_dict(config: dict) -> Preprocessing:
    """The processor a `preprocessor_config.json` dict describes: NaFlex (SigLIP 2's), or fixed-size."""
    if "max_num_patches" in config or str(config.get("image_processor_type", "")).startswith("Siglip2"):
        return NaFlexProcessor.from_dict(config)
    return ImageProcessor.from_dict(config)


def processor_from_pretrained(folder: str | os.PathLike) -> Preprocessing:
    """The processor a checkpoint folder's `preprocessor_config.json` describes: NaFlex, or fixed-size."""
    config = read_json(Path(folder), CONFIG_NAME)
    if config is None:
        raise CheckpointError(f"No {CONFIG_NAME} in {folder}")
    return processor_from_dict(config)
