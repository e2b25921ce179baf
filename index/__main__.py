"""Command line: `vlm-index build|search|stats|errors|forget|repair` (each has --help with examples)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys

from vlm_vision.errors import CheckpointError, ImageLoadError
from vlm_vision.inference import MODE_CHOICES, MODE_HELP
from vlm_vision.model import AUTO, DTYPE_CHOICES, DTYPE_HELP

from . import ann
from .errors import BuildLockedError, IndexNotFoundError, ModelMismatchError, SchemaError
from .photo_index import PhotoIndex, folder_roots

DB_HELP = ("index database file (default: $VLM_INDEX_DB, else ~/.local/share/vlm-vision/index.db). "
           "Put it inside the photo folder (e.g. --db ~/Photos/.vlm-index.db) and the index moves with the photos")
MODEL_HELP = ("Hub id (e.g. google/siglip-base-patch16-224) or local SigLIP or SigLIP 2 checkpoint folder (default: "
              "the model the index was built with; for a new index the embedded emoji model)")

BUILD_EXAMPLE = """examples:
  vlm-index build data/samples --db /tmp/samples.db
  vlm-index build ~/Pictures ~/Phone --model google/siglip-base-patch16-224
  vlm-index build ~/Pictures --model google/siglip2-base-patch16-naflex --max-patches 256 --db ~/siglip2.db

  vlm-index build --engine ray /mnt/photos paths.parquet s3://bucket/pics/ --shards /mnt/shared/shards
  vlm-index build --engine ray --address auto /mnt/photos --device cuda --shards /mnt/shared/shards

Incremental: unchanged files (same size and mtime) are not read again, renamed
and duplicated files reuse their vectors, deleted files leave the index. Files
that can't be indexed are skipped and listed (`vlm-index errors`).

--engine ray (pip install "vlm-vision[ray]") reads and encodes on a Ray cluster
(--address), or on a Ray instance of this machine; FOLDER may also be a listing
of paths or URIs (.parquet/.csv with a "path" column, .txt) or a URI prefix.
Each batch lands in a Parquet shard, and a rerun takes finished shards instead
of reading their files again. See docs/scale.md."""

REPAIR_EXAMPLE = """examples:
  vlm-index repair --db ~/Pictures/.vlm-index.db

Runs SQLite's integrity check, mends links between files and vectors (a file
left without a vector is dropped, so the next build encodes it again), and
writes the FAISS file afresh from the stored vectors. Searches rebuild a
damaged FAISS file by themselves; this does it up front, under the build lock."""
DAMAGED_ADVICE = ("Its rows can't be trusted. Move it aside (with its -wal and -shm files) and build a new index: "
                  "vlm-index build FOLDER --db {path}. Your photos are not touched; `sqlite3 OLD.db .recover` may "
                  "salvage rows.")

SEARCH_EXAMPLE = """examples:
  vlm-index search "red apple" --db /tmp/samples.db
  vlm-index search "a dog on the beach" -k 20 --under ~/Pictures/2024
  vlm-index search --image ~/Pictures/cat.jpg --not "indoors" --json
  vlm-index search "snow" --since 2023-12 --until 2024-02 --camera pixel

Scores are cosine similarities between the query and each image. Dates are
the EXIF date taken: with --since or --until, photos without one are left out."""

STATS_EXAMPLE = """example:
  vlm-index stats --db /tmp/samples.db"""

ERRORS_EXAMPLE = """example:
  vlm-index errors --db /tmp/samples.db"""

FORGET_EXAMPLE = """examples:
  vlm-index forget ~/Pictures/old-name   # renamed: then vlm-index build ~/Pictures/new-name
  vlm-index forget /media/usb/photos --db ~/usb.db

