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
from dataclasses import dataclass

from PIL import Image, features

from .names import IMAGE_SIZE, Artwork, EmojiFetchError, unified_key
from .svg import MIT


@dataclass(frozen=True)
class RasterArtwork(Artwork):
    """An npm package of one image per emoji, named by code point: `<folder><code points><suffix>`."""

    version: str = ""  # the release this project pins
    package_url: str = ""  # where the npm package is made, when not where the artwork is (source_url)
    folder: str = "package/assets/"  # tar members holding the images
    suffix: str = ".webp"  # their file extension, lower case
    image_format: str = "webp"  # what Pillow needs support for (PIL.features) to read them

    def provenance(self, version: str) -> list[str]:
        """Where the images came from (the pinned release, whatever emoji-datasource `version` is)."""
        return [f"- Taken from: npm package `{self.package}@{self.version}` ({self.package_url})",
                f"- Changes: shrunk to {IMAGE_SIZE}-px PNG (Lanczos); files named by code point."]

    def code_of(self, member: str) -> str | None:
        """The `unified_key` of the emoji a tar member draws, or None if the member isn't one of the images."""
        if member.startswith(self.folder) and member.lower().endswith(self.suffix):
            return unified_key(member[len(self.folder):-len(self.suffix)])
        return None

    def check_decoder(self) -> None:
        """Raise EmojiFetchError, saying what to do, if this Pillow can't read the images."""
        if not features.check(self.image_format):
            raise EmojiFetchError(
                f"This Pillow was built without {self.image_format.upper()} support, which the {self.package} "
                f"images need: install a Pillow wheel from PyPI (pip install --force-reinstall pillow), or build "
                f"the other styles only"
            )


RASTER_ARTWORK = {
    "fluent-3d": RasterArtwork(
        package="@lobehub/fluent-emoji-3d", version="1.1.0", title="Fluent Emoji, 3D style (Microsoft)",
        holder="Microsoft Corporation", licence=MIT[0], licence_url=MIT[1],
        source_url="https://github.com/microsoft/fluentui-emoji",
        package_url="https://github.com/lobehub/fluent-emoji",
        notes="Repackaged for npm by LobeHub (https://github.com/lobehub/fluent-emoji), MIT licence.",
    ),
}


def shrink_png(data: bytes, size: int = IMAGE_SIZE) -> bytes:
    """An image file's bytes (any format Pillow reads) as a size x size RGBA PNG.

    A non-square image (a few 3D renders are 256x264) is first centred on a transparent square,
    so its shape is kept: stretching it would teach wrong shapes.
    """
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGBA")
    if image.width != image.height:
        side = max(image.size)
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = square
    small = image.resize((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, format="PNG")
    return out.getvalue()
