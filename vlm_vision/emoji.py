"""Build an image-caption corpus from open emoji artwork (Noto Emoji and Twemoji, 64-px PNGs).

The artwork and its metadata come from the npm packages `emoji-datasource-<style>`
(iamcal/emoji-data: `emoji.json` plus one PNG per emoji), fetched with `npm pack`.
Class names come from Unicode CLDR (via the npm package `unicode-emoji-json`), not from
emoji.json's `name`: for older emoji that field holds the Unicode *character* name, in
which "black" and "white" mean filled and outlined, not colours ("HEAVY BLACK HEART" is
the red heart, "BLACK QUESTION MARK ORNAMENT" the red question mark). A model that learns
colour from captions must not be taught those. Parsing (`parse_emoji_json`) is a pure
function of the JSON, separate from fetching and writing files, so it is tested offline.

Choices, each also recorded per entry in `<style>/skipped.jsonl` where something is left out:
- Label: the CLDR name of the base emoji (e.g. "red heart", "thumbs up", "flag Japan":
  unicode-emoji-json drops CLDR's colon from "flag: Japan"); emoji.json's name, lower-cased,
  where CLDR has none. Skin-tone variants share their base emoji's label; their captions
  name the tone ("thumbs up: medium skin tone").
- Captions: the label first, then emoji.json's name and short names as alternatives, minus
  those naming a colour that the label doesn't (see above), those with fewer than 3 letters,
  and those that two emoji would share (or that are another emoji's label).
- Duplicate labels (emoji.json calls both U+1F935 and its male ZWJ form "MAN IN TUXEDO"):
  every emoji of a colliding group takes its short name ("person in tuxedo", "man in
  tuxedo"); should that still collide, the code points are appended.
- Obsolete entries (`obsoleted_by`: e.g. U+1F3C3 RUNNER, which emoji-data notes was once
  drawn as its male form) are kept: Unicode and CLDR call them gender-neutral ("person
  running") and both styles draw them differently from the male form. The field is kept in
  captions.jsonl so a user can drop them.
- `non_qualified` is the same emoji without its variation selector: same image, not an entry.
- The five skin-tone modifiers (category "Component") are colour swatches, not emoji: skipped.
- An emoji (or skin-tone variant) without an image in a style is skipped for that style.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "16.0.0"  # emoji-datasource-* release: Emoji 16.0 (Sep 2024)
NAMES_PACKAGE = "unicode-emoji-json"
NAMES_VERSION = "0.8.0"  # its Emoji 16.0 release: CLDR names for every emoji of emoji-datasource 16.0.0
IMAGE_SIZE = 64  # the packages ship single-emoji PNGs at 64 px only

# The five Fitzpatrick modifiers, as CLDR names them.
SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}
# An alternative caption naming one of these colours is dropped unless the label names it too.
COLOUR_WORDS = frozenset(
    {"black", "white", "red", "blue", "green", "yellow", "orange", "purple", "brown", "grey", "gray", "pink"}
)
MIN_CAPTION_LETTERS = 3  # shorter alternatives are mostly country codes ("us", "jp") and noise


@dataclass(frozen=True)
class Artwork:
    """Where one style's images come from and under which licence."""

    package: str  # npm package with emoji.json and img/<style>/64/*.png
    title: str
    holder: str  # copyright holder, as the artwork's own licence notice states it
    licence: str
    licence_url: str
    source_url: str
    notes: str = ""


ARTWORK = {
    "google": Artwork(
        package="emoji-datasource-google",
        title="Noto Emoji (Google), v2.048 per the package README",
        holder="Google Inc. and the Noto Emoji contributors",
        licence="Apache License 2.0",
        licence_url="https://www.apache.org/licenses/LICENSE-2.0",
        source_url="https://github.com/googlefonts/noto-emoji",
        notes=(
            "Noto Emoji's flag images come from its third_party/region-flags folder and are in the "
            "public domain or otherwise exempt from copyright "
            "(https://github.com/googlefonts/noto-emoji/blob/main/third_party/region-flags/LICENSE)."
        ),
    ),
    "twitter": Artwork(
        package="emoji-datasource-twitter",
        title="Twemoji (jdecked/twemoji fork of twitter/twemoji), v16.0.1 per the package README",
        holder="2019 Twitter, Inc and other contributors",
        licence="Creative Commons Attribution 4.0 International (CC BY 4.0)",
        licence_url="https://creativecommons.org/licenses/by/4.0/",
        source_url="https://github.com/jdecked/twemoji",
    ),
}
STYLES = tuple(ARTWORK)


