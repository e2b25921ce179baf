"""Labels and captions for emoji, from emoji.json and CLDR names: pure functions, tested offline.

Class names come from Unicode CLDR (via the npm package `unicode-emoji-json`), not from
emoji.json's `name`: for older emoji that field holds the Unicode *character* name, in
which "black" and "white" mean filled and outlined, not colours ("HEAVY BLACK HEART" is
the red heart, "BLACK QUESTION MARK ORNAMENT" the red question mark). A model that learns
colour from captions must not be taught those.

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

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

    def provenance(self, version: str) -> list[str]:
        """The ATTRIBUTION.md lines saying where the images were taken from and how they were changed."""
        return [f"- Taken from: npm package `{self.package}@{version}` (https://github.com/iamcal/emoji-data)",
                "- Changes: none to the pixels; files renamed."]


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


def attribution_text(
    styles: Sequence[str], version: str, licences: Mapping[str, str], artwork: Mapping[str, Artwork] = ARTWORK
) -> str:
    """ATTRIBUTION.md for images of `styles` (keys of `artwork`); `licences` maps package name to LICENSE text."""
    lines = ["# Attribution", ""]
    lines += ["The emoji images in this folder are 64-px PNGs from the npm packages named below,",
              "named `<code points>.png`. Each artwork keeps its own licence:", ""]
    for style in styles:
        art = artwork[style]
        lines += [
            f"## {style}: {art.title}",
            "",
            f"- Copyright: {art.holder}",
            f"- Licence: {art.licence}, {art.licence_url}",
            f"- Source: {art.source_url}",
            *art.provenance(version),
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
