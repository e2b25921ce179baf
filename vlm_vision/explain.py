"""Where the pooled embedding looks: the attention-pooling head's weights over patches, as a picture.

SigLIP's embedding is a weighted mix of patch tokens chosen by one learned probe
(attention_pool.py). Its weights, averaged over heads and laid out on the patch
grid, show which parts of the image the embedding is made of.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .model import VisionTransformer

# Anchor colours of a dark-to-bright ramp (close to matplotlib's "inferno"), so the library needs no matplotlib.
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


@torch.inference_mode()
def pooling_attention(model: VisionTransformer, pixel_values: torch.Tensor) -> torch.Tensor:
    """The head's attention over the patch grid, averaged over heads: (B, H/p, W/p), each map summing to 1."""
    if model.head is None:
        raise ValueError("This vision tower has no attention-pooling head (vision_use_head=False): nothing to show")
    B, _, height, width = pixel_values.shape
    p = model.config.patch_size
    # forward, not __call__: a compiled tower (vlm_vision.inference) would compile again for the attention outputs
    weights = model.forward(pixel_values, output_attentions=True).head_attention  # (B, heads, 1, N)
    return weights.float().mean(1)[:, 0].reshape(B, height // p, width // p)


def overlay_heatmap(image: Image.Image, grid: torch.Tensor | np.ndarray, alpha: float = 0.55) -> Image.Image:
    """`image` with `grid` (h, w) stretched over it as a colour map: bright where the weights are high.

    The grid covers the whole image because the processor resizes images to the
    model's square input without keeping the aspect ratio.
    """
    grid = np.asarray(grid, dtype=np.float32)
    if grid.ndim != 2:
        raise ValueError(f"grid must be 2-D (h, w), got shape {grid.shape}")
    span = grid.max() - grid.min()
    levels = (grid - grid.min()) / span if span > 0 else np.zeros_like(grid)
    heat = Image.fromarray((levels * 255).astype(np.uint8), "L").resize(image.size, Image.Resampling.BILINEAR)
    position = np.asarray(heat, dtype=np.float32) / 255 * (len(_RAMP) - 1)  # (H, W) in [0, len - 1]
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    t = (position - low)[..., None]
    colours = _RAMP[low] * (1 - t) + _RAMP[low + 1] * t  # (H, W, 3)
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    return Image.fromarray((base * (1 - alpha) + colours * alpha).clip(0, 255).astype(np.uint8), "RGB")