A build never removes a folder that is missing (it may be an unmounted drive):
forget does, for the files, skip records and built folders at or below FOLDER.
The folder itself need not exist."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-index", description="Search photo folders with SigLIP.",
        epilog="example:\n  vlm-index build data/samples --db /tmp/samples.db\n"
               "  vlm-index search \"red apple\" --db /tmp/samples.db\n\n"
               "Each command has its own --help (vlm-index build --help).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, example: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", epilog=example,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--db", default=None, help=DB_HELP)
        return sub

    build = command("build", "index the images under photo folders, or bring an index up to date", BUILD_EXAMPLE)
    build.add_argument("folders", nargs="+", metavar="FOLDER",
                       help="folders to index (recursively); with --engine ray also listings and URI prefixes")
    build.add_argument("--model", default=None, help=MODEL_HELP)
    build.add_argument("--batch-size", type=int, default=32, help="images per model call and per commit (32)")
    build.add_argument("--workers", type=int, default=None,
                       help="decoding processes beside the model (default: CPU cores - 1, at most 8; 0: none); with "
                            "--engine ray: model actors (default: one per GPU with --device cuda, else one per "
                            "--cpus-per-worker CPUs of the cluster but one)")
    build.add_argument("--engine", default="local", choices=["local", "ray"],
                       help="local (default): this process and its decoding workers; ray: a Ray cluster")
    build.add_argument("--address", default=None,
                       help="--engine ray: the cluster (auto, ray://HOST:10001, HOST:6379); default: start Ray on "
                            "this machine, on 127.0.0.1 only")
    build.add_argument("--shards", default=None, metavar="DIR",
                       help="--engine ray: where each batch's Parquet shard is written (default: DB.shards beside "
                            "the database); on a cluster, a folder or URI every node sees")
    build.add_argument("--cpus-per-worker", type=int, default=1,
                       help="--engine ray on CPUs: cores (torch threads) per model actor (1)")
    build.add_argument("--ray-cpus", type=int, default=None, metavar="N",
                       help="--engine ray without --address: the CPUs the Ray instance of this machine offers "
                            "(default: its cores; more lets model actors and decoding share cores)")
    build.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    build.add_argument("--dtype", default=AUTO, choices=DTYPE_CHOICES, help=DTYPE_HELP)
    build.add_argument("--mode", default=AUTO, choices=MODE_CHOICES, help=MODE_HELP)
    build.add_argument("--index-type", default=None, choices=["auto", "flat", "hnsw", "ivf"],
                       help="FAISS index (default auto: exact flat while small, approximate when large; "
                            f"ivf needs {ann.IVF_MIN_TRAINING} vectors to train, and fewer get flat)")
    build.add_argument("--max-patches", type=int, default=None, metavar="N",
                       help="SigLIP 2 NaFlex models: patches per image (default: the checkpoint's, e.g. 256); each "
                            "photo keeps its aspect ratio. An index keeps the number it was built with")
    build.add_argument("--max-pixels", type=int, default=None,
                       help="skip images with more pixels than this, as possible decompression bombs (100 million)")

    search = command("search", "find the images that best match a text and/or an image", SEARCH_EXAMPLE)
    search.add_argument("query", nargs="?", default=None, help="text query")
    search.add_argument("--image", default=None, help="image file to search by (alone or with the text)")
    search.add_argument("--not", dest="negative", action="append", default=None,
                        help="text to steer away from (repeatable)")
    search.add_argument("-k", type=int, default=10, help="number of results (10)")
    search.add_argument("--under", default=None, help="only results inside this folder")
    search.add_argument("--since", default=None, metavar="DATE",
                        help="only photos taken from the start of this day, month or year (YYYY-MM-DD, YYYY-MM, YYYY)")
    search.add_argument("--until", default=None, metavar="DATE",
                        help="only photos taken up to the end of this day, month or year (included)")
    search.add_argument("--camera", default=None, help='only photos whose EXIF camera contains this, e.g. "pixel"')
    search.add_argument("--min-score", type=float, default=None,
                        help="only results at least this similar (a cosine; its useful range depends on the model)")
    search.add_argument("--model", default=None, help=MODEL_HELP)
    search.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    search.add_argument("--mode", default=AUTO, choices=MODE_CHOICES, help="how an --image query is encoded: "
                        + MODE_HELP.removeprefix("how the vision tower runs: "))
    search.add_argument("--json", action="store_true",
                        help='print JSON lines {"path": ..., "score": ..., "taken_at": ..., "camera": ...}')

    stats = command("stats", "show what an index holds: files, vectors, model, index type, sizes", STATS_EXAMPLE)
    stats.add_argument("--json", action="store_true", help="print one JSON object")

    errors = command("errors", "list the files the builds skipped, with the reason for each", ERRORS_EXAMPLE)
    errors.add_argument("--json", action="store_true", help='print JSON lines {"path": ..., "reason": ...}')

    forget = command("forget", "remove what is indexed under folders, such as one renamed or gone", FORGET_EXAMPLE)
    forget.add_argument("folders", nargs="+", metavar="FOLDER", help="folders whose files leave the index")

    command("repair", "check the database and rebuild the FAISS file from the stored vectors, encoding nothing",
            REPAIR_EXAMPLE)
    return parser


