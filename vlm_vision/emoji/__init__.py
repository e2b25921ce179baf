"""The image-caption corpus of open emoji art that the embedded default model was trained on: names and captions
from Unicode CLDR (`names`), bitmap styles from npm packages (`corpus`), SVG styles rendered (`svg`) and 3D renders
shrunk (`raster`). Command line: `vlm-vision emoji OUT`."""

from .corpus import ALL_STYLES, build_emoji_corpus, default_cache_dir, fetch_npm_package, make_eval_subset
from .names import (
    ARTWORK,
    EmojiEntry,
    EmojiFetchError,
    SkippedEmoji,
    alternative_captions,
    attribution_text,
    cldr_names,
    parse_emoji_json,
    parse_emoji_json_with_skips,
    unified_key,
)

__all__ = [
    "ALL_STYLES",
    "ARTWORK",
    "EmojiEntry",
    "EmojiFetchError",
    "SkippedEmoji",
    "alternative_captions",
    "attribution_text",
    "build_emoji_corpus",
    "cldr_names",
    "default_cache_dir",
    "fetch_npm_package",
    "make_eval_subset",
    "parse_emoji_json",
    "parse_emoji_json_with_skips",
    "unified_key",
]
