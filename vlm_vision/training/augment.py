"""Augmentations for artwork whose colours carry meaning ("red heart" vs "blue heart").

`EmojiAugment` is geometric only (crop, small rotation, optional flip): it never shifts
hue or saturation. `StyleAugment` adds filters that wash out an artist's line work and
shading (blur, downscaling, thinning dark outlines, a median) while the inside of an area
of flat colour stays as it was, meant to help a model learn the object rather than the
emoji set. Both draw from a generator they are given, so a dataset can make every draw a
function of (seed, epoch, index) (`data`), and both have a batched torch path
(`EmojiAugment.theta` with `affine_warp`, `StyleAugment.apply`) for images preloaded on a device.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# An augmentation takes an RGB image and the random generator to draw from, and returns an RGB image.
# The generator is passed in (not owned) so the dataset can make every draw reproducible.
Augment = Callable[[Image.Image, random.Random], Image.Image]


@dataclass
class EmojiAugment:
    """Random resized crop, small rotation and (optionally) a flip, in one resampling; colours untouched.

    Suited to emoji and icons: there is no colour jitter or hue shift, since colour carries
    meaning ("red heart" vs "blue heart"), and flips are off by default because arrows and
    text-like emoji change meaning when mirrored. Areas the rotation uncovers are filled with
    white, the colour `load_image` composites transparency onto, so training matches evaluation.
    Call with `(image, rng)` for reproducible draws (as ImageCaptionDataset does), or with an
    image alone to draw from the generator seeded by `seed`.
    """

    scale: tuple[float, float] = (0.7, 1.0)  # fraction of the image area the crop keeps
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio (width / height), drawn log-uniformly
    degrees: float = 15.0  # rotation drawn uniformly from [-degrees, degrees]
    flip: bool = False  # mirror left-right with probability 1/2
    size: tuple[int, int] | None = None  # (height, width) of the output; None keeps the input size
    fill: tuple[int, int, int] = (255, 255, 255)  # colour of uncovered areas: white, like load_image's background
    seed: int | None = None  # seeds the generator used when no rng is passed
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {self.scale!r}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {self.ratio!r}")
        if not 0 <= self.degrees <= 180:
            raise ValueError(f"degrees must be in [0, 180], got {self.degrees!r}")
        if self.size is not None and not (len(self.size) == 2 and all(s > 0 for s in self.size)):
            raise ValueError(f"size must be None or (height, width) of positive ints, got {self.size!r}")
        self._rng = random.Random(self.seed)

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> Image.Image:
        if image.mode != "RGB":
            raise ValueError(f"EmojiAugment expects an RGB image, got mode {image.mode!r}: load it with load_image")
        width, height = image.size
        out_height, out_width = self.size if self.size is not None else (height, width)
        coefficients = self.inverse_map(width, height, out_width, out_height, rng if rng is not None else self._rng)
        return image.transform(
            (out_width, out_height), Image.Transform.AFFINE, coefficients,
            resample=Image.Resampling.BICUBIC, fillcolor=self.fill,
        )

    def theta(self, height: int, width: int, rng: random.Random) -> torch.Tensor:
        """The draw `__call__` would make for an image of this size, kept at this size, as torch's affine matrix.

        A (2, 3) float32 matrix for `affine_warp` (`F.affine_grid` with align_corners=False): the
        same map in coordinates normalised to [-1, 1] on both sides, u = 2x / width - 1.
        """
        a, b, c, d, e, f = self.inverse_map(width, height, width, height, rng)
        return torch.tensor([
            [a, b * height / width, a + b * height / width + 2 * c / width - 1],
            [d * width / height, e, d * width / height + e + 2 * f / height - 1],
        ], dtype=torch.float32)

    def inverse_map(self, width: int, height: int, out_width: int, out_height: int,
                    rng: random.Random) -> tuple[float, float, float, float, float, float]:
        """One random draw as PIL's affine coefficients: output (x, y) samples input (ax + by + c, dx + ey + f)."""
        crop_w, crop_h = self._crop_size(width, height, rng)
        center_x = rng.uniform(crop_w / 2, width - crop_w / 2)
        center_y = rng.uniform(crop_h / 2, height - crop_h / 2)
        angle = math.radians(rng.uniform(-self.degrees, self.degrees))
        mirror = -1.0 if self.flip and rng.random() < 0.5 else 1.0

        # Inverse map, output pixel -> input pixel, in continuous coordinates (PIL's convention):
        # centre the output, scale it to the crop size, mirror, rotate, move to the crop centre.
        sx, sy = mirror * crop_w / out_width, crop_h / out_height
        cos, sin = math.cos(angle), math.sin(angle)
        a, b, d, e = cos * sx, -sin * sy, sin * sx, cos * sy
        c = center_x - (a * out_width / 2 + b * out_height / 2)
        f = center_y - (d * out_width / 2 + e * out_height / 2)
        return a, b, c, d, e, f

    def _crop_size(self, width: int, height: int, rng: random.Random) -> tuple[float, float]:
        """A (width, height) crop of random area and aspect ratio that fits the image (torchvision's method)."""
        area = width * height
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(log_low, log_high))
            crop_w, crop_h = math.sqrt(target * aspect), math.sqrt(target / aspect)
            if crop_w <= width and crop_h <= height:
                return crop_w, crop_h
        # Rare (extreme aspect ratios): fall back to the largest crop of the smallest allowed area.
        side = math.sqrt(self.scale[0])
        return width * side, height * side


