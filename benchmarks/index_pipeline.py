"""The pipeline parts of benchmarks/index.py: `--part build`, `--part rescan`, `--part query`, `--part filters`.

build: `PhotoIndex.build` over generated JPEGs against the model alone on the same images (target >= 0.9);
rescan: an unchanged folder of N files, in process and as a whole command; query: end-to-end text search
latency with the model loaded over N vectors (target p95 < 50 ms at 100k); filters: the same with folder, date
and camera filters; decode: one camera-size JPEG read for the index, reduced decode
(`open_image(draft_min_side=...)`) against the full decode, time and difference.
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from index_faiss import load_average, synthetic_embeddings  # benchmarks/ is on sys.path when run as a script

def make_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n distinct 320x240 JPEG 'photos' (quality 85, ~30 KB), reused when the folder already has them."""
    folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    paths = []
    for i in range(n):
        path = folder / f"{i // 1000:03d}" / f"photo_{i:06d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        path.parent.mkdir(exist_ok=True)
        rng = np.random.default_rng([seed, i])  # photo i is the same whichever run makes it
        base = rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, 320)[None, :, None] * rng.integers(-100, 100, 3)
        pixels = np.clip(base + ramp + rng.normal(0, 25, (240, 320, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=85)
    return paths


def make_camera_photos(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """n distinct camera-size JPEG 'photos' (quality 90): colour fields over seven octaves plus mild noise, detail
    at every scale as in a photo, and a few MB of entropy-coded data at 12 MP where pure noise would give far more."""
    from PIL import Image

    width, height = size
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"camera_{width}x{height}_{i:03d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng([seed, width, height, i])
        field = np.zeros((height, width, 3), np.float32)
        for octave in range(7):  # 8 x 6 cells, then 16 x 12, ... 512 x 384
            cells = rng.normal(0, 60 / (octave + 1), (6 << octave, 8 << octave, 3)).astype(np.float32)
            for c in range(3):
                field[..., c] += np.asarray(Image.fromarray(cells[..., c]).resize(size, Image.Resampling.BICUBIC))
        pixels = np.clip(128 + field + rng.normal(0, 4, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
    return paths


def b16_checkpoint(folder: Path) -> Path:
    """A random-weight SigLIP with a B/16@224 vision tower (the embedded model's text tower and tokenizer)."""
    import shutil

    import torch
    from transformers import SiglipConfig, SiglipModel

    from vlm_vision import PRESETS
    from vlm_vision.checkpoints import DEFAULT_MODEL, read_json

    if (folder / "model.safetensors").exists():
        return folder
    torch.manual_seed(0)
    text = read_json(DEFAULT_MODEL, "config.json")["text_config"]
    config = SiglipConfig(vision_config=PRESETS["siglip-base-patch16-224"].to_hf_dict(), text_config=text)
    SiglipModel(config).save_pretrained(folder)
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(DEFAULT_MODEL / name, folder / name)
    from vlm_vision import ImageProcessor

    ImageProcessor().save_pretrained(folder)  # 224 x 224
    return folder


def load_model(args: argparse.Namespace):
    from vlm_vision.model.dual_encoder import DualEncoder
    from vlm_vision.checkpoints import DEFAULT_MODEL

    name = args.model
    if name == "b16":
        name = b16_checkpoint(Path(args.work) / "siglip-b16-random")
    model = DualEncoder.from_pretrained(name or DEFAULT_MODEL, dtype=args.dtype, device=args.device)
    if args.mode != "exact":
        from vlm_vision import optimize

        optimize(model, args.mode)
    return model


def model_alone_images_per_second(model, pixels, batch_size: int, min_time: float = 10.0) -> float:
    """The ceiling: the vision tower on preprocessed batches, no decoding, no storage."""
    batches = list(pixels.split(batch_size))
    model.encode_images(batches[0], batch_size=batch_size)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time or done < len(pixels):
        for batch in batches:
            model.encode_images(batch, batch_size=batch_size)
            done += len(batch)
    return done / (time.perf_counter() - start)


def part_build(args: argparse.Namespace) -> None:
    """Build throughput over real JPEG files, divided by the model's own throughput (target >= 0.9)."""
    import torch

    from vlm_vision.index import PhotoIndex
    from vlm_vision.index.photos import read_photo
    from vlm_vision.index.scan import FoundFile

    torch.set_num_threads(args.torch_threads or torch.get_num_threads())
    n = args.n or 2000
    photos = make_photos(Path(args.work) / f"photos-{n}", n)  # a folder of exactly n
    model = load_model(args)
    sample = photos[: min(n, 4 * args.batch_size)]
    resized = torch.stack([read_photo(FoundFile(str(p), 0, 0, 0), model.processor).pixels for p in sample])
    pixels = model.processor.normalize(resized)  # (B, 3, H, W) float32, what the model takes
    alone = model_alone_images_per_second(model, pixels, args.batch_size)
    rows = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            with PhotoIndex(Path(tmp) / "index.db", model, create=True) as index:
                index.model  # the probe forward pass is part of loading, not of the build
                summary = index.build([photos[0].parent.parent], batch_size=args.batch_size, workers=workers)
        rows.append((workers, summary.encoded, summary.seconds, summary.images_per_second))
    print(f"\n## build: {n} JPEG files 320x240, model {args.model or 'embedded default'}, "
          f"batch {args.batch_size}, {args.dtype}, {args.device}, torch threads {torch.get_num_threads()}, "
          f"load average {load_average()}")
    print(f"model alone (preprocessed batches): {alone:.1f} images/s, mode {args.mode}")
    print("| workers | encoded | seconds | build images/s | build / model alone |")
    print("|---|---|---|---|---|")
    for workers, encoded, seconds, rate in rows:
        print(f"| {workers} | {encoded} | {seconds:.1f} | {rate:.1f} | {rate / alone:.3f} |")
    print_stage_profile(sample, model, args.batch_size, Path(args.work))


def print_stage_profile(photos: list[Path], model, batch_size: int, work: Path) -> None:
    """Where the time of one image goes, each stage timed alone over `photos` in this process: reading and hashing
    the file, decoding (EXIF, colour conversion), resizing, batching and normalising, the model, and storing
    (the SQLite commit; the FAISS file is written once per build, after the last batch)."""
    import torch

    from vlm_vision.index.db import Database, IndexedFile
    from vlm_vision.index.photos import content_hash, draft_min_side, exif_fields
    from vlm_vision.model import convert_to_rgb, open_image

    seconds = dict.fromkeys(("read + hash", "decode", "resize", "batch + normalise", "model", "store"), 0.0)

    def timed(stage: str, call):
        start = time.perf_counter()
        result = call()
        seconds[stage] += time.perf_counter() - start
        return result

    resized, hashes = [], []
    for path in photos:
        data = timed("read + hash", lambda: path.read_bytes())
        hashes.append(timed("read + hash", lambda: content_hash(data)))
        image = timed("decode", lambda: convert_to_rgb(open_image(path, data=data, draft_min_side=draft_min_side(
            model.processor))))
        timed("decode", lambda: exif_fields(image))
        resized.append(timed("resize", lambda: model.processor.resized(image)))
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        db = Database(Path(tmp) / "profile.db", create=True)
        for start in range(0, len(photos), batch_size):
            chunk = range(start, min(start + batch_size, len(photos)))
            pixels = timed("batch + normalise", lambda: model.processor.normalize(
                torch.stack([torch.from_numpy(resized[i]) for i in chunk]).to(model.device)))
            vectors = timed("model", lambda: model.encode_images(pixels, batch_size=batch_size).numpy())
            files = [IndexedFile(str(photos[i]), hashes[i], 1, 1, 320, 240, None, None) for i in chunk]
            timed("store", lambda: db.commit_batch(files, dict(zip((hashes[i] for i in chunk), vectors)), []))
        db.close()
    total = sum(seconds.values())
    print(f"\nwhere one image's time goes ({len(photos)} images, each stage alone, one process):")
    print("| stage | ms per image | share |")
    print("|---|---|---|")
    for stage, s in seconds.items():
        print(f"| {stage} | {1000 * s / len(photos):.2f} | {s / total:.1%} |")


def part_rescan(args: argparse.Namespace) -> None:
    """Seconds to bring an index of an unchanged folder up to date: in process, and the whole CLI command."""
    import subprocess

    from vlm_vision.index import PhotoIndex

    n = args.n or 10_000
    photos = make_photos(Path(args.work) / f"photos-{n}", n)  # a folder of exactly n
    folder = photos[0].parent.parent
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        db = Path(tmp) / "index.db"
        with PhotoIndex(db, load_model(args), create=True) as index:
            first = index.build([folder], batch_size=args.batch_size)
            calls = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                summary = index.build([folder])
                calls.append(time.perf_counter() - start)
                assert summary.unchanged == n and summary.encoded == 0, summary
        command = [sys.executable, "-m", "vlm_vision.index", "build", str(folder), "--db", str(db)]
        root = Path(__file__).resolve().parents[1]
        commands = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(command, cwd=root, check=True, capture_output=True)
            commands.append(time.perf_counter() - start)
    print(f"\n## rescan: {n} unchanged files (load average {load_average()})")
    print(f"first build: {first.seconds:.1f} s ({first.images_per_second:.1f} images/s)")
    print(f"PhotoIndex.build() over the unchanged folder: median {np.median(calls):.3f} s "
          f"(runs {', '.join(f'{t:.3f}' for t in calls)})")
    print(f"`vlm-index build` over it, whole command (imports, model load, scan): median "
          f"{np.median(commands):.2f} s (runs {', '.join(f'{t:.2f}' for t in commands)})")


def add_synthetic_photos(index, n: int, dim: int, seed: int) -> None:
    """n files with synthetic clustered vectors (as in the faiss part: what a query costs depends on n, the
    dimension and the index type, not on where the vectors lie) and metadata: 1,000 files a folder
    (/photos/000, /photos/001, ...), dates taken spread over 2015-2024, camera "Sony ILCE-7M4" for 1% of them,
    else "Google Pixel 8" (2 in 3) or "Apple iPhone 15"."""
    from datetime import date, timedelta

    from vlm_vision.index import IndexedFile

    base, _ = synthetic_embeddings(n, 1, dim, max(1, n // 250), seed)
    days = (date(2025, 1, 1) - date(2015, 1, 1)).days
    for start in range(0, n, 10_000):
        stop = min(start + 10_000, n)
        files = [IndexedFile(
            f"/photos/{i // 1000:03d}/photo_{i:06d}.jpg", f"{i:032x}", 1, 1, 320, 240,
            (date(2015, 1, 1) + timedelta(days=i * 7919 % days)).isoformat() + "T12:00:00",
            "Sony ILCE-7M4" if i % 100 == 0 else "Google Pixel 8" if i % 3 else "Apple iPhone 15",
        ) for i in range(start, stop)]
        index.db.commit_batch(files, {f.hash: v for f, v in zip(files, base[start:stop])}, [])


# What `--part filters` times, on add_synthetic_photos' metadata.
FILTERS = {
    "one folder": dict(under="/photos/002"),
    "one month": dict(since="2019-03", until="2019-03"),
    "one year": dict(since="2021", until="2021"),
    "since 2016": dict(since="2016"),
    "a rare camera": dict(camera="sony"),
    "a common camera": dict(camera="pixel"),
    "common camera, one year": dict(camera="pixel", since="2021", until="2021"),
    "one folder, one year": dict(under="/photos/002", since="2021", until="2021"),
}


def listed_first(index, text: str, k: int, join_on_hash: bool = False, **filters) -> list:
    """A reference: list the allowed vector ids from SQLite, search among them, read their files (what every
    filtered search did before the candidate passes). `join_on_hash`: list them as schema 3 did, through each
    file's row and its vector's (schema 4 reads them from the date or camera index alone)."""
    from vlm_vision.index import ann
    from vlm_vision.index.filters import SearchFilter

    only = SearchFilter.of(**filters)
    with index.db.snapshot():
        if join_on_hash:
            where, params = index.db._matching(only)
            rows = index.db.db.execute(
                f"SELECT DISTINCT v.id FROM files f JOIN vectors v ON v.hash = f.hash WHERE {where}", params)
            allowed = np.fromiter((r[0] for r in rows), dtype=np.int64)
        else:
            allowed = index.db.ids_matching(only)
        scores, ids = ann.search_ann(index._ann_index(), index.query_vector(text)[None], k, allowed)
        files = index.db.files_of_ids([int(i) for i in ids[0] if i >= 0], only)
    return [f for i in ids[0] for f in files.get(int(i), [])][:k]


def part_filters(args: argparse.Namespace) -> None:
    """Filtered text searches (folder, date taken, camera) end to end over N synthetic photos: `PhotoIndex.search`
    as shipped against `listed_first` (listing the ids as shipped, and as schema 3 did), in the same run."""
    import vlm_vision.index.photo_index as photo_index
    from vlm_vision.index import PhotoIndex

    faiss.omp_set_num_threads(1)
    n = args.n or 100_000
    model = load_model(args)
    labels = (Path(__file__).resolve().parents[1] / "data" / "emoji-eval" / "labels.txt").read_text().splitlines()
    queries = [q for q in labels if q.strip()][: args.queries]
    variants = ("as shipped", "ids listed first", "ids listed first, schema 3")
    times: dict[tuple[str, str], list[float]] = {}
    recall: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        with PhotoIndex(Path(tmp) / "index.db", model, create=True) as index:
            index.model  # loads and fingerprints the model
            index.db.set_model_info(index._info)
            add_synthetic_photos(index, n, index.db.model_info().dim, args.seed)
            index.db.set_setting("index_type", args.index_type)
            index.search("warm-up")  # builds (and writes) the FAISS index once
            allowed = {name: index.db.ids_matching(photo_index.SearchFilter.of(**f)) for name, f in FILTERS.items()}
            ids, vectors, _ = index.db.vectors()
            id_of = dict(index.db.db.execute("SELECT hash, id FROM vectors").fetchall())
            query_vectors = np.stack([index.query_vector(q) for q in queries])  # (Q, D), each text encoded once
            exact = {}  # (filter, query) -> the ids of the 20 best allowed vectors, by exact search
            for name in FILTERS:
                rows = np.flatnonzero(np.isin(ids, allowed[name]))
                best = np.argsort(-(vectors[rows] @ query_vectors.T), axis=0)[:20]  # (20, Q): one copy per filter
                for column, q in enumerate(queries):
                    exact[(name, q)] = set(ids[rows[best[:, column]]].tolist())
            searches = {variants[0]: index.search, variants[1]: functools.partial(listed_first, index),
                        variants[2]: functools.partial(listed_first, index, join_on_hash=True)}
            # The first two take turns on each query, so that neither pays for the other's cold caches; the
            # schema 3 reference runs last, on schema 3's date and camera indexes (without vector ids).
            for block in (variants[:2], variants[2:]):
                if block == variants[2:]:
                    for column in ("taken_at", "camera"):
                        index.db.db.execute(f"DROP INDEX idx_files_{column}")
                        index.db.db.execute(f"CREATE INDEX idx_files_{column} ON files ({column})")
                for name, f in FILTERS.items():
                    for q in queries:
                        for variant in block:
                            start = time.perf_counter()
                            hits = searches[variant](q, k=20, **f)
                            times.setdefault((variant, name), []).append((time.perf_counter() - start) * 1e3)
                            found = {id_of[getattr(h, "file", h).hash] for h in hits}  # SearchHit or IndexedFile
                            recall.setdefault((variant, name), []).append(len(found & exact[(name, q)]) / 20)
            kind = index.stats().index_type
    print(f"\n## filters: {n} synthetic photos, k 20, {len(queries)} text queries each, model "
          f"{args.model or 'embedded default'}, FAISS {kind}, load average {load_average()}")
    print("| filter | photos it allows | " + " | ".join(f"{v}: p50 / p95 ms" for v in variants) +
          " | p50 listed first / shipped | recall@20 shipped / listed first |")
    print("|---|---|" + "---|" * len(variants) + "---|---|")
    for name in FILTERS:
        cells = [times[(v, name)] for v in variants]
        print(f"| {name} | {len(allowed[name]):,} ({len(allowed[name]) / n:.1%}) | " +
              " | ".join(f"{np.percentile(c, 50):.1f} / {np.percentile(c, 95):.1f}" for c in cells) +
              f" | {np.percentile(cells[1], 50) / np.percentile(cells[0], 50):.2f} | "
              f"{np.mean(recall[(variants[0], name)]):.3f} / {np.mean(recall[(variants[1], name)]):.3f} |")


def part_query(args: argparse.Namespace) -> None:
    """End-to-end text query latency, model loaded, over an index of N images (target p95 < 50 ms at 100k)."""
    import torch

    from vlm_vision.index import PhotoIndex

    faiss.omp_set_num_threads(1)  # as `vlm-index search` and the app search: batch-1 queries

    n = args.n or 100_000
    model = load_model(args)
    labels = (Path(__file__).resolve().parents[1] / "data" / "emoji-eval" / "labels.txt").read_text().splitlines()
    queries = [q for q in labels if q.strip()][: args.queries]
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        with PhotoIndex(Path(tmp) / "index.db", model, create=True) as index:
            index.model  # loads and fingerprints the model
            index.db.set_model_info(index._info)
            dim = index.db.model_info().dim
            add_synthetic_photos(index, n, dim, args.seed)
            built = time.perf_counter()
            index.search("warm-up")  # builds (and writes) the FAISS index once
            build_seconds = time.perf_counter() - built
            parts = {"total": [], "text": [], "search": []}
            for q in queries:
                t0 = time.perf_counter()
                index.model.encode_texts([q])
                t1 = time.perf_counter()
                hits = index.search(q, k=20)
                t2 = time.perf_counter()
                assert len(hits) == 20
                parts["text"].append((t1 - t0) * 1e3)
                parts["total"].append((t2 - t1) * 1e3)
            kind = index.stats().index_type
    print(f"\n## query: {n} indexed images, k 20, {len(queries)} text queries, model "
          f"{args.model or 'embedded default'} loaded, FAISS {kind} (built in {build_seconds:.1f} s), "
          f"torch threads {torch.get_num_threads()}, load average {load_average()}")
    print("| | p50 ms | p95 ms |")
    print("|---|---|---|")
    for name, label in (("total", "search() end to end"), ("text", "of which text encoding (timed apart)")):
        values = np.array(parts[name])
        print(f"| {label} | {np.percentile(values, 50):.2f} | {np.percentile(values, 95):.2f} |")


def part_decode(args: argparse.Namespace) -> None:
    """One camera-size JPEG read for the index: reduced decode vs full decode, both resized for the model."""
    import torch

    from vlm_vision.index.photos import draft_min_side
    from vlm_vision.model.processor import DRAFT_SCALE, convert_to_rgb, open_image

    torch.set_num_threads(1)  # one decoding process's view; the model only scores the difference
    model = load_model(args)
    processor = model.processor
    min_side = draft_min_side(processor)
    print(f"\n## decode: model {args.model or 'embedded default'} (input {processor.size[1]}x{processor.size[0]}, "
          f"min_side {min_side}), {args.n or 8} photos per size, fastest of {args.repeats} reads each, "
          f"load average {load_average()}")
    print("| photo | MB | scale | full ms | reduced ms | full / reduced | pixel mean abs diff | max | "
          "1 - embedding cosine, max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.photo_sizes:
        width, height = (int(v) for v in size.split("x"))
        paths = make_camera_photos(Path(args.work) / "camera", args.n or 8, (width, height))
        times = {None: [], min_side: []}
        pixels = {None: [], min_side: []}
        scales = set()
        for path in paths:
            data = path.read_bytes()
            for side in times:
                best = float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    image = open_image(path, data=data, draft_min_side=side)
                    resized = processor.resized(convert_to_rgb(image))
                    best = min(best, time.perf_counter() - start)
                times[side].append(best * 1e3)
                pixels[side].append(torch.from_numpy(resized))
                if side is not None:
                    scales.add(image.info.get(DRAFT_SCALE, 1))
        full, reduced = torch.stack(pixels[None]), torch.stack(pixels[min_side])
        difference = (full.int() - reduced.int()).abs()
        with torch.no_grad():
            cosine = (model.encode_images(processor.normalize(full)) * model.encode_images(processor.normalize(reduced))
                      ).sum(-1)
        megabytes = np.mean([p.stat().st_size for p in paths]) / 1e6
        ratio = np.median(times[None]) / np.median(times[min_side])
        print(f"| {width}x{height} | {megabytes:.1f} | 1/{'/'.join(map(str, sorted(scales)))} | "
              f"{np.median(times[None]):.1f} | {np.median(times[min_side]):.1f} | **{ratio:.2f}** | "
              f"{difference.float().mean():.3f} | {difference.max()} | {(1 - cosine).max():.1e} |")
