"""Where the pooled embedding looks: the attention-pooling head's weights over patches, as a picture.

SigLIP's embedding is a weighted mix of patch tokens chosen by one learned probe
(attention_pool.py). Its weights, averaged over heads and laid out on the patch
grid, show which parts of the image the embedding is made of.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .model import VisionTransformer, vision_inputs

# Anchor colours of a dark-to-bright ramp (close to matplotlib's "inferno"), so the library needs no matplotlib.
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


@torch.inference_mode()
def pooling_attention(model: VisionTransformer, inputs: torch.Tensor | dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The head's attention over each image's patch grid, averaged over heads: one (h, w) map per image, summing to 1.

    `inputs` is what the model's processor returns: pixel values (B, 3, H, W), whose grid is (H/p, W/p), or for a
    SigLIP 2 NaFlex tower the dict of patches, mask and `spatial_shapes`, each image with a grid of its own."""
    if model.head is None:
        raise ValueError("This vision tower has no attention-pooling head (vision_use_head=False): nothing to show")
    kwargs = vision_inputs(inputs, model.device)
    # forward, not __call__: a compiled tower (vlm_vision.inference) would compile again for the head's weights
    weights = model.forward(**kwargs, output_head_attention=True).head_attention
    return attention_grids(weights, kwargs, model.config.patch_size)


def attention_grids(head_attention: torch.Tensor, inputs: torch.Tensor | dict[str, torch.Tensor],
                    patch_size: int) -> list[torch.Tensor]:
    """The head's weights (B, heads, 1, N), averaged over heads, as one (h, w) map per image of `inputs`."""
    inputs = vision_inputs(inputs)
    weights = head_attention.float().mean(1)[:, 0]  # (B, N)
    if "spatial_shapes" in inputs:
        grids = inputs["spatial_shapes"].tolist()
    else:
        H, W = inputs["pixel_values"].shape[2:]
        grids = [(H // patch_size, W // patch_size)] * len(weights)
    return [w[: h * g].reshape(h, g) for w, (h, g) in zip(weights, grids)]  # padding, if any, comes last


def overlay_heatmap(image: Image.Image, grid: torch.Tensor | np.ndarray, alpha: float = 0.55) -> Image.Image:
    """`image` with `grid` (h, w) stretched over it as a colour map: bright where the weights are high.

    The grid covers the whole image because the processors resize the whole image: to the model's square
    input (SigLIP), or to whole patches at about its own aspect ratio (SigLIP 2 NaFlex).
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