@dataclass
class StyleAugment:
    """At most one filter per image, meant to wash out how an artist drew it while keeping its flat colours.

    Emoji sets differ in line work and shading more than in colour: black outlines or none,
    gradients or flat fills, fine detail or bold shapes. With probability `p` an image gets one
    of four filters, chosen uniformly: "blur" (a Gaussian of sigma `blur_sigma`) and
    "downscale" (to a fraction `downscale` of its side and back, bilinear, which drops fine
    detail), both of a random strength in [0, 1]; "thin_lines" (a 3x3 maximum, which erases
    dark lines up to 2 px wide: outlines, but also small eyes and mouths) and "median" (3x3,
    which removes specks, texture and 1-px lines but keeps edges). All four leave the inside
    of an area of flat colour as it was, so "red heart" stays red; where two colours meet, the
    per-channel maximum and median can make a third along the edge. Draws are
    `(filter, strength)` pairs (`draw`), so a dataset can make them per item and `apply`
    them a batch at a time; filter 0 is none.
    """

    FILTERS = ("none", "blur", "downscale", "thin_lines", "median")
    NONE = (0, 0.0)  # the draw of an image left as it is

    p: float = 0.5  # probability that an image is filtered
    blur_sigma: tuple[float, float] = (0.5, 1.2)  # Gaussian sigma in px (model size if preloaded), weakest to strongest
    downscale: tuple[float, float] = (0.7, 0.35)  # side kept when downscaling, weakest to strongest

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise ValueError(f"p must be in [0, 1], got {self.p!r}")
        if not 0 < min(self.blur_sigma):
            raise ValueError(f"blur_sigma must be positive, got {self.blur_sigma!r}")
        if not all(0 < s <= 1 for s in self.downscale):
            raise ValueError(f"downscale must be fractions in (0, 1], got {self.downscale!r}")

    def draw(self, rng: random.Random) -> tuple[int, float]:
        """(filter index into FILTERS, strength in [0, 1]) for one image."""
        if rng.random() >= self.p:
            return self.NONE
        return rng.randrange(1, len(self.FILTERS)), rng.random()

    def __call__(self, image: Image.Image, rng: random.Random) -> Image.Image:
        """One RGB PIL image filtered by one draw: `apply` on a batch of one."""
        if image.mode != "RGB":
            raise ValueError(f"StyleAugment expects an RGB image, got mode {image.mode!r}: load it with load_image")
        pixels = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())[None]
        filtered = self.apply(pixels, [self.draw(rng)])
        return Image.fromarray(filtered[0].permute(1, 2, 0).numpy())

    def apply(self, images: torch.Tensor, draws: Sequence[Sequence[float]]) -> torch.Tensor:
        """uint8 images (B, 3, H, W) filtered by one `(filter, strength)` draw each, as uint8."""
        out = images.clone()
        for i, (kind, strength) in enumerate(draws):
            name = self.FILTERS[int(kind)]
            if name != "none":
                filtered = getattr(self, "_" + name)(images[i:i + 1].float(), strength)  # self._blur, ...
                out[i] = filtered.round().clamp(0, 255)[0]
        return out

    def _blur(self, image: torch.Tensor, strength: float) -> torch.Tensor:
        sigma = self.blur_sigma[0] + strength * (self.blur_sigma[1] - self.blur_sigma[0])
        radius = math.ceil(3 * sigma)
        weights = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2 / 2)
        kernel = (weights / weights.sum()).to(image.device)
        # Separable: rows, then columns, each channel on its own; edges repeat so borders keep their colour.
        image = F.pad(image, (radius, radius, radius, radius), mode="replicate")
        image = F.conv2d(image, kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
        return F.conv2d(image, kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)

    def _downscale(self, image: torch.Tensor, strength: float) -> torch.Tensor:
        fraction = self.downscale[0] + strength * (self.downscale[1] - self.downscale[0])
        height, width = image.shape[-2:]
        small = (max(1, round(height * fraction)), max(1, round(width * fraction)))
        image = F.interpolate(image, size=small, mode="bilinear", antialias=True, align_corners=False)
        return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)

    def _thin_lines(self, image: torch.Tensor, strength: float) -> torch.Tensor:
        return F.max_pool2d(image, kernel_size=3, stride=1, padding=1)

    def _median(self, image: torch.Tensor, strength: float) -> torch.Tensor:
        height, width = image.shape[-2:]
        neighbourhoods = F.unfold(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernel_size=3)  # (1, 3 * 9, H * W)
        return neighbourhoods.view(1, 3, 9, -1).median(dim=2).values.view(1, 3, height, width)


def affine_warp(images: torch.Tensor, theta: torch.Tensor, fill: tuple[int, int, int]) -> torch.Tensor:
    """Resample uint8 images (B, 3, H, W) through affine maps (B, 2, 3) (`EmojiAugment.theta`) on their device.

    Bicubic like EmojiAugment's PIL path, though torch's kernel (a = -0.75) is not PIL's (a = -0.5);
    areas the map uncovers get `fill`, and the result is rounded back to uint8 as PIL does, so
    `ImageProcessor.normalize` finishes it the same way.
    """
    background = torch.tensor(fill, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    grid = F.affine_grid(theta.float(), list(images.shape), align_corners=False)  # (B, H, W, 2)
    # grid_sample pads with zeros: sampling (image - fill) and adding fill back pads with fill.
    warped = F.grid_sample(images.float() - background, grid, mode="bicubic",
                           padding_mode="zeros", align_corners=False) + background
    return warped.round().clamp(0, 255).to(torch.uint8)
