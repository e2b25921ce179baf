"""Images for the tests: real files for the photo index (good ones in every format, every kind of bad input), and
small drawings for the datasets and augmentations."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vlm_vision.checkpoints import SAMPLES  # noqa: F401 (the tests take it from here)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def record_open_image(monkeypatch, module) -> list[Image.Image]:
    """Make `module.open_image` append every image it returns to the list returned (what a reader decoded)."""
    from vlm_vision.model.processor import open_image

    decoded = []

    def recording_open_image(*args, **kwargs):
        decoded.append(open_image(*args, **kwargs))
        return decoded[-1]

    monkeypatch.setattr(module, "open_image", recording_open_image)
    return decoded


def noise_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A distinct RGB image per seed: a colour gradient plus noise, so every file's content differs."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.integers(-128, 128, 3)
    pixels = np.clip(base + ramp + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def write_images(folder: Path, n: int, start: int = 0, ext: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"img_{i:04d}.{ext}"
        noise_image(i).save(path)
        paths.append(path)
    return paths


def png_bomb(path: Path, width: int = 40_000, height: int = 40_000) -> None:
    """A small PNG whose header claims width x height pixels (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    rows = zlib.compress(b"\x00" * (width + 1) * 16)  # a few rows of data only
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def good_formats(folder: Path) -> dict[str, Path]:
    """One valid image per supported format (GIF animated: its first frame is indexed)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, ext in enumerate(["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]):
        out[ext] = folder / f"good_{ext}.{ext.upper() if ext == 'jpeg' else ext}"
        noise_image(100 + i).save(out[ext])
    from PIL import features

    from vlm_vision.index.photos import pillow_heif, register_plugins

    register_plugins()
    if pillow_heif is not None:  # the [heif] extra (installed by the dev extra, so in CI)
        out["heic"] = folder / "good_phone.HEIC"
        noise_image(110).save(out["heic"])
    if features.check("avif"):
        out["avif"] = folder / "good.avif"
        noise_image(111).save(out["avif"])
    frames = [noise_image(200), noise_image(201)]
    out["gif"] = folder / "good_anim.gif"
    frames[0].save(out["gif"], save_all=True, append_images=frames[1:], duration=100)
    return out


def bad_inputs(folder: Path) -> dict[str, Path]:
    """Every kind of bad input the index must skip, recorded with a reason, without stopping the build."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "source.png"
    noise_image(300).save(good)
    data = good.read_bytes()
    out = {
        "empty": folder / "empty.jpg",
        "truncated": folder / "truncated.png",
        "corrupt": folder / "corrupt.jpg",
        "text": folder / "notes.png",
        "bomb": folder / "bomb.png",
        "broken_link": folder / "broken_link.jpg",
        "self_link": folder / "self_link.jpg",
        "fifo": folder / "pipe.png",
    }
    out["empty"].write_bytes(b"")
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["corrupt"].write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000))
    out["text"].write_text("these are my shopping notes, not a picture\n")
    png_bomb(out["bomb"])
    os.symlink(folder / "missing.jpg", out["broken_link"])
    os.symlink(out["self_link"], out["self_link"])
    os.mkfifo(out["fifo"])
    loop = folder / "loop"
    loop.mkdir()
    os.symlink(folder, loop / "back_to_parent")
    out["loop"] = loop / "back_to_parent"
    undecodable = os.fsencode(folder) + b"/caf\xe9_latin1.png"
    with open(undecodable, "wb") as f:
        f.write(data)
    out["undecodable"] = Path(os.fsdecode(undecodable))
    good.unlink()
    return out


def png(path: Path, colour: tuple[int, int, int] = RED, size: tuple[int, int] = (16, 12)) -> Path:
    """A small RGB PNG of one colour with a dark square in it, at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle((2, 2, 5, 5), fill=(10, 20, 30))
    image.save(path)
    return path


def disc(colour: tuple[int, int, int], size: int = 64) -> Image.Image:
    """A disc of one colour on a transparent background, loaded as the dataset loads it (white behind)."""
    from vlm_vision.model.processor import load_image  # (imports torch: only the tests that draw discs need it)

    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((8, 8, size - 9, size - 9), fill=(*colour, 255))
    return load_image(image)


def exif_photo(path: Path, seed: int, taken: str | None = None, make: str | None = None,
               model: str | None = None) -> Path:
    """A JPEG with EXIF date taken (`taken` as "YYYY:MM:DD HH:MM:SS", how cameras write it) and camera make/model."""
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_image(seed, size=(64, 48)).save(path, exif=exif, quality=90)
    return path
