"""Test pictures for the processors' parity tests: seeded drawings, written as real files in every PIL mode a
photo comes in, at awkward sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZES = [(1, 1), (3, 517), (517, 3), (225, 223), (1000, 700)]  # (width, height)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A seeded RGB test picture: smooth gradients, noise and a few drawn shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack(
        [255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 127 + 127 * np.sin((x + y) / 7)], axis=-1
    )
    noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(noisy)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.integers(0, 256, 3).tolist()))
        draw.line((x0, y1, x1, y0), fill=tuple(rng.integers(0, 256, 3).tolist()), width=2)
    return image


def alpha_band(width: int, height: int, seed: int) -> Image.Image:
    """An alpha band with fully transparent, fully opaque and partial pixels."""
    rng = np.random.default_rng(seed + 1)
    alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
    alpha[: height // 3] = 0
    alpha[height - height // 3 :] = 255
    alpha.flat[0] = 100  # at least one partial value, even at 1x1 (an opaque WebP would drop its alpha)
    return Image.fromarray(alpha)


def sixteen_bit(width: int, height: int, seed: int) -> np.ndarray:
    """A 16-bit grayscale picture spanning the whole 0..65535 range."""
    gray = np.asarray(photo(width, height, seed).convert("L")).astype(np.uint32)
    rng = np.random.default_rng(seed + 2)
    return np.clip(gray * 257 + rng.integers(-200, 200, gray.shape), 0, 65535).astype(np.uint16)


def write_image(folder: Path, kind: str, width: int, height: int, seed: int = 0) -> Path:
    """Write a test image of the given kind and return its path; the file keeps the PIL mode in the kind."""
    rgb = photo(width, height, seed)
    if kind == "RGB.jpg":
        image, fmt = rgb, "JPEG"
    elif kind == "RGB.png":
        image, fmt = rgb, "PNG"
    elif kind == "L.png":
        image, fmt = rgb.convert("L"), "PNG"
    elif kind == "LA.png":
        image, fmt = Image.merge("LA", (rgb.convert("L"), alpha_band(width, height, seed))), "PNG"
    elif kind == "RGBA.png":
        image, fmt = Image.merge("RGBA", (*rgb.split(), alpha_band(width, height, seed))), "PNG"
    elif kind == "RGBA.webp":
        image, fmt = Image.merge("RGBA", (*rgb.split(), alpha_band(width, height, seed))), "WEBP"
    elif kind in ("P.png", "P+transparency.png", "P.gif", "P+transparency.gif"):
        image = rgb.quantize(colors=64, dither=Image.Dither.NONE)
        fmt = "GIF" if kind.endswith(".gif") else "PNG"
        if "transparency" in kind:
            image.info["transparency"] = int(np.asarray(image)[0, 0])  # the top-left colour becomes transparent
    elif kind == "CMYK.jpg":
        image, fmt = rgb.convert("CMYK"), "JPEG"
    elif kind == "I;16.png":
        image, fmt = Image.fromarray(sixteen_bit(width, height, seed)), "PNG"
    elif kind == "1.png":
        image, fmt = rgb.convert("1"), "PNG"
    elif kind == "I.pgm":  # 16-bit PGM opens as mode "I"
        values = sixteen_bit(width, height, seed) // 257  # kept within 8 bits: transformers clips mode I at 255
        path = folder / f"{kind}-{width}x{height}"
        path.write_bytes(f"P5\n{width} {height}\n65535\n".encode() + values.astype(">u2").tobytes())
        return path
    elif kind == "F.tif":
        image, fmt = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.float32)), "TIFF"
    else:
        raise ValueError(f"Unknown test image kind {kind!r}")
    path = folder / f"{kind}-{width}x{height}"
    save_kwargs = {"transparency": image.info["transparency"]} if "transparency" in image.info else {}
    if fmt == "WEBP":
        save_kwargs["lossless"] = True
    image.save(path, fmt, **save_kwargs)
    return path


KINDS = {  # kind -> the PIL mode the file opens in
    "RGB.jpg": "RGB",
    "RGB.png": "RGB",
    "L.png": "L",
    "LA.png": "LA",
    "RGBA.png": "RGBA",
    "RGBA.webp": "RGBA",
    "P.png": "P",
    "P+transparency.png": "P",
    "P.gif": "P",
    "P+transparency.gif": "P",
    "CMYK.jpg": "CMYK",
    "I;16.png": "I;16",
    "1.png": "1",
    "I.pgm": "I",
    "F.tif": "F",
}


def to_8bit_gray(image: Image.Image) -> Image.Image:
    """The 8-bit L image our loader makes of a 16-bit one, computed independently: round(v / 257)."""
    return Image.fromarray(np.rint(np.asarray(image) / 257).astype(np.uint8))
