"""Read one photo for the index: its bytes once, their hash, its metadata and, when needed, its pixels.

`read_photo` is a plain function of one file so that DataLoader workers run it
in parallel with the model. It never raises for a bad file: the reason goes into
the record, and the build records it and goes on.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime

import torch
from PIL import ExifTags, Image

from vlm_vision.errors import ImageLoadError
from vlm_vision.model import DRAFT_SCALE, NaFlexProcessor, Preprocessing, convert_to_rgb, open_image

from .scan import FoundFile

logger = logging.getLogger(__name__)

# Photos up to 8K x 12K (about 100 megapixels) decode; above that a file is skipped as a
# possible decompression bomb (PIL's own default limit is 89 megapixels).
DEFAULT_MAX_PIXELS = 100_000_000
HEIF_EXTENSIONS = (".heic", ".heif")  # AVIF is built into Pillow's wheels since 11.3
# A JPEG may decode at 1/2, 1/4 or 1/8 of its size while both sides stay at least this many times the model's input
# side; the resize then does the rest. This is what `Image.thumbnail(reducing_gap=...)` does (its first step is
# `draft()` for JPEGs), and Pillow documents a gap of 3 or more as "indistinguishable from fair resampling in most
# cases".
JPEG_REDUCING_GAP = 3

try:  # optional extra: pip install "vlm-vision[heif]"
    import pillow_heif  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    pillow_heif = None


def register_plugins() -> None:
    """Teach PIL HEIC/HEIF when pillow-heif is installed (idempotent)."""
    if pillow_heif is not None:
        pillow_heif.register_heif_opener()


@dataclass
class PhotoRecord:
    """What the build learned about one file: a content hash and metadata, or the reason it was skipped."""

    file: FoundFile
    hash: str | None = None
    width: int | None = None  # as displayed, after EXIF orientation
    height: int | None = None
    taken_at: str | None = None  # EXIF DateTimeOriginal as ISO 8601, when present
    camera: str | None = None  # EXIF Make and Model
    pixels: torch.Tensor | None = None  # (3, H, W) uint8, resized; only for content not in the index yet
    grid: tuple[int, int] | None = None  # NaFlex: `pixels` are its patches (N, p * p * 3), the image's (h, w) of them
    error: str | None = None


def content_hash(data: bytes) -> str:
    """A 128-bit BLAKE2b of the file's bytes: equal files share one vector (renames, duplicates)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_photo(file: FoundFile, processor: Preprocessing, known_hashes: frozenset[str] | set[str] = frozenset(),
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> PhotoRecord:
    """Hash `file`; unless its content is already indexed, decode it and resize it for the model."""
    record = PhotoRecord(file)
    try:
        data = read_bytes(file.path)
    except FileNotFoundError:
        record.error = "vanished before it could be read"
        return record
    except PermissionError:
        record.error = "permission denied"
        return record
    except OSError as e:
        record.error = f"read error ({type(e).__name__}: {e.strerror or e})"
        return record
    record.hash = content_hash(data)
    if record.hash in known_hashes:
        return record  # the index already has this content; the build copies its metadata
    try:
        image = open_image(file.path, max_pixels, data=data, draft_min_side=draft_min_side(processor))
        scale = image.info.get(DRAFT_SCALE, 1)  # the file's own size, not the reduced decode's
        record.width, record.height = image.width * scale, image.height * scale
        record.taken_at, record.camera = exif_fields(image)
        if isinstance(processor, NaFlexProcessor):
            record.pixels, record.grid = processor.cut(convert_to_rgb(image))
        else:
            record.pixels = torch.from_numpy(processor.resized(convert_to_rgb(image)))
        # normalised on the model's device
    except ImageLoadError as e:
        record.error = e.reason
        if os.path.splitext(file.path)[1].lower() in HEIF_EXTENSIONS and pillow_heif is None:
            record.error = 'HEIC/HEIF needs the optional extra: pip install "vlm-vision[heif]"'
    except Exception as e:  # noqa: BLE001 - any decoder failure skips this file, recorded, never the build
        logger.debug("Unexpected error decoding %s", file.path, exc_info=True)
        record.error = f"can't decode ({type(e).__name__}: {e})"
    if record.error is not None:
        record.hash = None
    return record


def read_bytes(path: str) -> bytes:
    """The bytes of a local file, or of a URI (s3://, gs://, file://, ...) through pyarrow's file systems (the
    distributed build's sources; `pip install "vlm-vision[ray]"` brings pyarrow)."""
    if "://" not in path:
        with open(path, "rb") as f:
            return f.read()
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(path)
    with filesystem.open_input_stream(inner) as f:
        return f.read()


def draft_min_side(processor: Preprocessing) -> int | None:
    """The smallest side a JPEG may be decoded down to for `processor` (None: decode in full, nothing is resized)."""
    if not processor.do_resize:
        return None
    if isinstance(processor, NaFlexProcessor):  # the side of a square image's grid, a bound for any aspect ratio
        return JPEG_REDUCING_GAP * processor.patch_size * math.isqrt(processor.max_num_patches)
    return JPEG_REDUCING_GAP * max(processor.size)


def exif_fields(image: Image.Image) -> tuple[str | None, str | None]:
    """(date taken as ISO 8601, camera) from EXIF, each None when absent or malformed."""
    try:
        exif = image.getexif()
        taken = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
        make = _clean(exif.get(ExifTags.Base.Make))
        model = _clean(exif.get(ExifTags.Base.Model))
    except Exception:  # noqa: BLE001 - metadata is best effort: a malformed EXIF block must not skip the photo
        logger.debug("Unreadable EXIF", exc_info=True)
        return None, None
    camera = model if make and model and model.startswith(make) else " ".join(p for p in (make, model) if p)
    return _iso_date(taken), camera or None


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "").strip() or None


def _iso_date(value: object) -> str | None:
    text = _clean(value)
    if text is None:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None