class EmojiFetchError(RuntimeError):
    """An npm package can't be fetched or its tarball is unusable; the message says what to do."""


@dataclass(frozen=True)
class EmojiEntry:
    """One emoji image of one style, with its class label and captions."""

    unified: str  # code points, e.g. "1F44D-1F3FD"; also the output file name
    image: str  # file name inside the package's img/<style>/64/
    label: str  # class name; skin-tone variants share their base emoji's
    captions: tuple[str, ...]  # the main caption first
    category: str
    subcategory: str
    base: bool  # False for a skin-tone variant
    name: str  # emoji.json's own name of the base emoji, as given
    skin_tone: str | None = None  # e.g. "medium skin tone", or "light skin tone, dark skin tone"
    obsoleted_by: str | None = None  # emoji.json's `obsoleted_by` of the base emoji

    def to_json(self, path: str) -> dict[str, Any]:
        """The captions.jsonl object of this entry, its image at `path` (relative to the jsonl)."""
        return {
            "path": path,
            "label": self.label,
            "captions": list(self.captions),
            "unified": self.unified,
            "category": self.category,
            "subcategory": self.subcategory,
            "base": self.base,
            "skin_tone": self.skin_tone,
            "name": self.name,
            "obsoleted_by": self.obsoleted_by,
        }


@dataclass(frozen=True)
class SkippedEmoji:
    """An emoji.json entry (or skin-tone variant) left out of one style, and why."""

    unified: str
    name: str
    reason: str


# ---------------------------------------------------------------------------------------------------------------
# Parsing (pure)
# ---------------------------------------------------------------------------------------------------------------


def unified_key(unified: str) -> str:
    """Code points without variation selectors (FE0F), upper case: how both data sources can be matched."""
    return "-".join(cp for cp in unified.upper().split("-") if cp != "FE0F")


def cldr_names(data_by_emoji: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """{unified_key: CLDR name} from unicode-emoji-json's data-by-emoji.json ({emoji: {"name": ...}})."""
    names = {}
    for emoji, info in data_by_emoji.items():
        names[unified_key("-".join(f"{ord(ch):04X}" for ch in emoji))] = info["name"]  # emoji.json pads to 4 digits
    return names


def _words(short_name: str) -> str:
    return " ".join(short_name.replace("_", " ").replace("-", " ").split())


def _colours(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower())) & COLOUR_WORDS


def alternative_captions(label: str, name: str, short_names: Iterable[str]) -> list[str]:
    """emoji.json's name and short names as extra captions, minus misleading colours, noise and repeats."""
    kept: list[str] = []
    seen = {label.casefold()}
    for text in [name.lower(), *(_words(s) for s in short_names)]:
        if text.casefold() in seen or sum(ch.isalpha() for ch in text) < MIN_CAPTION_LETTERS:
            continue
        if _colours(text) - _colours(label):
            logger.debug("Dropped caption %r for %r: it names a colour the label doesn't", text, label)
            continue
        seen.add(text.casefold())
        kept.append(text)
    return kept


def _tone_text(tone_key: str) -> str:
    """'1F3FB-1F3FF' -> 'light skin tone, dark skin tone'; a tone repeated (both people alike) is named once."""
    tones = []
    for code in tone_key.upper().split("-"):
        if code not in SKIN_TONES:
            raise ValueError(f"Unknown skin tone modifier {code!r} in skin_variations key {tone_key!r}")
        if SKIN_TONES[code] not in tones:
            tones.append(SKIN_TONES[code])
    return ", ".join(tones)


def _with_tone(caption: str, tone: str) -> str:
    """CLDR's form: "thumbs up: medium skin tone", but "kiss: man, man, light skin tone" after a list."""
    return f"{caption}, {tone}" if ":" in caption or "," in caption else f"{caption}: {tone}"


