"""More emoji styles for training: open SVG emoji sets from Iconify's npm packages, rendered to 64-px PNGs.

The emoji-datasource packages ship bitmaps of four styles, two of them open (Noto, Twemoji).
Other open emoji artwork exists only as SVG: OpenMoji, Microsoft's Fluent Emoji, EmojiOne 1 and 2,
Noto's older "blob" set, Mozilla's FxEmoji and Streamline's emoji. Iconify collects each as one
npm package `@iconify-json/<set>` whose `icons.json` holds every icon's SVG body under a
slug of its name ("red-heart"), and whose `chars.json` (where there is one) maps code points
to those names. Twemoji's Iconify set is deliberately absent: Twemoji is the held-out style.

An emoji's icon is found by code point where the set has `chars.json` (Fluent's colour set
borrows its flat twin's, which names the same icons), else by the slug of
its label, its Unicode name or one of its short names ("red heart" -> "red-heart"; FxEmoji
runs the words together: "redheart"). Labels and captions are the emoji-datasource ones, so
every style shares the same classes. Rendering uses the `resvg-py` package (an optional
dependency: `pip install 'vlm-vision[emoji]'`), at 64 px like the bitmap styles.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .names import IMAGE_SIZE, Artwork, EmojiEntry, EmojiFetchError, unified_key


@dataclass(frozen=True)
class SvgArtwork(Artwork):
    """An Iconify emoji set: `package` is `@iconify-json/<set>`, `version` the release this project pins."""

    version: str = ""
    chars_from: str = ""  # another style whose chars.json names this set's icons (this one has none)

    def provenance(self, version: str) -> list[str]:
        """Where the SVGs came from (the pinned Iconify release, whatever emoji-datasource `version` is)."""
        return [f"- Taken from: npm package `{self.package}@{self.version}` (https://github.com/iconify/icon-sets)",
                f"- Changes: rendered from SVG to {IMAGE_SIZE}-px PNG with resvg; files named by code point."]


def _iconify(iconify_set: str, version: str, title: str, holder: str, licence: str, licence_url: str,
             source_url: str, chars_from: str = "") -> SvgArtwork:
    return SvgArtwork(package=f"@iconify-json/{iconify_set}", version=version, title=title, holder=holder,
                      licence=licence, licence_url=licence_url, source_url=source_url, chars_from=chars_from)


CC_BY = ("Creative Commons Attribution 4.0 International (CC BY 4.0)", "https://creativecommons.org/licenses/by/4.0/")
CC_BY_SA = ("Creative Commons Attribution-ShareAlike 4.0 International (CC BY-SA 4.0)",
            "https://creativecommons.org/licenses/by-sa/4.0/")
APACHE = ("Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0")
MIT = ("MIT License", "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE")

SVG_ARTWORK = {
    "openmoji": _iconify("openmoji", "1.2.29", "OpenMoji", "OpenMoji (HfG Schwäbisch Gmünd) and contributors",
                         *CC_BY_SA, "https://github.com/hfg-gmuend/openmoji"),
    "fluent-flat": _iconify("fluent-emoji-flat", "1.2.6", "Fluent Emoji, Flat style (Microsoft)",
                            "Microsoft Corporation", *MIT, "https://github.com/microsoft/fluentui-emoji"),
    "fluent-color": _iconify("fluent-emoji", "1.2.7", "Fluent Emoji, Color style (Microsoft)",
                             "Microsoft Corporation", *MIT, "https://github.com/microsoft/fluentui-emoji",
                             chars_from="fluent-flat"),  # the flat set's icon names, skin tones included
    "emojione": _iconify("emojione", "1.2.3", "EmojiOne 2 (as continued by Emoji Two)", "Ranks.com Inc. (EmojiOne)",
                         *CC_BY, "https://github.com/EmojiTwo/emojitwo"),
    "emojione-v1": _iconify("emojione-v1", "1.2.3", "EmojiOne 1 (legacy)", "Ranks.com Inc. (EmojiOne)",
                            *CC_BY_SA, "https://github.com/joypixels/emojione-legacy"),
    "noto-blob": _iconify("noto-v1", "1.2.5", "Noto Emoji, the older \"blob\" design (Google)",
                          "Google Inc. and the Noto Emoji contributors", *APACHE,
                          "https://github.com/googlefonts/noto-emoji"),
    "fxemoji": _iconify("fxemoji", "1.2.2", "FxEmoji (Mozilla, Firefox OS)", "Mozilla Foundation", *APACHE,
                        "https://github.com/mozilla/fxemoji"),
    "streamline": _iconify("streamline-emojis", "1.2.4", "Streamline Emojis", "Webalys LLC (Streamline)", *CC_BY,
                           "https://github.com/webalys-hq/streamline-vectors"),
}


def slug(text: str) -> str:
    """Iconify's icon name for an emoji name: 'Face with tears of joy' -> 'face-with-tears-of-joy'.

    Accents are dropped and apostrophes closed up: 'flag Côte d’Ivoire' -> 'flag-cote-divoire'.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower().replace("'", "")).strip("-")


