"""One more emoji style for training: Microsoft's Fluent Emoji 3D, large raster images shrunk to 64-px PNGs.

Fluent Emoji's 3D style exists only as renders, not as SVG. The npm package
`@lobehub/fluent-emoji-3d` (LobeHub's repackaging, MIT like Microsoft's originals) holds one
256-px WebP per emoji under `package/assets/`, named by lower-case code points
(`2764-fe0f.webp`), skin-tone variants included. Each is matched to an emoji by its code
points (`unified_key`), so labels and captions are the emoji-datasource ones that every style
shares, and shrunk to 64 px (Lanczos, which Pillow applies to premultiplied colour, so
transparent edges don't darken).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image

from .emoji_names import IMAGE_SIZE, Artwork, unified_key


@dataclass(frozen=True)
class RasterArtwork(Artwork):
    """An npm package of one image per emoji, named by code point: `<folder>/<code points><suffix>`."""

    version: str = ""  # the release this project pins
    folder: str = "package/assets/"
    suffix: str = ".webp"

    def provenance(self, version: str) -> list[str]:
        """Where the images came from (the pinned release, whatever emoji-datasource `version` is)."""
        return [f"- Taken from: npm package `{self.package}@{self.version}` (https://github.com/lobehub/fluent-emoji)",
                f"- Changes: shrunk to {IMAGE_SIZE}-px PNG (Lanczos); files named by code point."]

    def images_by_code(self, member_names: Iterable[str]) -> dict[str, str]:
        """{unified_key: tar member name} of the package's images."""
        return {unified_key(name[len(self.folder):-len(self.suffix)]): name for name in member_names
                if name.startswith(self.folder) and name.endswith(self.suffix)}


RASTER_ARTWORK = {
    "fluent-3d": RasterArtwork(
        package="@lobehub/fluent-emoji-3d", version="1.1.0", title="Fluent Emoji, 3D style (Microsoft)",
        holder="Microsoft Corporation", licence="MIT License",
        licence_url="https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE",
        source_url="https://github.com/microsoft/fluentui-emoji",
        notes="Repackaged for npm by LobeHub (https://github.com/lobehub/fluent-emoji), MIT licence.",
    ),
}


def shrink_png(data: bytes, size: int = IMAGE_SIZE) -> bytes:
    """An image file's bytes (any format Pillow reads) as a size x size RGBA PNG."""
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGBA").resize((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, format="PNG")
    return out.getvalue()