def _labels(entries: Sequence[Mapping[str, Any]], names: Mapping[str, str] | None) -> list[str]:
    """One unique label per entry: CLDR name, else emoji.json's name; collisions resolved as the module says."""
    labels = []
    for e in entries:
        cldr = (names or {}).get(unified_key(e["unified"]))
        labels.append(cldr if cldr else e["name"].lower())
    for fallback in (
        lambda e, label: _words(e["short_name"]),
        lambda e, label: f"{label} ({e['unified']})",
    ):
        counts = Counter(labels)
        for i, e in enumerate(entries):
            if counts[labels[i]] > 1:
                labels[i] = fallback(e, labels[i])
    duplicates = [label for label, n in Counter(labels).items() if n > 1]
    assert not duplicates, f"labels still not unique: {duplicates}"
    return labels


def parse_emoji_json_with_skips(
    entries: Sequence[Mapping[str, Any]], style: str, names: Mapping[str, str] | None = None
) -> tuple[list[EmojiEntry], list[SkippedEmoji]]:
    """The images of `style` in emoji.json `entries`, labelled and captioned, and what was skipped and why.

    `names` maps `unified_key` to a CLDR name (see `cldr_names`); without it, labels are
    emoji.json's names, lower-cased. Labels don't depend on the style, so both styles share them.
    """
    flag = f"has_img_{style}"
    if entries and flag not in entries[0]:
        known = sorted(k.removeprefix("has_img_") for k in entries[0] if k.startswith("has_img_"))
        raise ValueError(f"Unknown emoji style {style!r}: emoji.json has images for {', '.join(known)}")
    skipped: list[SkippedEmoji] = []
    emoji = []
    for e in entries:
        if e.get("category") == "Component":
            skipped.append(SkippedEmoji(e["unified"], e["name"], "skin tone swatch (category Component), not an emoji"))
        else:
            emoji.append(e)
    if names is not None:
        unnamed = [e["name"] for e in emoji if unified_key(e["unified"]) not in names]
        if unnamed:
            logger.warning("%d emoji have no CLDR name; using emoji.json's: %s", len(unnamed), unnamed[:5])

    labels = _labels(emoji, names)
    alternatives_of = [
        alternative_captions(label, e["name"], e.get("short_names") or [e["short_name"]])
        for e, label in zip(emoji, labels)
    ]
    # A caption shared by two emoji (emoji.json calls U+1F935 "MAN IN TUXEDO", the label of
    # another) would tell the model two different images are the same: keep it for neither.
    shared = Counter(a.casefold() for alternatives in alternatives_of for a in alternatives)
    shared.update(label.casefold() for label in labels)
    parsed: list[tuple[tuple[int, int], EmojiEntry]] = []
    for e, label, alternatives in zip(emoji, labels, alternatives_of):
        alternatives = [a for a in alternatives if shared[a.casefold()] == 1]
        common = dict(
            label=label, category=e["category"], subcategory=e["subcategory"], name=e["name"],
            obsoleted_by=e.get("obsoleted_by"),
        )
        if e.get(flag):
            captions = (label, *alternatives)
            parsed.append(((e["sort_order"], 0), EmojiEntry(e["unified"], e["image"], captions=captions,
                                                            base=True, **common)))
        else:
            skipped.append(SkippedEmoji(e["unified"], e["name"], f"no {style} image ({flag} is false)"))
        for n, (tone_key, variant) in enumerate((e.get("skin_variations") or {}).items(), start=1):
            tone = _tone_text(tone_key)
            if not variant.get(flag):
                reason = f"no {style} image ({flag} is false)"
                skipped.append(SkippedEmoji(variant["unified"], f"{e['name']}, {tone}", reason))
                continue
            captions = (_with_tone(label, tone), *(f"{a}, {tone}" for a in alternatives))
            parsed.append(((e["sort_order"], n), EmojiEntry(variant["unified"], variant["image"], captions=captions,
                                                            base=False, skin_tone=tone, **common)))
    parsed.sort(key=lambda item: item[0])
    return [entry for _, entry in parsed], skipped