class IconSet:
    """The icons of one Iconify set (its icons.json and chars.json), looked up per emoji and drawn as SVG."""

    def __init__(self, icons_json: Mapping[str, Any], chars_json: Mapping[str, str] | None = None):
        self.icons: dict[str, Mapping[str, Any]] = dict(icons_json["icons"])
        self.aliases: dict[str, Mapping[str, Any]] = dict(icons_json.get("aliases") or {})
        self.width = icons_json.get("width", 16)
        self.height = icons_json.get("height", 16)
        self.by_code = {unified_key(code): name for code, name in (chars_json or {}).items()}
        # FxEmoji names run words together ("redheart"); index every name without dashes too.
        self.by_squashed = {name.replace("-", ""): name for name in [*self.icons, *self.aliases]}

    def find(self, entry: EmojiEntry) -> str | None:
        """The icon name of `entry`: by code point, else by its label, Unicode name or short names."""
        if unified_key(entry.unified) in self.by_code:
            return self.by_code[unified_key(entry.unified)]
        if not entry.base:  # a skin-tone variant is only taken by code point: names don't say the tone
            return None
        for text in (entry.label, entry.name, *entry.captions):
            name = slug(text)
            # EmojiOne names flags "flag-for-<country>"; FxEmoji runs the words together.
            for candidate in (name, "flag-for-" + name.removeprefix("flag-")):
                if candidate in self.icons or candidate in self.aliases:
                    return candidate
            if name.replace("-", "") in self.by_squashed:
                return self.by_squashed[name.replace("-", "")]
        return None

    def svg(self, name: str) -> str:
        """A standalone SVG document of icon `name`, resolving aliases and their flips."""
        h_flip = v_flip = False
        while name in self.aliases:
            alias = self.aliases[name]
            if alias.get("rotate"):
                raise ValueError(f"icon alias {name!r} rotates its parent; not supported")
            h_flip ^= bool(alias.get("hFlip"))
            v_flip ^= bool(alias.get("vFlip"))
            name = alias["parent"]
        icon = self.icons[name]
        left, top = icon.get("left", 0), icon.get("top", 0)
        width, height = icon.get("width", self.width), icon.get("height", self.height)
        h_flip ^= bool(icon.get("hFlip"))
        v_flip ^= bool(icon.get("vFlip"))
        body = icon["body"]
        if h_flip or v_flip:
            sx, sy = (-1 if h_flip else 1), (-1 if v_flip else 1)
            tx, ty = (2 * left + width if h_flip else 0), (2 * top + height if v_flip else 0)
            body = f'<g transform="translate({tx} {ty}) scale({sx} {sy})">{body}</g>'
        return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                f'viewBox="{left} {top} {width} {height}">{body}</svg>')


def require_renderer() -> None:
    """Raise EmojiFetchError saying what to install where resvg, which draws the SVG styles, is missing."""
    try:
        import resvg_py  # noqa: F401
    except ImportError as e:
        raise EmojiFetchError(
            "Rendering the SVG emoji styles needs the resvg-py package: pip install 'vlm-vision[emoji]' "
            "(or pip install resvg-py), or build only the bitmap styles (--styles google twitter)"
        ) from e


def render_png(svg: str, size: int = IMAGE_SIZE) -> bytes:
    """An SVG document as a size x size RGBA PNG (transparent background), drawn by resvg."""
    require_renderer()
    import resvg_py

    return bytes(resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, skip_system_fonts=True))


def load_icon_set(members: Mapping[str, bytes]) -> IconSet:
    """An IconSet from the `package/icons.json` and (optional) `package/chars.json` of an Iconify tarball."""
    if "package/icons.json" not in members:
        raise EmojiFetchError("the tarball has no package/icons.json: not an @iconify-json package")
    chars = members.get("package/chars.json")
    return IconSet(json.loads(members["package/icons.json"]), json.loads(chars) if chars else None)
