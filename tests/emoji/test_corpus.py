"""The emoji corpus: emoji.json parsing, the offline builder, and the emoji committed under data/."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm_vision.emoji import (
    EmojiFetchError,
    alternative_captions,
    build_emoji_corpus,
    cldr_names,
    corpus,
    fetch_npm_package,
    make_eval_subset,
    parse_emoji_json,
    parse_emoji_json_with_skips,
    unified_key,
)
from vlm_vision.model.processor import load_image
from vlm_vision.training.data import read_records

DATA = Path(__file__).resolve().parents[2] / "data"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# emoji.json parsing (pure)
# ---------------------------------------------------------------------------------------------------------------


def entry(name, unified, short_names, google=True, twitter=True, **extra):
    """An emoji.json entry with the fields parse_emoji_json reads, shaped like the real ones."""
    return {
        "name": name, "unified": unified, "non_qualified": None, "image": unified.lower() + ".png",
        "short_name": short_names[0], "short_names": short_names, "category": extra.pop("category", "Symbols"),
        "subcategory": extra.pop("subcategory", "other"), "sort_order": extra.pop("sort_order"),
        "has_img_google": google, "has_img_twitter": twitter, **extra,
    }


def variation(unified, google=True, twitter=True):
    return {"unified": unified, "image": unified.lower() + ".png", "has_img_google": google, "has_img_twitter": twitter}


ENTRIES = [
    entry("HEAVY BLACK HEART", "2764-FE0F", ["heart"], sort_order=1),
    entry("THUMBS UP SIGN", "1F44D", ["+1", "thumbsup"], sort_order=2, skin_variations={
        "1F3FD": variation("1F44D-1F3FD"),
        "1F3FB": variation("1F44D-1F3FB", twitter=False),
    }),
    entry("HANDSHAKE", "1F91D", ["handshake"], sort_order=3, skin_variations={
        "1F3FB-1F3FF": variation("1FAF1-1F3FB-200D-1FAF2-1F3FF"),
        "1F3FB-1F3FB": variation("1F91D-1F3FB"),
    }),
    entry("MAN IN TUXEDO", "1F935", ["person_in_tuxedo"], sort_order=4),
    entry("MAN IN TUXEDO", "1F935-200D-2642-FE0F", ["man_in_tuxedo"], sort_order=5),
    entry("GOOGLE ONLY", "1FAE8", ["shaking_face"], twitter=False, sort_order=6),
    entry("RUNNER", "1F3C3", ["runner", "running"], sort_order=7, obsoleted_by="1F3C3-200D-2642-FE0F"),
    entry("United States Flag", "1F1FA-1F1F8", ["us", "flag-us"], sort_order=8, category="Flags"),
    entry("EMOJI MODIFIER FITZPATRICK TYPE-4", "1F3FD", ["skin-tone-4"], sort_order=9, category="Component"),
]
NAMES = cldr_names({
    "\u2764\ufe0f": {"name": "red heart"},
    "\U0001F44D": {"name": "thumbs up"},
    "\U0001F91D": {"name": "handshake"},
    "\U0001F935": {"name": "person in tuxedo"},
    "\U0001F935\u200d\u2642\ufe0f": {"name": "man in tuxedo"},
    "\U0001F3C3": {"name": "person running"},
    "\U0001F1FA\U0001F1F8": {"name": "flag United States"},
})


def test_parse_emoji_json_labels_captions_and_flags():
    entries, skipped = parse_emoji_json_with_skips(ENTRIES, "twitter", NAMES)
    got = {e.unified: (e.label, e.captions, e.base, e.skin_tone) for e in entries}
    assert got == {
        # "heavy black heart" is the red heart's Unicode name: a wrong colour, so not a caption.
        "2764-FE0F": ("red heart", ("red heart", "heart"), True, None),
        "1F44D": ("thumbs up", ("thumbs up", "thumbs up sign", "thumbsup"), True, None),
        "1F44D-1F3FD": (
            "thumbs up",
            ("thumbs up: medium skin tone", "thumbs up sign, medium skin tone", "thumbsup, medium skin tone"),
            False, "medium skin tone",
        ),
        "1F91D": ("handshake", ("handshake",), True, None),
        "1FAF1-1F3FB-200D-1FAF2-1F3FF": (
            "handshake", ("handshake: light skin tone, dark skin tone",), False, "light skin tone, dark skin tone",
        ),
        "1F91D-1F3FB": ("handshake", ("handshake: light skin tone",), False, "light skin tone"),
        # Both are "MAN IN TUXEDO" in emoji.json: that caption would be shared, so neither keeps it.
        "1F935": ("person in tuxedo", ("person in tuxedo",), True, None),
        "1F935-200D-2642-FE0F": ("man in tuxedo", ("man in tuxedo",), True, None),
        "1F3C3": ("person running", ("person running", "runner", "running"), True, None),
        "1F1FA-1F1F8": ("flag United States", ("flag United States", "united states flag", "flag us"), True, None),
    }
    assert [e.unified for e in entries][:4] == ["2764-FE0F", "1F44D", "1F44D-1F3FD", "1F91D"]  # emoji.json's order
    assert next(e for e in entries if e.unified == "1F3C3").obsoleted_by == "1F3C3-200D-2642-FE0F"
    assert next(e for e in entries if e.unified == "1F44D-1F3FD").image == "1f44d-1f3fd.png"
    reasons = {s.unified: s.reason for s in skipped}
    assert reasons == {
        "1F3FD": "skin tone swatch (category Component), not an emoji",
        "1F44D-1F3FB": "no twitter image (has_img_twitter is false)",
        "1FAE8": "no twitter image (has_img_twitter is false)",
    }
    google = {e.unified for e in parse_emoji_json(ENTRIES, "google", NAMES)}
    assert "1FAE8" in google and "1F44D-1F3FB" in google


def test_parse_emoji_json_without_cldr_names_resolves_duplicate_names():
    labels = {e.unified: e.label for e in parse_emoji_json(ENTRIES, "google") if e.base}
    assert labels["2764-FE0F"] == "heavy black heart"  # emoji.json's name, lower-cased
    assert (labels["1F935"], labels["1F935-200D-2642-FE0F"]) == ("person in tuxedo", "man in tuxedo")
    twins = [entry("SAME", "A1", ["same"], sort_order=1), entry("SAME", "A2", ["same"], sort_order=2)]
    assert [e.label for e in parse_emoji_json(twins, "google")] == ["same (A1)", "same (A2)"]


def test_parse_emoji_json_rejects_unknown_styles_and_tones():
    with pytest.raises(ValueError, match="Unknown emoji style 'facebook': emoji.json has images for google, twitter"):
        parse_emoji_json(ENTRIES, "facebook")
    odd = [entry("WAVE", "1F44B", ["wave"], sort_order=1, skin_variations={"1F3FA": variation("1F44B-1F3FA")})]
    with pytest.raises(ValueError, match="Unknown skin tone modifier '1F3FA'"):
        parse_emoji_json(odd, "google")


def test_name_helpers():
    assert unified_key("0023-fe0f-20e3") == "0023-20E3"
    assert cldr_names({"#\ufe0f\u20e3": {"name": "keycap #"}}) == {"0023-20E3": "keycap #"}
    assert alternative_captions("sun", "black sun with rays", ["sunny"]) == ["sunny"]
    assert alternative_captions("black heart", "BLACK HEART", ["black_heart"]) == []
    assert alternative_captions("flag Japan", "Japan Flag", ["jp", "flag-jp"]) == ["japan flag", "flag jp"]


# ---------------------------------------------------------------------------------------------------------------
# The corpus builder, offline: hand-made npm tarballs in its cache
# ---------------------------------------------------------------------------------------------------------------


def tarball(path: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """An npm-style .tgz: everything under package/, with a package.json naming package@version."""
    files = {"package.json": json.dumps({"name": package, "version": version}).encode(), **files}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def google_datasource(cache: Path) -> Path:
    """A fake emoji-datasource-google tarball (ENTRIES): the emoji list the SVG and raster styles take."""
    return tarball(cache / "emoji-datasource-google-16.0.0.tgz", "emoji-datasource-google", "16.0.0",
                   {"emoji.json": json.dumps(ENTRIES).encode(), "LICENSE": b"MIT, Cal Henderson\n"})


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), (*colour, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def npm_cache(tmp_path):
    """A cache holding fake unicode-emoji-json and emoji-datasource-twitter tarballs (ENTRIES, NAMES)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    data_by_emoji = {
        "".join(chr(int(cp, 16)) for cp in key.split("-")): {"name": name} for key, name in NAMES.items()
    }
    tarball(cache / "unicode-emoji-json-0.8.0.tgz", "unicode-emoji-json", "0.8.0",
            {"data-by-emoji.json": json.dumps(data_by_emoji).encode(), "LICENSE": b"MIT, names\n"})
    images = {}
    for e in ENTRIES:
        for v in [e, *(e.get("skin_variations") or {}).values()]:
            if v["has_img_twitter"]:
                images[f"img/twitter/64/{v['image']}"] = png_bytes((200, 10, 10))
    del images["img/twitter/64/1f1fa-1f1f8.png"]  # flagged as present, but not in the tarball
    images["img/twitter/64/1f3c3.png"] = b"\x89PNG\r\n\x1a\n broken"  # in the tarball, but corrupt
    tarball(cache / "emoji-datasource-twitter-16.0.0.tgz", "emoji-datasource-twitter", "16.0.0",
            {"emoji.json": json.dumps(ENTRIES).encode(), "LICENSE": b"MIT, Cal Henderson\n", **images})
    return cache


