"""Build an image-caption corpus from open emoji artwork (Noto Emoji, Twemoji and more, 64-px PNGs).

The bitmap styles and the metadata come from the npm packages `emoji-datasource-<style>`
(iamcal/emoji-data: `emoji.json` plus one PNG per emoji), fetched with `npm pack`; class
names come from Unicode CLDR (npm package `unicode-emoji-json`). How labels and captions are
chosen is in `names`, whose pure functions this module feeds with the fetched files.
More open styles (OpenMoji, Fluent Emoji, EmojiOne, ...) are SVG sets rendered by `svg`, and
Fluent Emoji's 3D renders are shrunk by `raster`.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image

from ..checkpoints import write_text
from .names import (
    ARTWORK,
    DEFAULT_VERSION,
    IMAGE_SIZE,
    NAMES_PACKAGE,
    NAMES_VERSION,
    EmojiEntry,
    EmojiFetchError,
    SkippedEmoji,
    attribution_text,
    cldr_names,
    parse_emoji_json_with_skips,
    unified_key,
)
from .raster import RASTER_ARTWORK, shrink_png
from .svg import SVG_ARTWORK, load_icon_set, render_png, require_renderer

logger = logging.getLogger(__name__)

ALL_ARTWORK = {**ARTWORK, **SVG_ARTWORK, **RASTER_ARTWORK}
ALL_STYLES = tuple(ALL_ARTWORK)  # emoji-datasource's (google, twitter), the SVG ones, then the raster one



# ---------------------------------------------------------------------------------------------------------------
# Fetching and writing
# ---------------------------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where npm tarballs are kept between runs: $XDG_CACHE_HOME/vlm_vision/npm (~/.cache/... by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlm_vision" / "npm"


def read_tar_members(tarball: Path, wanted: Iterable[str] | Callable[[str], bool]) -> dict[str, bytes]:
    """{member name: bytes} for the wanted regular files of a .tgz (their names, or a test of a name), read in
    one pass (nothing is extracted)."""
    is_wanted = wanted if callable(wanted) else set(wanted).__contains__
    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if is_wanted(member.name) and member.isfile():
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
    tarball = cache / f"{package.removeprefix('@').replace('/', '-')}-{version}.tgz"  # the name `npm pack` gives it
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


def _bitmaps(tarball: Path, style: str, entries: list[EmojiEntry]) -> Iterator[tuple[EmojiEntry, bytes | str]]:
    """(entry, PNG bytes) of an emoji-datasource style, or (entry, why it's missing)."""
    prefix = f"package/img/{style}/{IMAGE_SIZE}/"
    files = read_tar_members(tarball, [prefix + e.image for e in entries])
    for entry in entries:
        yield entry, files.get(prefix + entry.image, f"{prefix + entry.image} is not in {tarball.name}")


def _renderings(style: str, entries: list[EmojiEntry], cache: Path) -> Iterator[tuple[EmojiEntry, bytes | str]]:
    """(entry, PNG rendered from its SVG) of an Iconify style, or (entry, why there is none)."""
    art = SVG_ARTWORK[style]
    members = read_tar_members(fetch_npm_package(art.package, art.version, cache),
                               ["package/icons.json", "package/chars.json"])
    if art.chars_from:
        twin = SVG_ARTWORK[art.chars_from]
        members |= read_tar_members(fetch_npm_package(twin.package, twin.version, cache), ["package/chars.json"])
    icons = load_icon_set(members)
    for entry in entries:
        name = icons.find(entry)
        if name is None:
            yield entry, f"{SVG_ARTWORK[style].package} has no icon for it"
            continue
        try:
            yield entry, render_png(icons.svg(name))
        except ValueError as e:  # resvg's parse errors and unsupported aliases
            yield entry, f"icon {name!r} can't be rendered ({e})"


def _shrunk(style: str, entries: list[EmojiEntry], cache: Path) -> Iterator[tuple[EmojiEntry, bytes | str]]:
    """(entry, 64-px PNG shrunk from its large image) of a raster style, or (entry, why there is none)."""
    art = RASTER_ARTWORK[style]
    art.check_decoder()
    tarball = fetch_npm_package(art.package, art.version, cache)
    members = read_tar_members(tarball, lambda name: art.code_of(name) is not None)
    if not members:
        raise EmojiFetchError(f"{tarball.name} has no {art.folder}*{art.suffix} images: not the package layout "
                              f"this builder knows (pinned: {art.package}@{art.version})")
    by_code = {art.code_of(name): name for name in members}
    for entry in entries:
        member = by_code.get(unified_key(entry.unified))
        if member is None:
            yield entry, f"{art.package} has no image for it"
            continue
        try:
            yield entry, shrink_png(members[member])
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # can't decode
            yield entry, f"{member} can't be used ({e})"


def _write_style(
    style: str, pictures: Iterable[tuple[EmojiEntry, bytes | str]], skipped: list[SkippedEmoji], out: Path
) -> dict[str, int]:
    """Write out/<style>/{images/, captions.jsonl, skipped.jsonl} from (entry, PNG or reason); return its counts."""
    staging = out / f".{style}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    (staging / "images").mkdir(parents=True)
    written = []
    for entry, data in pictures:
        if isinstance(data, str):
            skipped.append(SkippedEmoji(entry.unified, entry.name, data))
            continue
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # a corrupt PNG fails here, not in someone's training run
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
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
    unknown = [s for s in styles if s not in ALL_ARTWORK]
    if unknown or not styles:
        raise ValueError(f"Unknown or no emoji styles {list(styles)!r}: choose from {', '.join(ALL_STYLES)}")
    if any(style in SVG_ARTWORK for style in styles):
        require_renderer()  # before any download: a missing resvg-py used to surface after ~75 MB of them
    out, cache = Path(out), Path(cache) if cache is not None else default_cache_dir()
    out.mkdir(parents=True, exist_ok=True)

    names_tarball = fetch_npm_package(NAMES_PACKAGE, NAMES_VERSION, cache)
    names_members = read_tar_members(names_tarball, ["package/data-by-emoji.json", "package/LICENSE"])
    names = cldr_names(json.loads(names_members["package/data-by-emoji.json"]))

    summary: dict[str, Any] = {"version": version, "names_version": NAMES_VERSION, "styles": {}}
    licences: dict[str, str] = {}
    emoji_json: dict[str, tuple[Path, list[dict[str, Any]]]] = {}  # bitmap style -> (tarball, emoji.json)
    for style in styles:
        # Every style takes its emoji, labels and captions from emoji-datasource's emoji.json; an SVG
        # or raster style takes the list of the Google one (Noto draws every emoji) and finds its own images.
        bitmap_style = style if style in ARTWORK else "google"
        if bitmap_style not in emoji_json:
            datasource = fetch_npm_package(ARTWORK[bitmap_style].package, version, cache)
            members = read_tar_members(datasource, ["package/emoji.json", "package/LICENSE"])
            emoji_json[bitmap_style] = datasource, json.loads(members["package/emoji.json"])
            # The emoji-datasource-* packages all carry emoji-data's one MIT licence: one entry stands for all.
            licences["emoji-datasource (iamcal/emoji-data)"] = members["package/LICENSE"].decode()
        datasource, rows = emoji_json[bitmap_style]
        entries, skipped = parse_emoji_json_with_skips(rows, bitmap_style, names)
        if style in ARTWORK:
            pictures = _bitmaps(datasource, style, entries)
        elif style in SVG_ARTWORK:
            pictures = _renderings(style, entries, cache)
        else:
            pictures = _shrunk(style, entries, cache)
        summary["styles"][style] = _write_style(style, pictures, skipped, out)

    licences[NAMES_PACKAGE] = names_members["package/LICENSE"].decode()
    summary["licences"] = licences
    write_text(out / "ATTRIBUTION.md", attribution_text(styles, version, licences, ALL_ARTWORK))
    write_text(out / "corpus.json", json.dumps(summary, indent=2) + "\n")
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
    text = attribution_text([style], manifest["version"], manifest["licences"], ALL_ARTWORK)
    write_text(out / "ATTRIBUTION.md", text)
    summary = {"style": style, "images": len(chosen), "bytes": _folder_bytes(out / style)}
    logger.info("Eval subset: %s", summary)
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------

EXAMPLE = """example:
  vlm-vision emoji ~/emoji-corpus --styles google twitter openmoji --cache ~/.cache/npm-tarballs

writes ~/emoji-corpus/<style>/images/<code points>.png, <style>/captions.jsonl (readable by
vlm_vision.training.read_records), <style>/skipped.jsonl, ATTRIBUTION.md and corpus.json.
Needs npm (Node.js) and access to the npm registry, unless the tarballs are in the cache."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-vision emoji",
        description="Build an image-caption corpus from open emoji artwork (Noto Emoji, Twemoji, OpenMoji, ...).",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder (created if needed)")
    parser.add_argument("--styles", nargs="+", default=list(ALL_STYLES), choices=ALL_STYLES, metavar="STYLE",
                        help=f"artwork styles to build, of {', '.join(ALL_STYLES)} (default: all; the SVG styles "
                             f"need resvg-py: pip install 'vlm-vision[emoji]')")
    parser.add_argument("--cache", type=Path, default=None,
                        help=f"folder for the npm tarballs (default: {default_cache_dir()})")
    parser.add_argument("--version", default=DEFAULT_VERSION, help="emoji-datasource-* version (default: %(default)s)")
    parser.add_argument("--eval-subset", type=Path, default=None, metavar="DIR",
                        help="also copy a fixed subset of base emoji to DIR/<style>/ for regression tests")
    parser.add_argument("--eval-style", default="twitter", choices=ALL_STYLES, help="style of the eval subset")
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
    except (EmojiFetchError, FileExistsError, FileNotFoundError, ValueError) as e:  # styles built so far stay
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
