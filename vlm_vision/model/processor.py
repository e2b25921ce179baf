"""Image loading and SigLIP preprocessing, numerically identical to transformers.

`load_image` turns a path or a PIL image into an RGB image (EXIF orientation
applied, transparency composited onto white) and raises `ImageLoadError` with
the reason when a file can't be read. `ImageProcessor` reproduces
`transformers.SiglipImageProcessorPil` bit for bit: PIL resize on uint8, rescale
in float64 then cast to float32, normalize in float32. Its settings are read
from and written to the HF `preprocessor_config.json`, so they travel with the weights.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..checkpoints import read_json, resolve_checkpoint, write_json
from ..errors import CheckpointError, ImageLoadError

logger = logging.getLogger(__name__)

# PIL's own default for Image.MAX_IMAGE_PIXELS (about 0.25 GB of RGB at 24 bits per pixel).
DEFAULT_MAX_PIXELS = 89_478_485
# `image.info` key of an image that `open_image(draft_min_side=...)` decoded at 1/N of its size: N.
DRAFT_SCALE = "vlm_vision.draft_scale"
CONFIG_NAME = "preprocessor_config.json"
ImageInput = str | os.PathLike | Image.Image  # one image: a file path or a PIL image

# Keys of a preprocessor_config.json that describe the file, not the preprocessing.
_METADATA_KEYS = {"image_processor_type", "processor_class", "feature_extractor_type"}


def open_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               data: bytes | None = None, *, draft_min_side: int | None = None) -> Image.Image:
    """Open and fully decode an image file, EXIF orientation applied, in its own mode.

    Decoding happens here (not lazily) so that truncated or corrupt files fail at
    this line with the file's name, instead of deep inside a later resize.
    `data`, when given, is the file's content already read (the photo index reads
    each file once, to hash and decode it); `path` then only names it in errors.
    `draft_min_side`, when given, lets a large JPEG decode at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT
    scaling, `Image.draft`) while both sides stay at least `draft_min_side` (see `draft_scale`): a few times
    faster for camera photos, and close to, not equal to, the full decode followed by a resize.
    `image.info[DRAFT_SCALE]` then holds the factor. The `max_pixels` check applies to the file's full size.
    """
    path = Path(path)

    def fail(reason: str) -> ImageLoadError:
        return ImageLoadError(f"Can't load image {str(path)!r}: {reason}", reason)

    empty = len(data) == 0 if data is not None else path.is_file() and path.stat().st_size == 0
    if empty:
        raise fail("the file is empty (0 bytes)")
    try:
        # PIL warns above its global limit; our own max_pixels check below decides instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data) if data is not None else path)
    except FileNotFoundError as e:
        raise fail("no such file") from e
    except IsADirectoryError as e:
        raise fail("it is a directory, not an image file") from e
    except UnidentifiedImageError as e:
        raise fail("not an image, or a format PIL can't identify") from e
    except Image.DecompressionBombError as e:  # above twice PIL's global limit, before our own check runs
        raise fail(
            f"possible decompression bomb ({e}); if the file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from e
    except PermissionError as e:
        raise fail("permission denied") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # some decoders (WebP) fail while opening
        raise fail(f"truncated or corrupt image data ({type(e).__name__}: {e})") from e

    with image:
        pixels = image.width * image.height
        if max_pixels is not None and pixels > max_pixels:
            raise fail(
                f"possible decompression bomb: {image.width}x{image.height} = {pixels} pixels "
                f"exceeds max_pixels={max_pixels}; pass a larger max_pixels if the file is trusted"
            )
        if draft_min_side is not None and image.format in ("JPEG", "MPO"):
            scale = draft_scale(image.size, draft_min_side)
            reduced = (image.width // scale, image.height // scale)
            if scale > 1 and image.draft(None, reduced) is not None and image.size == reduced:
                image.info[DRAFT_SCALE] = scale  # copied onto the transposed image below
        try:
            image.load()
            return ImageOps.exif_transpose(image)  # a new image, valid after the file is closed
        except (OSError, SyntaxError, ValueError, EOFError) as e:  # what PIL decoders raise on bad data
            raise fail(f"truncated or corrupt image data ({type(e).__name__}: {e})") from e


def draft_scale(size: tuple[int, int], min_side: int) -> int:
    """The largest JPEG reduction (8, 4 or 2) that divides both sides of `size` and leaves both >= `min_side`; else 1.

    Dividing exactly keeps the geometry exact: libjpeg gives every pixel of the smaller image the same share of
    the original, where a partial last pixel would shift the later resize by a fraction of a pixel (on whichever
    side EXIF orientation moves it to). The cost: 4000x2250 (16:9) only halves, as 2250 is not a multiple of 4.
    """
    width, height = size
    for scale in (8, 4, 2):
        if width % scale == 0 and height % scale == 0 and min(width, height) // scale >= min_side:
            return scale
    return 1


def convert_to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB exactly as transformers' `convert_to_rgb` does, except 16-bit grayscale.

    Images with an alpha band or a `transparency` entry are composited onto white.
    Deviation: PIL converts "I;16" images by clipping at 255, which turns a normal
    16-bit photo white; we scale them to 8 bits (round(v / 257)) first, keeping a
    16-bit `transparency` value as an alpha mask. Modes "I" and "F" carry no bit
    depth, so they keep PIL's (and transformers') clipping to [0, 255].
    """
    if image.mode.startswith("I;16"):
        values = np.asarray(image).astype(np.uint32)  # (H, W), any byte order
        gray = Image.fromarray(((values + 128) // 257).astype(np.uint8))  # mode L
        transparency = image.info.get("transparency")
        if transparency is None:
            return gray.convert("RGB")
        alpha = Image.fromarray(np.where(values == transparency, 0, 255).astype(np.uint8))
        image = Image.merge("LA", (gray, alpha))
    try:
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        return image.convert("RGB")
    except ValueError as e:
        raise ValueError(f"Can't convert a PIL image of mode {image.mode!r} to RGB: {e}") from e


def load_image(image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Return an RGB PIL image from a file path (decoded, EXIF-rotated) or a PIL image (taken as it is).

    `max_pixels` bounds width * height of files (None: no bound of ours); larger files
    raise `ImageLoadError`, as do missing, empty, unreadable, truncated or corrupt ones.
    """
    if isinstance(image, Image.Image):
        return convert_to_rgb(image)
    if isinstance(image, (str, os.PathLike)):
        return convert_to_rgb(open_image(image, max_pixels))
    raise TypeError(f"Expected a file path or a PIL image, got {type(image).__name__}")


@dataclass(frozen=True)
class Preprocessing:
    """What SigLIP's processors share: rescale and normalise settings, and the `preprocessor_config.json` round
    trip. `ImageProcessor` resizes to one size (SigLIP, fixed-resolution SigLIP 2); `NaFlexProcessor` keeps each
    image's aspect ratio and cuts it into patches (SigLIP 2 NaFlex)."""

    resample: int = 3  # PIL resampling filter for the resize: 3 = Image.Resampling.BICUBIC
    do_resize: bool = True  # resize; without it images must already have the model's size
    do_rescale: bool = True  # multiply uint8 pixel values by `rescale_factor`
    rescale_factor: float = 1 / 255  # maps [0, 255] to [0, 1]
    do_normalize: bool = True  # apply (x - image_mean) / image_std per channel
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # SigLIP maps [0, 1] to [-1, 1]
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    do_convert_rgb: bool = True  # convert other modes to RGB; when False, only RGB images are accepted

    image_processor_type = "SiglipImageProcessor"  # transformers' class, written into the config

    def __post_init__(self) -> None:
        Image.Resampling(self.resample)  # raises ValueError for an unknown filter
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} needs one value per RGB channel, got {getattr(self, name)!r}")
        if 0 in self.image_std:
            raise ValueError(f"image_std must be non-zero, got {self.image_std!r}")

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Preprocessing:
        """Build from a HF `preprocessor_config.json` dict; settings we don't implement raise ValueError."""
        own = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in config.items():
            if key == "size" and "size" in own:
                if not (isinstance(value, dict) and set(value) == {"height", "width"}):
                    raise ValueError(
                        f"Unsupported 'size' in preprocessor config: {value!r}; "
                        f"SigLIP processors resize to {{'height': H, 'width': W}}"
                    )
                kwargs["size"] = (int(value["height"]), int(value["width"]))
            elif key in ("image_mean", "image_std"):  # a list per channel, or one number for all three
                values = value if isinstance(value, (list, tuple)) else [value] * 3
                kwargs[key] = tuple(float(v) for v in values)
            elif key in own and value is not None:
                kwargs[key] = value
            elif key in _METADATA_KEYS or value is None or value is False:
                logger.debug("Ignoring preprocessor config key %r = %r", key, value)
            else:
                raise ValueError(
                    f"Unsupported preprocessor config key {key!r} = {value!r}: {cls.__name__} doesn't implement it"
                )
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The HF `preprocessor_config.json` dict, readable by transformers' processor of the same kind."""
        config = {f.name: getattr(self, f.name) for f in fields(self)}
        config |= {"image_mean": list(self.image_mean), "image_std": list(self.image_std),
                   "resample": int(self.resample), "image_processor_type": self.image_processor_type}
        return dict(sorted(config.items()))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None) -> Preprocessing:
        """Read `preprocessor_config.json` from a checkpoint folder, a file in one, or a Hub id."""
        path = resolve_checkpoint(name_or_path, revision)
        folder = path if path.is_dir() else path.parent
        config = read_json(folder, CONFIG_NAME)
        if config is None:
            raise CheckpointError(
                f"No {CONFIG_NAME} in {folder}. Pass a folder that has one, or use "
                f"{cls.__name__}() for the SigLIP defaults (mean = std = 0.5)."
            )
        return cls.from_dict(config)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write `preprocessor_config.json` into `folder` (created if needed) and return its path."""
        file = Path(folder) / CONFIG_NAME
        file.parent.mkdir(parents=True, exist_ok=True)
        write_json(file, self.to_dict())
        return file

    def load(self, image: ImageInput) -> Image.Image:
        """One image as the processor takes it: RGB (see `load_image`), or, without RGB conversion, as it is."""
        if self.do_convert_rgb:
            return load_image(image)
        return image if isinstance(image, Image.Image) else open_image(image)

    @staticmethod
    def check_rgb(image: Image.Image) -> None:
        """`resized` takes RGB images: ValueError otherwise, saying how to get one."""
        if image.mode != "RGB":
            raise ValueError(
                f"resized expects an RGB image, got mode {image.mode!r}: pass it through load_image first"
            )

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float32, on any device: rescale, then normalise, with transformers' numbers.

        Rescaling in float64 then casting, as transformers does, keeps the result bit-identical.
        """
        x = pixels.double() * self.rescale_factor if self.do_rescale else pixels.double()
        x = x.float()
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.image_std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or a list of them as a non-empty list, or a TypeError/ValueError that says what to pass."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    if not isinstance(images, (list, tuple)):
        raise TypeError(f"Expected a path, a PIL image or a list of them, got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError("No images given: pass at least one path or PIL image")
    return list(images)


@dataclass(frozen=True)
class ImageProcessor(Preprocessing):
    """SigLIP preprocessing settings, read from and written to HF `preprocessor_config.json`.

    Defaults are those of `transformers.SiglipImageProcessorPil` (all SigLIP checkpoints at 224px).
    """

    size: tuple[int, int] = (224, 224)  # (height, width) every image is resized to, ignoring aspect ratio

    def __post_init__(self) -> None:
        if len(self.size) != 2 or not all(isinstance(s, int) and s > 0 for s in self.size):
            raise ValueError(f"size must be (height, width) of positive ints, got {self.size!r}")
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        """The HF `preprocessor_config.json` dict, readable by `SiglipImageProcessorPil.from_pretrained`."""
        return super().to_dict() | {"size": {"height": self.size[0], "width": self.size[1]}}

    def resized(self, image: Image.Image) -> np.ndarray:
        """The first half of `preprocess`: one RGB image resized, as uint8 (3, H, W).

        Sending uint8 from DataLoader workers and finishing with `normalize` on the
        model's device moves a quarter of the bytes and the arithmetic off the workers.
        """
        self.check_rgb(image)
        if self.do_resize:
            height, width = self.size
            image = image.resize((width, height), resample=self.resample)
        return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))  # (3, H, W) uint8

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Turn one RGB PIL image into float32 pixel values (3, H, W), the steps and dtypes of transformers.

        A plain function of one image so that DataLoader workers can call it. The result is
        always float32, even with rescale and normalize off (transformers then keeps uint8).
        """
        return self.normalize(torch.from_numpy(self.resized(image))[None])[0].numpy()

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """Load and preprocess one image or a list of images (paths or PIL) into a (B, 3, H, W) float32 batch."""
        batch = [self.preprocess(self.load(image)) for image in as_image_list(images)]
        return torch.from_numpy(np.stack(batch))  # (B, 3, H, W)
