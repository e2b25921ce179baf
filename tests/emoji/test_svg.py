"""The SVG emoji styles: icon lookup, SVG assembly, rendering, and building a style offline."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.emoji import test_corpus
from tests.emoji.test_corpus import google_datasource, tarball
from vlm_vision.emoji import build_emoji_corpus
from vlm_vision.emoji.names import EmojiEntry
from vlm_vision.emoji.svg import SVG_ARTWORK, IconSet, render_png, slug
from vlm_vision.training.data import read_records

pytest.importorskip("resvg_py")
npm_cache = test_corpus.npm_cache  # the fake npm cache fixture (unicode-emoji-json, emoji-datasource-twitter)

RED_SQUARE = '<path fill="#ff0000" d="M0 0h36v36H0z"/>'
LEFT_HALF_BLUE = '<path fill="#0000ff" d="M0 0h18v36H0z"/>'  # blue on the left half only


def make_entry(label: str, unified: str, base: bool = True, captions: tuple[str, ...] = ()) -> EmojiEntry:
    return EmojiEntry(unified, unified.lower() + ".png", label, (label, *captions), "Symbols", "other", base,
                      name=label.upper())


ICONS = {
    "prefix": "test", "width": 36, "height": 36,
    "icons": {"red-heart": {"body": RED_SQUARE}, "thumbs-up": {"body": RED_SQUARE},
              "pointing-left": {"body": LEFT_HALF_BLUE}, "admissiontickets": {"body": RED_SQUARE},
              "flag-for-japan": {"body": RED_SQUARE}},
    "aliases": {"pointing-right": {"parent": "pointing-left", "hFlip": True}, "plus-one": {"parent": "thumbs-up"}},
}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_slug_is_iconifys_name_of_an_emoji():
    assert slug("Face with tears of joy") == "face-with-tears-of-joy"
    assert slug("flag: Côte d’Ivoire") == "flag-cote-divoire"
    assert slug("twelve o’clock") == slug("twelve o'clock") == "twelve-oclock"
    assert slug("A button (blood type)") == "a-button-blood-type"


def test_icons_are_found_by_code_point_then_by_name():
    icons = IconSet(ICONS, {"1f44d": "thumbs-up", "1f44d-1f3fd": "thumbs-up"})
    assert icons.find(make_entry("thumbs up", "1F44D")) == "thumbs-up"
    assert icons.find(make_entry("thumbs up", "1F44D-1F3FD", base=False)) == "thumbs-up"  # code point match
    assert icons.find(make_entry("red heart", "2764-FE0F")) == "red-heart"  # label
    assert icons.find(make_entry("thumbs-up sign", "1F000", captions=("plus one",))) == "plus-one"  # alias
    assert icons.find(make_entry("admission tickets", "1F39F-FE0F")) == "admissiontickets"  # FxEmoji's run-on
    assert icons.find(make_entry("flag Japan", "1F1EF-1F1F5")) == "flag-for-japan"  # EmojiOne's flags
    # A skin-tone variant is taken by code point only: a name match would draw it in the default tone.
    assert icons.find(make_entry("red heart", "2764-1F3FD", base=False)) is None
    assert icons.find(make_entry("pizza", "1F355")) is None


def test_svg_resolves_aliases_and_flips_and_renders_at_64_px():
    icons = IconSet(ICONS)
    left = pixels(render_png(icons.svg("pointing-left")))
    right = pixels(render_png(icons.svg("pointing-right")))
    assert left.shape == (64, 64, 4)
    assert (left[32, 8] == [0, 0, 255, 255]).all() and left[32, 56, 3] == 0  # blue left, transparent right
    assert np.array_equal(right, left[:, ::-1])  # the alias is the mirror image
    with pytest.raises(ValueError, match="rotates"):
        IconSet({**ICONS, "aliases": {"turned": {"parent": "red-heart", "rotate": 1}}}).svg("turned")


def test_build_an_svg_style_offline(tmp_path, npm_cache):
    google_datasource(npm_cache)
    art = SVG_ARTWORK["openmoji"]
    icons = {"prefix": "openmoji", "width": 36, "height": 36,
             "icons": {"red-heart": {"body": RED_SQUARE}, "thumbs-up": {"body": RED_SQUARE}}}
    tarball(npm_cache / f"iconify-json-openmoji-{art.version}.tgz", art.package, art.version,
            {"icons.json": json.dumps(icons).encode(), "chars.json": json.dumps({"1f44d-1f3fd": "thumbs-up"}).encode()})
    out = tmp_path / "corpus"
    summary = build_emoji_corpus(out, styles=("openmoji",), cache=npm_cache)
    counts = summary["styles"]["openmoji"]
    assert (counts["base_classes"], counts["skin_tone_variants"]) == (2, 1)
    records = read_records(out / "openmoji" / "captions.jsonl")
    assert [r.label for r in records] == ["red heart", "thumbs up", "thumbs up"]
    assert records[2].caption == "thumbs up: medium skin tone"
    image = Image.open(records[0].path)
    assert image.size == (64, 64) and image.getpixel((32, 32)) == (255, 0, 0, 255)
    skipped = [json.loads(line) for line in (out / "openmoji" / "skipped.jsonl").read_text().splitlines()]
    assert any(s["reason"] == "@iconify-json/openmoji has no icon for it" for s in skipped)
    attribution = (out / "ATTRIBUTION.md").read_text()
    assert "CC BY-SA 4.0" in attribution and f"`@iconify-json/openmoji@{art.version}`" in attribution
    assert "rendered from SVG to 64-px PNG with resvg" in attribution


def test_fluent_colour_borrows_the_flat_sets_code_points(tmp_path, npm_cache):
    """Iconify's Fluent colour set has no chars.json; its flat twin's names the same icons, skin tones too."""
    google_datasource(npm_cache)
    icons = {"width": 32, "height": 32, "icons": {"thumbs-up-medium": {"body": RED_SQUARE}}}
    flat, colour = SVG_ARTWORK["fluent-flat"], SVG_ARTWORK["fluent-color"]
    tarball(npm_cache / f"iconify-json-fluent-emoji-flat-{flat.version}.tgz", flat.package, flat.version,
            {"icons.json": json.dumps(icons).encode(), "chars.json": json.dumps({"1f44d-1f3fd": "thumbs-up-medium"})
             .encode()})
    tarball(npm_cache / f"iconify-json-fluent-emoji-{colour.version}.tgz", colour.package, colour.version,
            {"icons.json": json.dumps(icons).encode()})
    build_emoji_corpus(tmp_path / "corpus", styles=("fluent-color",), cache=npm_cache)
    records = read_records(tmp_path / "corpus" / "fluent-color" / "captions.jsonl")
    assert [r.caption for r in records] == ["thumbs up: medium skin tone"]


def test_twemoji_is_never_a_training_style():
    """Twemoji is the held-out style: no SVG set may be Twemoji (or derived from it)."""
    assert not any("twemoji" in (art.package + art.source_url).lower() for art in SVG_ARTWORK.values())