def parse_emoji_json(
    entries: Sequence[Mapping[str, Any]], style: str, names: Mapping[str, str] | None = None
) -> list[EmojiEntry]:
    """The images of `style` in emoji.json `entries`, labelled and captioned (see the module docstring)."""
    return parse_emoji_json_with_skips(entries, style, names)[0]


def attribution_text(styles: Sequence[str], version: str, licences: Mapping[str, str]) -> str:
    """ATTRIBUTION.md for images of `styles`; `licences` maps npm package name to its LICENSE text."""
    lines = ["# Attribution", ""]
    lines += ["The emoji images in this folder are unchanged 64-px PNGs from the npm packages named below,",
              "renamed to `<code points>.png`. Each artwork keeps its own licence:", ""]
    for style in styles:
        art = ARTWORK[style]
        lines += [
            f"## {style}: {art.title}",
            "",
            f"- Copyright: {art.holder}",
            f"- Licence: {art.licence}, {art.licence_url}",
            f"- Source: {art.source_url}",
            f"- Taken from: npm package `{art.package}@{version}` (https://github.com/iamcal/emoji-data)",
            "- Changes: none to the pixels; files renamed.",
        ]
        lines += [f"- {art.notes}"] if art.notes else []
        lines.append("")
    lines += [
        "## Metadata",
        "",
        "- Emoji names, short names, categories and code points: `emoji.json` of iamcal/emoji-data",
        "  (https://github.com/iamcal/emoji-data), MIT licence, text below.",
        f"- Class names (CLDR short names): npm package `{NAMES_PACKAGE}@{NAMES_VERSION}`",
        "  (https://github.com/muan/unicode-emoji-json, MIT licence, text below), built from Unicode",
        "  CLDR and emoji data, Copyright Unicode, Inc., Unicode License v3 (https://www.unicode.org/license.txt).",
        "",
    ]
    for package, text in licences.items():
        lines += [f"### LICENSE of `{package}`", "", "```", text.strip(), "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Fetching and writing
# ---------------------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where npm tarballs are kept between runs: $XDG_CACHE_HOME/vlm_vision/npm (~/.cache/... by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlm_vision" / "npm"


def read_tar_members(tarball: Path, wanted: Iterable[str]) -> dict[str, bytes]:
    """{member name: bytes} for the wanted regular files of a .tgz, read in one pass (nothing is extracted)."""
    wanted = set(wanted)
    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                found[member.name] = tar.extractfile(member).read()
    return found


def _tarball_problem(tarball: Path, package: str, version: str) -> str | None:
    """Why `tarball` isn't a complete npm tarball of package@version, or None if it is."""
    try:
        manifest = read_tar_members(tarball, ["package/package.json"]).get("package/package.json")
    except (tarfile.TarError, OSError, EOFError) as e:  # gzip and tar errors of truncated or corrupt files
        return f"not a readable .tgz ({type(e).__name__}: {e})"
    if manifest is None:
        return "no package/package.json inside"
    meta = json.loads(manifest)
    if (meta.get("name"), meta.get("version")) != (package, version):
        return f"it holds {meta.get('name')}@{meta.get('version')}, not {package}@{version}"
    return None


def fetch_npm_package(package: str, version: str, cache: Path) -> Path:
    """The path of `package@version`'s tarball in `cache`, running `npm pack` unless a valid one is there."""
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"{package}-{version}.tgz"  # the name `npm pack` gives an unscoped package
    if tarball.exists():
        problem = _tarball_problem(tarball, package, version)
        if problem is None:
            logger.info("Using cached %s", tarball)
            return tarball
        logger.warning("Cached %s is unusable (%s); fetching it again", tarball, problem)
        tarball.unlink()
    npm = shutil.which("npm")
    if npm is None:
        raise EmojiFetchError(
            f"npm isn't on PATH: install Node.js and npm, or run `npm pack {package}@{version}` "
            f"elsewhere and put {tarball.name} into {cache}"
        )
    logger.info("Fetching %s@%s with npm pack into %s", package, version, cache)
    result = subprocess.run(
        [npm, "pack", f"{package}@{version}", "--loglevel=error"], cwd=cache, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise EmojiFetchError(
            f"`npm pack {package}@{version}` failed with exit code {result.returncode}; check the name, "
            f"the version and your access to the npm registry. npm said:\n{result.stderr.strip()[-2000:]}"
        )
    problem = _tarball_problem(tarball, package, version) if tarball.exists() else "npm pack wrote no such file"
    if problem is not None:
        raise EmojiFetchError(f"`npm pack {package}@{version}` gave no usable {tarball}: {problem}")
    return tarball


def _replace_dir(staging: Path, target: Path) -> None:
    """Move a finished `staging` folder to `target`, replacing a corpus folder written earlier (never other data)."""
    if target.exists():
        if not (target / "captions.jsonl").is_file():
            raise FileExistsError(
                f"{target} exists and isn't a corpus folder written by this tool (no captions.jsonl): "
                f"remove it or choose another output folder"
            )
        shutil.rmtree(target)
    staging.rename(target)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _write_jsonl(file: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with open(file, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_style(
    tarball: Path, style: str, entries: list[EmojiEntry], skipped: list[SkippedEmoji], out: Path
) -> dict[str, int]:
    """Write out/<style>/{images/, captions.jsonl, skipped.jsonl} from the tarball; return its counts."""
    staging = out / f".{style}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    (staging / "images").mkdir(parents=True)
    prefix = f"package/img/{style}/{IMAGE_SIZE}/"
    files = read_tar_members(tarball, [prefix + e.image for e in entries])
    written = []
    for entry in entries:
        data = files.get(prefix + entry.image)
        if data is None:
            skipped.append(SkippedEmoji(entry.unified, entry.name, f"{prefix + entry.image} is not in {tarball.name}"))
            continue
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # a corrupt PNG fails here, not in someone's training run
        except (OSError, SyntaxError, ValueError) as e:
            skipped.append(SkippedEmoji(entry.unified, entry.name, f"the PNG can't be decoded ({e})"))
            continue
        (staging / "images" / f"{entry.unified}.png").write_bytes(data)
        written.append(entry)
    _write_jsonl(staging / "captions.jsonl", (e.to_json(f"images/{e.unified}.png") for e in written))
    _write_jsonl(staging / "skipped.jsonl", (asdict(s) for s in skipped))
    _replace_dir(staging, out / style)
    counts = {
        "base_classes": sum(e.base for e in written),
        "skin_tone_variants": sum(not e.base for e in written),
        "images": len(written),
        "skipped": len(skipped),
        "bytes": _folder_bytes(out / style),
    }
    logger.info("%s: %s", style, counts)
    return counts


def build_emoji_corpus(
    out: Path,
    styles: Sequence[str] = ("google", "twitter"),
    cache: Path | None = None,
    version: str = DEFAULT_VERSION,
) -> dict[str, Any]:
    """Fetch the emoji packages and write `out/<style>/{images/, captions.jsonl, skipped.jsonl}` per style.

    Also writes `out/ATTRIBUTION.md` (licences of the artwork and metadata) and `out/corpus.json`
    (versions and counts, which `make_eval_subset` reads). Returns that summary dict.
    """
    unknown = [s for s in styles if s not in ARTWORK]
    if unknown or not styles:
        raise ValueError(f"Unknown or no emoji styles {list(styles)!r}: choose from {', '.join(STYLES)}")
    out, cache = Path(out), Path(cache) if cache is not None else default_cache_dir()
    out.mkdir(parents=True, exist_ok=True)

    names_tarball = fetch_npm_package(NAMES_PACKAGE, NAMES_VERSION, cache)
    names_members = read_tar_members(names_tarball, ["package/data-by-emoji.json", "package/LICENSE"])
    names = cldr_names(json.loads(names_members["package/data-by-emoji.json"]))

    summary: dict[str, Any] = {"version": version, "names_version": NAMES_VERSION, "styles": {}}
    for style in styles:
        tarball = fetch_npm_package(ARTWORK[style].package, version, cache)
        members = read_tar_members(tarball, ["package/emoji.json", "package/LICENSE"])
        entries, skipped = parse_emoji_json_with_skips(json.loads(members["package/emoji.json"]), style, names)
        summary["styles"][style] = _write_style(tarball, style, entries, skipped, out)

    # The emoji-datasource-* packages all carry emoji-data's one MIT licence: the last one read stands for all.
    licences = {
        "emoji-datasource (iamcal/emoji-data)": members["package/LICENSE"].decode(),
        NAMES_PACKAGE: names_members["package/LICENSE"].decode(),
    }
    summary["licences"] = licences
    (out / "ATTRIBUTION.md").write_text(attribution_text(styles, version, licences), encoding="utf-8")
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def make_eval_subset(corpus: Path, out: Path, style: str = "twitter", count: int = 300) -> dict[str, Any]:
    """Copy `count` base emoji of one style, evenly spaced in label order, to `out/<style>/`, with attribution.

    Every (n / count)-th label of the sorted base labels: a fixed, deterministic spread over all
    categories, so a regression test set stays the same as long as the corpus version does.
    """
    corpus, out = Path(corpus), Path(out)
    manifest_file = corpus / "corpus.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{manifest_file} is missing: build the corpus first with build_emoji_corpus")
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    with open(corpus / style / "captions.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    base = sorted((r for r in rows if r["base"]), key=lambda r: (r["label"].casefold(), r["unified"]))
    if not 0 < count <= len(base):
        raise ValueError(f"count must be in [1, {len(base)}] (the base emoji of {style}), got {count}")
    chosen = [base[i * len(base) // count] for i in range(count)]

    staging = out / f".{style}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "images").mkdir(parents=True)
    for row in chosen:
        shutil.copyfile(corpus / style / row["path"], staging / row["path"])
    _write_jsonl(staging / "captions.jsonl", chosen)
    _replace_dir(staging, out / style)
    text = attribution_text([style], manifest["version"], manifest["licences"])
    (out / "ATTRIBUTION.md").write_text(text, encoding="utf-8")
    summary = {"style": style, "images": len(chosen), "bytes": _folder_bytes(out / style)}
    logger.info("Eval subset: %s", summary)
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------

EXAMPLE = """example:
  python -m vlm_vision.emoji ~/emoji-corpus --styles google twitter --cache ~/.cache/npm-tarballs

writes ~/emoji-corpus/<style>/images/<code points>.png, <style>/captions.jsonl (readable by
vlm_vision.data.read_records), <style>/skipped.jsonl, ATTRIBUTION.md and corpus.json.
Needs npm (Node.js) and access to the npm registry, unless the tarballs are in the cache."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vlm_vision.emoji",
        description="Build an image-caption corpus from open emoji artwork (Noto Emoji, Twemoji).",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder (created if needed)")
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=STYLES, help="artwork styles to build")
    parser.add_argument("--cache", type=Path, default=None,
                        help=f"folder for the npm tarballs (default: {default_cache_dir()})")
    parser.add_argument("--version", default=DEFAULT_VERSION, help="emoji-datasource-* version (default: %(default)s)")
    parser.add_argument("--eval-subset", type=Path, default=None, metavar="DIR",
                        help="also copy a fixed subset of base emoji to DIR/<style>/ for regression tests")
    parser.add_argument("--eval-style", default="twitter", choices=STYLES, help="style of the eval subset")
    parser.add_argument("--eval-count", type=int, default=300, help="images in the eval subset (default: 300)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = build_emoji_corpus(args.out, args.styles, args.cache, args.version)
        for style, counts in summary["styles"].items():
            print(f"{style}: {counts['base_classes']} base classes, {counts['images']} images "
                  f"({counts['skin_tone_variants']} skin-tone variants), {counts['skipped']} skipped, "
                  f"{counts['bytes'] / 1e6:.1f} MB in {args.out / style}")
        if args.eval_subset is not None:
            subset = make_eval_subset(args.out, args.eval_subset, args.eval_style, args.eval_count)
            print(f"eval subset: {subset['images']} {subset['style']} images, {subset['bytes'] / 1e6:.2f} MB "
                  f"in {args.eval_subset / subset['style']}")
    except (EmojiFetchError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
