"""The raster emoji style (Fluent Emoji 3D): matching images by code point, shrinking them, building it offline."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.emoji import test_corpus
from tests.emoji.test_corpus import google_datasource, tarball
from vlm_vision.emoji import build_emoji_corpus
from vlm_vision.emoji.names import EmojiFetchError
from vlm_vision.emoji.raster import RASTER_ARTWORK, shrink_png
from vlm_vision.training.data import read_records

npm_cache = test_corpus.npm_cache  # the fake npm cache fixture (unicode-emoji-json, emoji-datasource-twitter)


def webp_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


def half_red(size: int = 256) -> np.ndarray:
    """Opaque red on the left half, transparent black on the right."""
    pixels = np.zeros((size, size, 4), np.uint8)
    pixels[:, : size // 2] = (255, 0, 0, 255)
    return pixels


def test_images_are_matched_by_code_point_and_shrunk_to_64_px_without_dark_edges():
    art = RASTER_ARTWORK["fluent-3d"]
    assert art.code_of("package/assets/2764-fe0f.webp") == "2764"
    assert art.code_of("package/assets/1f44d-1f3fd.webp") == "1F44D-1F3FD"
    assert art.code_of("package/package.json") is None and art.code_of("package/README.md") is None
    small = np.asarray(Image.open(io.BytesIO(shrink_png(webp_bytes(half_red())))))
    assert small.shape == (64, 64, 4)
    assert (small[:, :28] == (255, 0, 0, 255)).all() and (small[:, 36:, 3] == 0).all()  # Lanczos rings near the edge
    # Resampled in premultiplied colour: the half-transparent edge stays red instead of fading to black.
    edge = small[:, 31:33]
    assert (edge[..., 3] > 0).all() and (edge[..., 0] == 255).all()


def test_a_non_square_image_is_centred_on_a_transparent_square_not_stretched():
    tall = np.zeros((256, 128, 4), np.uint8)
    tall[:] = (0, 0, 255, 255)  # an opaque blue bar half as wide as it is tall
    small = np.asarray(Image.open(io.BytesIO(shrink_png(webp_bytes(tall)))))
    assert small.shape == (64, 64, 4)
    covered = np.flatnonzero(small[32, :, 3] >= 128)
    assert (covered.min(), covered.max()) == (16, 47)  # the middle 32 of 64 columns: half as wide, as it was
    assert (small[:, :13, 3] == 0).all() and (small[:, 51:, 3] == 0).all()  # Lanczos rings reach 3 pixels out
    assert (small[:, 19:45] == (0, 0, 255, 255)).all()


def test_build_the_raster_style_offline(tmp_path, npm_cache):
    google_datasource(npm_cache)
    art = RASTER_ARTWORK["fluent-3d"]
    tarball(npm_cache / f"lobehub-fluent-emoji-3d-{art.version}.tgz", art.package, art.version,
            {"assets/2764-fe0f.webp": webp_bytes(half_red()), "assets/1f44d-1f3fd.webp": webp_bytes(half_red(128)),
             "assets/1f91d.webp": b"not a webp", "assets/1f935.webp": webp_bytes(half_red()[:, :200])})
    out = tmp_path / "corpus"
    summary = build_emoji_corpus(out, styles=("fluent-3d",), cache=npm_cache)
    counts = summary["styles"]["fluent-3d"]
    assert (counts["base_classes"], counts["skin_tone_variants"]) == (2, 1)
    records = read_records(out / "fluent-3d" / "captions.jsonl")
    assert [(r.label, r.caption) for r in records] == [("red heart", "red heart"),
                                                      ("thumbs up", "thumbs up: medium skin tone"),
                                                      ("person in tuxedo", "person in tuxedo")]
    assert all(Image.open(r.path).size == (64, 64) for r in records)  # from 256, 128 and 256x200 px
    skipped = {s["unified"]: s["reason"] for s in map(json.loads, (out / "fluent-3d" / "skipped.jsonl").open())}
    assert skipped["1F44D"] == "@lobehub/fluent-emoji-3d has no image for it"
    assert skipped["1F91D"].startswith("package/assets/1f91d.webp can't be used (cannot identify image file")
    attribution = (out / "ATTRIBUTION.md").read_text()
    assert "MIT License" in attribution and f"`@lobehub/fluent-emoji-3d@{art.version}`" in attribution
    assert "shrunk to 64-px PNG" in attribution


def test_a_package_without_images_is_an_error_not_an_empty_style(tmp_path, npm_cache):
    google_datasource(npm_cache)
    art = RASTER_ARTWORK["fluent-3d"]
    tarball(npm_cache / f"lobehub-fluent-emoji-3d-{art.version}.tgz", art.package, art.version,
            {"png/2764-fe0f.png": webp_bytes(half_red())})  # another layout
    with pytest.raises(EmojiFetchError, match=r"has no package/assets/\*\.webp images"):
        build_emoji_corpus(tmp_path / "corpus", styles=("fluent-3d",), cache=npm_cache)
    assert not (tmp_path / "corpus" / "fluent-3d").exists()


def test_a_pillow_without_webp_is_told_what_to_install(monkeypatch):
    monkeypatch.setattr("vlm_vision.emoji.raster.features.check", lambda feature: feature != "webp")
    with pytest.raises(EmojiFetchError, match="without WEBP support.*pip install --force-reinstall pillow"):
        RASTER_ARTWORK["fluent-3d"].check_decoder()


def test_twemoji_is_never_the_raster_style():
    """Twemoji is the held-out style: the raster set must not be Twemoji (or derived from it)."""
    assert not any("twemoji" in (art.package + art.source_url).lower() for art in RASTER_ARTWORK.values())