def test_build_emoji_corpus_offline(tmp_path, npm_cache, monkeypatch):
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)  # proves npm is never needed with a full cache
    out = tmp_path / "corpus"
    summary = build_emoji_corpus(out, styles=("twitter",), cache=npm_cache)
    assert summary["styles"]["twitter"] == {
        "base_classes": 5, "skin_tone_variants": 3, "images": 8, "skipped": 5,
        "bytes": sum(p.stat().st_size for p in (out / "twitter").rglob("*") if p.is_file()),
    }
    records = read_records(out / "twitter" / "captions.jsonl")
    assert [r.label for r in records][:3] == ["red heart", "thumbs up", "thumbs up"]
    assert records[0].path == out / "twitter" / "images" / "2764-FE0F.png"
    assert records[0].captions == ("red heart", "heart")
    rows = [json.loads(line) for line in (out / "twitter" / "captions.jsonl").read_text().splitlines()]
    assert rows[2]["base"] is False and rows[2]["skin_tone"] == "medium skin tone"
    skipped = {s["unified"]: s["reason"] for s in map(json.loads, (out / "twitter" / "skipped.jsonl").open())}
    assert skipped["1F1FA-1F1F8"] == (
        "package/img/twitter/64/1f1fa-1f1f8.png is not in emoji-datasource-twitter-16.0.0.tgz"
    )
    assert skipped["1F3C3"].startswith("the PNG can't be decoded")
    attribution = (out / "ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in attribution and "Twitter, Inc and other contributors" in attribution
    assert "Noto" not in attribution and "MIT, Cal Henderson" in attribution
    # A second run replaces the corpus; a folder that isn't one is never deleted.
    build_emoji_corpus(out, styles=("twitter",), cache=npm_cache)
    assert sorted(p.name for p in out.iterdir()) == ["ATTRIBUTION.md", "corpus.json", "twitter"]
    other = tmp_path / "other"
    (other / "twitter").mkdir(parents=True)
    write(other / "twitter" / "keep.txt", "mine")
    with pytest.raises(FileExistsError, match="isn't a corpus folder written by this tool"):
        build_emoji_corpus(other, styles=("twitter",), cache=npm_cache)
    assert (other / "twitter" / "keep.txt").read_text() == "mine"

    subset = make_eval_subset(out, tmp_path / "eval", "twitter", count=2)
    chosen = read_records(tmp_path / "eval" / "twitter" / "captions.jsonl")
    assert subset["images"] == 2 and [r.label for r in chosen] == ["handshake", "person in tuxedo"]  # 0th, 2nd of 5
    assert "CC BY 4.0" in (tmp_path / "eval" / "ATTRIBUTION.md").read_text()
    with pytest.raises(ValueError, match=r"count must be in \[1, 5\]"):
        make_eval_subset(out, tmp_path / "eval", "twitter", count=6)


def test_fetch_refetches_a_bad_cached_tarball_and_explains_a_missing_npm(tmp_path, npm_cache, monkeypatch, caplog):
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    good = fetch_npm_package("unicode-emoji-json", "0.8.0", npm_cache)
    assert good == npm_cache / "unicode-emoji-json-0.8.0.tgz"
    (npm_cache / "emoji-datasource-google-16.0.0.tgz").write_bytes(b"truncated")
    with pytest.raises(EmojiFetchError, match=r"npm isn't on PATH: .*npm pack emoji-datasource-google@16\.0\.0"):
        fetch_npm_package("emoji-datasource-google", "16.0.0", npm_cache)
    assert "is unusable (not a readable .tgz" in caplog.text
    tarball(npm_cache / "x-2.0.0.tgz", "x", "1.0.0", {})
    with pytest.raises(EmojiFetchError):
        fetch_npm_package("x", "2.0.0", npm_cache)
    assert "it holds x@1.0.0, not x@2.0.0" in caplog.text


def test_cli_help_has_an_example_and_runs(tmp_path, npm_cache, monkeypatch, capsys):
    help_text = corpus.build_parser().format_help()
    assert "example:" in help_text and "vlm-vision emoji" in help_text
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    out = tmp_path / "out"
    argv = [str(out), "--styles", "twitter", "--cache", str(npm_cache), "--eval-subset", str(tmp_path / "ev"),
            "--eval-count", "3"]
    assert corpus.main(argv) == 0
    printed = capsys.readouterr().out
    assert "twitter: 5 base classes, 8 images (3 skin-tone variants), 5 skipped" in printed
    assert "eval subset: 3 twitter images" in printed
    assert corpus.main([str(out), "--styles", "twitter", "--cache", str(tmp_path / "empty")]) == 1
    assert "error: npm isn't on PATH" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# The emoji committed under data/
# ---------------------------------------------------------------------------------------------------------------


def test_a_missing_svg_renderer_is_named_before_any_download(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "resvg_py", None)  # as in a plain install, without the [emoji] extra
    monkeypatch.setattr(corpus, "fetch_npm_package", lambda *args: pytest.fail("downloaded before saying"))
    with pytest.raises(EmojiFetchError, match=r"needs the resvg-py package: pip install 'vlm-vision\[emoji\]'"):
        build_emoji_corpus(tmp_path / "out", ["google", "openmoji"], cache=tmp_path / "cache")
    assert not (tmp_path / "out").exists()


def test_committed_eval_subset_loads():
    records = read_records(DATA / "emoji-eval" / "twitter" / "captions.jsonl")
    assert len(records) == 300 and len({r.label for r in records}) == 300
    for record in records:
        assert load_image(record.path).size == (64, 64)
        assert record.captions[0] == record.label
    total = sum(p.stat().st_size for p in (DATA / "emoji-eval").rglob("*") if p.is_file())
    assert total < 1.5e6
    assert "CC BY 4.0" in (DATA / "emoji-eval" / "ATTRIBUTION.md").read_text()


def test_committed_samples_load_and_keep_their_colours():
    attribution = (DATA / "samples" / "ATTRIBUTION.md").read_text()
    samples = sorted((DATA / "samples").glob("*.png"))
    assert len(samples) == 12 and all(f"`{p.name}`" in attribution for p in samples)

    def mean_colour(name: str) -> np.ndarray:
        pixels = np.asarray(load_image(DATA / "samples" / name)).reshape(-1, 3).astype(float)
        return pixels[(pixels < 240).any(1)].mean(0)  # the non-white pixels

    red, blue = mean_colour("red_heart.png"), mean_colour("blue_heart.png")
    assert red[0] > 2 * red[1] and red[0] > 2 * red[2]
    assert blue[2] > 1.5 * blue[0] and blue[2] > blue[1]
