"""Thumbnails of indexed photos, made once and kept by content hash.

The app serves these small JPEGs and nothing else from disk: the original files
are never exposed through the web server.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from vlm_vision.cache import cache_dir
from vlm_vision.checkpoints import replace_atomically
from vlm_vision.model import convert_to_rgb, open_image

THUMBNAIL_SIZE = 320  # longest side, pixels
# A camera JPEG decodes at 1/2, 1/4 or 1/8 while its shorter side stays at least twice the thumbnail's longest:
# 4000x3000 at 1/4 (1000x750) for a 320x240 thumbnail, a reduction gap of about 3 (see index.photos).
DRAFT_SIDES = 2


def default_thumbnail_dir() -> Path:
    return cache_dir("thumbnails")


class ThumbnailCache:
    """`get(path, content_hash)` returns a JPEG thumbnail's path, creating it on first use."""

    def __init__(self, folder: Path, size: int = THUMBNAIL_SIZE) -> None:
        self.folder = Path(folder)  # made on the first thumbnail: an app that shows none leaves no folder behind
        self.size = size

    def get(self, path: str, content_hash: str) -> Path:
        target = self.folder / f"{content_hash}-{self.size}.jpg"
        if not target.exists():
            image = convert_to_rgb(open_image(path, draft_min_side=DRAFT_SIDES * self.size))  # EXIF orientation
            image.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
            self._write(target, image)
        return target

    def placeholder(self) -> Path:
        """A plain grey square, shown for a result whose file can't be read any more (moved, deleted, unmounted)."""
        target = self.folder / f"unavailable-{self.size}.jpg"
        if not target.exists():
            self._write(target, Image.new("RGB", (self.size, self.size), (200, 200, 200)))
        return target

    def _write(self, target: Path, image: Image.Image) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Two requests racing both write whole files. Owner-only: these are pictures of someone's photos.
        replace_atomically(target, lambda f: image.save(f, "JPEG", quality=85), mode=0o600)