def run_build(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .photos import DEFAULT_MAX_PIXELS

    if args.engine == "ray":
        from .sources import check_sources

        check_sources(args.folders)  # a missing source stops the build before a database is created for it
    else:
        from .sources import LISTING_EXTENSIONS, is_uri

        listed = [f for f in args.folders if is_uri(f) or (f.lower().endswith(LISTING_EXTENSIONS)
                                                           and os.path.isfile(f))]
        if listed:
            raise ValueError(f"{listed[0]} is a listing or a URI: those are read by --engine ray (pip install "
                             f'"vlm-vision[ray]"); the local build takes folders')
        folder_roots(args.folders)  # a missing folder stops the build before a database is created for it
    index = PhotoIndex(args.db, args.model, device=args.device, dtype=args.dtype, mode=args.mode,
                       max_patches=args.max_patches, create=True)
    bar = None

    def progress(p) -> None:
        nonlocal bar
        if bar is None:  # created once the scan is done: the model load and the scan don't count in its rate
            bar = tqdm(total=p.total, unit="file", dynamic_ncols=True, desc="indexing", smoothing=0)
        bar.update(p.done - bar.n)
        if p.done:
            bar.set_postfix_str(f"{p.encoded / p.seconds:.1f} images/s encoded", refresh=False)

    with index:
        if args.engine == "ray":
            summary = index.build_on_ray(args.folders, address=args.address, ray_cpus=args.ray_cpus,
                                         workers=args.workers,
                                         cpus_per_worker=args.cpus_per_worker, shards=args.shards,
                                         batch_size=args.batch_size, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
                                         index_type=args.index_type, progress=progress)
        else:
            summary = index.build(args.folders, batch_size=args.batch_size, workers=args.workers,
                                  max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, index_type=args.index_type,
                                  progress=progress)
        if bar is not None:
            bar.close()
        print(f"{summary.added} added, {summary.updated} updated, {summary.reused} reused, {summary.removed} removed, "
              f"{summary.skipped} skipped, {summary.unchanged} unchanged; {summary.encoded} images encoded in "
              f"{summary.seconds:.1f} s ({summary.images_per_second:.1f} images/s).")
        if summary.resumed:
            print(f"{summary.resumed} files were taken from the shards of an earlier run, not read again.")
        for skipped in summary.skipped_files[:20]:
            print(f"  skipped {skipped.path}: {skipped.reason}")
        if len(summary.skipped_files) > 20:
            print(f"  ... and {len(summary.skipped_files) - 20} more")
        if summary.skipped:
            print(f"All skipped files and reasons: vlm-index errors --db {index.db.path}")
        built = index.stats().index_type
        if args.index_type == "ivf" and built not in (None, "ivf"):
            print(f"FAISS index: {built}, not ivf: IVF needs at least {ann.IVF_MIN_TRAINING} vectors to train its "
                  f"lists, so this one was built flat (exact, and as fast at this size)")
        print(f"Index: {index.db.path}")


def run_search(args: argparse.Namespace) -> None:
    import faiss

    # One query at a time: a second OpenMP thread only adds hand-offs, and on a busy machine it made
    # batch-1 searches several times slower (benchmarks/README.md, "Photo index: FAISS level").
    faiss.omp_set_num_threads(1)
    with PhotoIndex(args.db, args.model, device=args.device, mode=args.mode) as index:
        hits = index.search(args.query, image=args.image, negative=args.negative, k=args.k, under=args.under,
                            since=args.since, until=args.until, camera=args.camera, min_score=args.min_score)
        for hit in hits:
            print(json.dumps({"path": hit.path, "score": round(hit.score, 6), "taken_at": hit.file.taken_at,
                              "camera": hit.file.camera}) if args.json
                  else f"{hit.score:.4f}  {hit.path}")
        if not hits and not args.json:
            print(no_results_message(index, args.under), file=sys.stderr)


def no_results_message(index: PhotoIndex, under: str | None) -> str:
    """Why a search may have found nothing: an empty index, or an --under that is no folder here (a typo; an
    unmounted drive's indexed photos are still searched)."""
    if index.db.count("files") == 0:
        return f"No results: the index is empty. Build it: vlm-index build FOLDER --db {index.db.path}"
    if under and not os.path.isdir(os.path.expanduser(under)):
        return (f"No results. (--under {under} is not a folder on this machine: unless it is an unmounted drive's, "
                f"check its spelling.)")
    return "No results."


def run_stats(args: argparse.Namespace) -> None:
    with PhotoIndex(args.db) as index:
        s = index.stats()
    model = s.model
    if args.json:
        print(json.dumps({
            "db": s.db_path, "files": s.files, "vectors": s.vectors, "skipped": s.skipped, "roots": s.roots,
            "model": model.name if model else None, "revision": model.revision if model else None,
            "dim": model.dim if model else None, "index_type": s.index_type, "db_bytes": s.db_bytes,
            "faiss_bytes": s.ann_bytes, "last_build": s.last_build, "encoders": s.encoders}))
        return
    print(f"index:      {s.db_path} ({s.db_bytes / 1e6:.1f} MB, FAISS file {s.ann_bytes / 1e6:.1f} MB)")
    print(f"files:      {s.files} indexed ({s.vectors} distinct), {s.skipped} skipped")
    if model:
        print(f"model:      {model.name}" + (f" @ {model.revision}" if model.revision else "") + f", dim {model.dim}")
    if s.encoders:
        print(f"encoded:    {', '.join(s.encoders)}")
    print(f"FAISS:      {s.index_type or '-'}")
    for root in s.roots:
        print(f"folder:     {root}")
    if s.last_build:
        print("last build: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in s.last_build.items()))


def run_errors(args: argparse.Namespace) -> None:
    with PhotoIndex(args.db) as index:
        skipped_files = index.errors()
    for skipped in skipped_files:
        print(json.dumps({"path": skipped.path, "reason": skipped.reason}) if args.json
              else f"{skipped.path}: {skipped.reason}")
    if not skipped_files and not args.json:
        print("No skipped files.", file=sys.stderr)


def run_forget(args: argparse.Namespace) -> None:
    with PhotoIndex(args.db) as index:
        files, skipped = index.forget(args.folders)
        left = index.db.count("files")
    print(f"Removed {files} files and {skipped} skip records under {', '.join(args.folders)}; {left} files remain.")


def run_repair(args: argparse.Namespace) -> int:
    with PhotoIndex(args.db) as index:
        report = index.repair()
        path = index.db.path
    if report.damage:
        print(f"error: {path} is damaged; SQLite's check found:", file=sys.stderr)
        for line in report.damage[:10]:
            print(f"  {line}", file=sys.stderr)
        print(f"{DAMAGED_ADVICE.format(path=path)}", file=sys.stderr)
        return 1
    mended = ", ".join(f"{n} {kind}" for kind, n in report.links.items() if n) or "no broken links"
    print(f"Database sound ({mended}); FAISS file rebuilt from {report.vectors} stored vectors for {report.files} "
          f"files, nothing re-encoded.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    commands = {"build": run_build, "search": run_search, "stats": run_stats, "errors": run_errors,
                "forget": run_forget, "repair": run_repair}
    try:
        return commands[args.command](args) or 0
    except (BuildLockedError, IndexNotFoundError, ModelMismatchError, SchemaError, CheckpointError, ImageLoadError,
            FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (sqlite3.OperationalError, OSError) as e:  # a full disk, a read-only file system, no permission
        print(f"error: the index can't be written ({e}). What was being written was rolled back; everything "
              f"committed before is kept. Free some disk space or make the index's folder writable, then run the "
              f"same command again.", file=sys.stderr)
        return 1
    except sqlite3.DatabaseError as e:  # pages damaged after the database opened (its header is sound)
        print(f"error: the index database is damaged ({e}).\n{DAMAGED_ADVICE.format(path=args.db or 'DB')}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted; everything committed so far is kept. Run the same build again to go on.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
