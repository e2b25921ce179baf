"""`PhotoIndex`: build, search and inspect a photo index with a SigLIP model.

The database (index/db.py) holds the vectors; a FAISS file beside it
(`<db>.faiss`, index/ann.py) is derived from them and rebuilt when stale.
The model is loaded on first use, and checked against the one the index was
built with, so vectors of two models never meet in one search.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from vlm_vision.checkpoints import DEFAULT_MODEL, DEFAULT_MODEL_NAME, resolve_checkpoint
from vlm_vision.inference import MODE_CHOICES, choose_mode, describe, int8_pays_from, mode_of, optimize
from vlm_vision.model import AUTO, NaFlexProcessor, processor_from_dict

from . import ann, ann_file
from .build import BuildProgress, BuildSummary, run_build
from .db import Database, IndexedFile, ModelInfo, SkippedFile
from .encoding import check_same_model, encode_pixels, model_info
from .errors import ModelMismatchError, QueryError
from .filters import SearchFilter
from .lock import BuildLock
from .photos import DEFAULT_MAX_PIXELS, register_plugins

if TYPE_CHECKING:
    from vlm_vision.model import DualEncoder

logger = logging.getLogger(__name__)

def default_db_path() -> Path:
    """$VLM_INDEX_DB, else $XDG_DATA_HOME/vlm-vision/index.db (~/.local/share/vlm-vision/index.db)."""
    if os.environ.get("VLM_INDEX_DB"):
        return Path(os.environ["VLM_INDEX_DB"]).expanduser()
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "vlm-vision" / "index.db"


# Query embeddings kept (PhotoIndex.text_vectors): at most 4096 x 1152 float32 = 19 MB, for So400m.
TEXT_CACHE_SIZE = 4096

# A filter that passes at most LIST_FIRST_MAX files searches among them alone; a wider one first ranks
# FILTER_CANDIDATES vectors without the filter (see PhotoIndex._filtered).
LIST_FIRST_MAX = 10_000
FILTER_CANDIDATES = 1000


@dataclass(frozen=True)
class SearchHit:
    path: str
    score: float  # cosine similarity between the query and the image embedding
    file: IndexedFile


@dataclass(frozen=True)
class IndexStats:
    db_path: str
    files: int
    vectors: int  # distinct contents; duplicates share one
    skipped: int
    roots: list[str]
    model: ModelInfo | None
    index_type: str | None
    db_bytes: int
    ann_bytes: int
    last_build: dict | None
    encoders: list[str]  # what encoded the stored vectors: a mode and dtype each, e.g. "exact bfloat16"


@dataclass(frozen=True)
class RepairReport:
    """What `PhotoIndex.repair` found and did."""

    damage: list[str] = field(default_factory=list)  # SQLite's integrity errors: then nothing else was done
    links: dict[str, int] = field(default_factory=dict)  # broken links mended, by kind
    vectors: int = 0  # vectors in the rebuilt ANN file
    files: int = 0


def absolute(folder: str | os.PathLike) -> str:
    return os.path.abspath(os.path.expanduser(folder))


def folder_roots(folders: Sequence[str | os.PathLike]) -> list[str]:
    """The absolute paths of the folders to build; FileNotFoundError names one that is not a folder."""
    roots = []
    for folder in folders:
        path = absolute(folder)
        if not os.path.isdir(path):
            # Never read a missing folder (an unmounted drive) as "all its photos were deleted".
            raise FileNotFoundError(f"Not a folder: {folder!r}. Nothing was changed in the index.")
        roots.append(path)
    if not roots:
        raise ValueError("Give at least one folder to index")
    return roots


def _check_build_settings(batch_size: int, index_type: str | None) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if index_type is not None and index_type not in ("auto", *ann.INDEX_TYPES):
        raise ValueError(f"Unknown index type: {index_type!r}; expected 'auto' or one of {ann.INDEX_TYPES}")


class PhotoIndex:
    """A photo index at `db` (default: `default_db_path()`), used with `model` (default: the index's own) in `dtype`
    ("auto": bfloat16 where `device` computes it natively, else float32; fp32 and bf16 vectors are interchangeable)
    and inference `mode` (see `vlm_vision.inference`; "auto": int8 for a CPU build of many images, else exact).
    `max_patches` sets a SigLIP 2 NaFlex model's patches per image (default: the checkpoint's, or the index's own).

    >>> index = PhotoIndex("photos.db", create=True)
    >>> index.build(["~/Pictures"])
    >>> index.search("a dog on the beach", k=5)
    """

    def __init__(self, db: str | os.PathLike | None = None, model: str | os.PathLike | DualEncoder | None = None, *,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = AUTO,
                 mode: str = AUTO, max_patches: int | None = None, create: bool = False) -> None:
        if mode not in MODE_CHOICES:
            raise ValueError(f"Unknown mode {mode!r}; choose from {MODE_CHOICES}")
        self.db = Database(Path(db).expanduser() if db is not None else default_db_path(), create=create)
        self.ann_path = self.db.path.with_name(self.db.path.name + ".faiss")
        self.lock_path = self.db.path.with_name(self.db.path.name + ".lock")
        self.device, self.dtype, self.mode, self.max_patches = device, dtype, mode, max_patches
        self._model: DualEncoder | None = None
        if hasattr(model, "encode_images"):  # a loaded DualEncoder (the app shares one model between its tabs)
            self._model, model = model, model.name_or_path
        self.model_name = str(model) if model is not None else None
        self._info: ModelInfo | None = None  # set once the model is loaded and checked
        self._ann: tuple[str, object] | None = None  # (stamp, faiss index)
        self._text_vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # query text -> embedding, newest last
        self._text_lock = threading.Lock()  # the app's classify workers share the cache with its searches
        register_plugins()

    # -- the model ------------------------------------------------------------------------------------------

    @property
    def model(self) -> DualEncoder:
        """The DualEncoder, loaded on first use; raises `ModelMismatchError` if the index was built with another."""
        if self._info is None:
            recorded = self.db.model_info()
            name = self.model_name or (recorded.name if recorded else DEFAULT_MODEL_NAME)
            if name != DEFAULT_MODEL_NAME and Path(name).expanduser().exists():
                name = str(Path(name).expanduser().resolve())  # a local folder: recorded so it works from anywhere
                if Path(name) == DEFAULT_MODEL.resolve():
                    name = DEFAULT_MODEL_NAME
            folder = resolve_checkpoint(name)  # DEFAULT_MODEL_NAME: the embedded model
            if self._model is None:
                from vlm_vision.model import DualEncoder  # imports transformers: only when a model is needed

                self._model = DualEncoder.from_pretrained(folder, dtype=self.dtype, device=self.device)
            if recorded is None or recorded.name == name:  # another model's settings don't apply: it is refused below
                self._use_processor(self._model)  # a model passed in is changed in place, as by `optimize` below
            if self.mode != AUTO and mode_of(self._model) != self.mode:
                optimize(self._model, self.mode)  # a model passed in is changed in place
            model = self._model
            info = model_info(model, name, folder)
            if recorded is not None:
                check_same_model(recorded, info)
            self._model, self._info, self.model_name = model, info, name
        return self._model

    def _use_processor(self, model: DualEncoder) -> None:
        """Give the index's own model the image processor of this index: `max_patches` if given, else the one it was
        built with; other settings than the index's own are refused, since the vectors would not match."""
        processor = model.processor
        if self.max_patches is not None:
            if not isinstance(processor, NaFlexProcessor):
                raise ValueError(f"--max-patches sets a SigLIP 2 NaFlex model's patches per image; "
                                 f"{self.model_name or 'this model'} takes whole images at a fixed size")
            processor = replace(processor, max_num_patches=self.max_patches)
        recorded = self.db.setting("processor")
        if recorded is not None and recorded != processor.to_dict():
            if self.max_patches is not None:
                raise ModelMismatchError(
                    f"This index was built with max_num_patches {recorded.get('max_num_patches')}, not "
                    f"{self.max_patches}: images would embed differently. Leave out --max-patches to use the "
                    f"index's own, or build a separate index (another --db).")
            processor = processor_from_dict(recorded)  # the settings the index was built with
        model.processor = processor

    def _encode_pixels(self, pixels: torch.Tensor, grids: torch.Tensor | None = None) -> np.ndarray:
        return encode_pixels(self.model, pixels, grids)

    # -- building -------------------------------------------------------------------------------------------

    def build(self, folders: Sequence[str | os.PathLike], *, batch_size: int = 32, workers: int | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS, index_type: str | None = None,
              progress: Callable[[BuildProgress], None] | None = None) -> BuildSummary:
        """Index the images under `folders`: new and changed files are encoded, deleted ones removed."""
        roots = folder_roots(folders)
        _check_build_settings(batch_size, index_type)
        with BuildLock(self.lock_path):
            model = self._start_build(roots, index_type)
            summary = run_build(self.db, self._encode_pixels, model.processor, roots, batch_size=batch_size,
                                workers=workers, max_pixels=max_pixels, progress=progress,
                                before_reading=self._choose_mode, pin_memory=model.device.type == "cuda")
            self._ann_index(write=True)
            self.db.set_setting("last_build", summary.as_dict() | {"encoder": describe(model)})
        return summary

    def build_on_ray(self, sources: Sequence[str | os.PathLike], *, address: str | None = None,
                     ray_cpus: int | None = None, workers: int | None = None, cpus_per_worker: int = 1,
                     shards: str | os.PathLike | None = None,
                     batch_size: int = 32, max_pixels: int | None = DEFAULT_MAX_PIXELS, index_type: str | None = None,
                     progress: Callable[[BuildProgress], None] | None = None) -> BuildSummary:
        """`build` on a Ray cluster (`address`: "auto", "ray://HOST:10001", ...; None: a Ray instance on this machine,
        on 127.0.0.1 only, offering `ray_cpus` CPUs: default the machine's). Ray starts only when there are files to
        read. `sources` are folders every node sees, listings of paths or URIs (.parquet, .csv, .txt)
        or URI prefixes (s3://bucket/photos/). `workers` model actors (default: one per GPU when the index's device
        is a GPU, else one per `cpus_per_worker` CPUs of the cluster but one) encode; Ray Data decodes beside them.
        With a GPU device and none on this machine (a CPU head node), this process's own model runs on its CPU.
        Each batch is written as a Parquet shard under `shards`/<the database's id> (default: `<db>.shards/` beside
        the database; on a multi-node cluster, a folder or URI every node and this process see) and imported into the
        database; a rerun takes finished shards instead of reading their files again. See docs/scale.md."""
        from . import distributed  # needs the optional extra: pip install "vlm-vision[ray]"

        _check_build_settings(batch_size, index_type)  # before a listing of many files, which takes time
        found, roots = distributed.list_sources(sources)
        with BuildLock(self.lock_path):
            actors = torch.device(self.device or "cpu")
            if actors.type == "cuda" and not torch.cuda.is_available():
                self.device = "cpu"  # a head node without a GPU: this process's model only checks and fills gaps
            self._start_build(roots, index_type)
            job = distributed.RayBuild(
                self, distributed.shard_location(str(self.db.path), self.db.id, shards), device=actors,
                address=address, ray_cpus=ray_cpus, shared_shards=shards is not None, workers=workers,
                cpus_per_worker=cpus_per_worker, batch_size=batch_size, max_pixels=max_pixels)
            with contextlib.closing(job):
                summary = job.run(found, roots, progress)
                self._ann_index(write=True, add_parts=distributed.add_parts_on_ray if job.nodes else None)
            encoders = {"encoder": ", ".join(job.encoders)} if job.encoders else {}
            self.db.set_setting("last_build", summary.as_dict() | encoders | {"engine": "ray", "nodes": job.nodes})
        return summary

    def _start_build(self, roots: list[str], index_type: str | None) -> DualEncoder:
        """Load the model and record what the build is about to use: model, processor, index type, folders."""
        model = self.model
        if self.db.model_info() is None:
            self.db.set_model_info(self._info)
        if self.db.setting("processor") is None:
            self.db.set_setting("processor", model.processor.to_dict())
        if index_type is not None:
            self.db.set_setting("index_type", index_type)
        if roots:
            self.db.add_roots(roots)
        return model

    def _choose_mode(self, to_read: int) -> None:
        """Before a build reads `to_read` files: settle `auto`, and note a change of encoder in the index."""
        if self.mode == AUTO and mode_of(self.model) == "exact":
            mode = choose_mode(self.model.device, to_read)
            if mode != "exact":
                logger.info("Mode %s for %d files (auto: compiling pays from %d images here)", mode, to_read,
                            int8_pays_from(self.model.device))
                optimize(self.model, mode)
        self.note_encoder(describe(self.model))

    def note_encoder(self, encoder: str) -> None:
        """Record in the index that `encoder` (e.g. "exact bfloat16") adds vectors, warning when others did before."""
        encoders = self.db.setting("encoders", [])
        if encoder not in encoders:
            if encoders:
                logger.warning(
                    "This index holds vectors encoded %s; this build adds vectors encoded %s. Every mode agrees "
                    "with exact float32 to cosine 0.999 or better in our tests (docs/performance.md), so search "
                    "spans both; for one encoder throughout, build a new index (another --db).",
                    " and ".join(encoders), encoder)
            self.db.set_setting("encoders", [*encoders, encoder])

    def repair(self) -> RepairReport:
        """Check the database and rebuild the ANN file from the stored vectors, re-encoding nothing.

        A database that SQLite finds damaged is only reported (`RepairReport.damage`): its rows can't be trusted, so
        the way back is a new index. Otherwise broken links between files and vectors are mended (a file left
        without a vector is dropped, so the next build encodes it again) and `<db>.faiss` is written afresh."""
        with BuildLock(self.lock_path, "repair"):
            damage = self.db.damage()
            if damage:
                return RepairReport(damage=damage)
            links = self.db.repair_links()
            self.ann_path.unlink(missing_ok=True)
            self._ann = None
            if self.db.count("vectors"):
                self._ann_index(write=True)
            return RepairReport(links=links, vectors=self.db.count("vectors"), files=self.db.count("files"))

    def forget(self, folders: Sequence[str | os.PathLike]) -> tuple[int, int]:
        """Remove what is indexed under `folders` (which need not exist any more: a renamed or retired folder);
        (files, skip records) removed. A build never does this for a missing folder, which may be an unmounted
        drive."""
        paths = [absolute(folder) for folder in folders]
        if not paths:
            raise ValueError("Give at least one folder to forget")
        with BuildLock(self.lock_path, "forget"):
            removed = self.db.forget(paths)
            if self.db.model_info() is not None:
                self._ann_index(write=True)
        return removed

    # -- searching ------------------------------------------------------------------------------------------

    def _ann_index(self, write: bool = False, add_parts: ann.AddParts | None = None):
        """The FAISS index for the current vectors: cached, read from `<db>.faiss`, updated or rebuilt (an IVF
        index filled by `add_parts`, when given: see `ann.build_ann`)."""
        stamp, index_type = self.db.stamp(), self.db.setting("index_type", "auto")

        def fits(index) -> bool:  # `build(index_type=...)` may change the setting, not the vectors (and stamp)
            return ann.index_type_of(index) == ann.resolved_index_type(index_type, index.ntotal, index.d)

        if self._ann is not None and self._ann[0] == stamp and fits(self._ann[1]):
            return self._ann[1]
        index = ann_file.read_ann(self.ann_path, stamp)
        if index is not None and not fits(index):
            index = None
        if index is None:
            index, stamp, trained_imbalance = self._updated_or_built_ann(index_type, add_parts)
            # Write it when we hold the build lock, or can take it: never race a running build's own write.
            lock = BuildLock(self.lock_path, "index rebuild")
            if write or lock.acquire():
                try:
                    ann_file.write_ann(index, self.ann_path, stamp, trained_imbalance=trained_imbalance)
                finally:
                    lock.release()
        self._ann = (stamp, index)
        return index

    def _updated_or_built_ann(self, index_type: str, add_parts: ann.AddParts | None = None):
        """(index, stamp, trained imbalance): the stale `<db>.faiss` brought up to date when `ann.update_ann` can,
        with the imbalance its file recorded after training; else a new build, with its own."""
        if index_type in ("auto", "ivf"):  # only an IVF index is ever updated
            with self.db.snapshot():  # the ids, their vectors and the stamp come from one state
                stamp = self.db.stamp()
                stale = ann_file.read_stale_ann(self.ann_path, self.db.can_update_from)
                if stale is not None:
                    stale, trained_imbalance = stale
                    try:
                        index = ann.update_ann(stale, self.db.vector_ids(), self.db.vectors_of, index_type,
                                               trained_imbalance=trained_imbalance)
                    except (RuntimeError, ValueError) as e:  # faiss, or vectors that don't fit: rebuild instead
                        logger.warning("Can't update the ANN index %s (%s); rebuilding it", self.ann_path, e)
                        index = None
                    if index is not None:
                        return index, stamp, trained_imbalance
                    del stale  # before the rebuild allocates its own
        ids, vectors, stamp = self.db.vectors()
        if vectors.shape[1] == 0:  # never built into (a build stopped before its first batch): no size recorded
            vectors = np.zeros((0, self.model.vision.config.hidden_size), dtype=np.float32)  # the pooled embedding's
        index = ann.build_ann(vectors, ids, index_type, add_parts)
        return index, stamp, ann.imbalance(index)

    def query_vector(self, text: str | Sequence[str] | None = None,
                     image: str | os.PathLike | Image.Image | None = None,
                     negative: str | Sequence[str] | None = None) -> np.ndarray:
        """The normalised query (D,): the sum of text and image embeddings, minus the negative terms."""
        texts = [text] if isinstance(text, str) else list(text or [])
        negatives = [negative] if isinstance(negative, str) else list(negative or [])
        texts, negatives = [t for t in texts if t.strip()], [t for t in negatives if t.strip()]
        if not texts and image is None:
            raise QueryError("Give a text query, an image, or both")
        parts = []
        if texts:
            parts.append(self.text_vectors(texts).sum(0))
        if image is not None:
            stored = self.db.vector_of(os.path.abspath(image)) if isinstance(image, (str, os.PathLike)) else None
            parts.append(stored if stored is not None else self.model.encode_images(image)[0].numpy())
        query = np.sum(parts, axis=0)
        if negatives:
            query = query - self.text_vectors(negatives).sum(0)
        norm = np.linalg.norm(query)
        if norm == 0:
            raise QueryError("The query terms cancel out; change the negative term")
        return (query / norm).astype(np.float32)

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings (T, D) of query texts, the last TEXT_CACHE_SIZE distinct ones kept: a repeated query (a
        server's popular searches, a page's refresh, the app's labels) skips the text tower. Thread-safe."""
        with self._text_lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._text_vectors))
            if missing:
                for text, vector in zip(missing, self.model.encode_texts(missing).numpy()):
                    self._text_vectors[text] = vector
            for text in texts:
                self._text_vectors.move_to_end(text)
            vectors = np.stack([self._text_vectors[t] for t in texts])
            while len(self._text_vectors) > TEXT_CACHE_SIZE:
                self._text_vectors.popitem(last=False)
            return vectors

    def search(self, text: str | Sequence[str] | None = None, *, image: str | os.PathLike | Image.Image | None = None,
               negative: str | Sequence[str] | None = None, k: int = 10, under: str | os.PathLike | None = None,
               since: str | None = None, until: str | None = None, camera: str | None = None,
               min_score: float | None = None) -> list[SearchHit]:
        """The `k` indexed files most similar to the query, best first (duplicates count one each).

        Only files `under` a folder, taken `since` the start of a day, month or year and `until` the end of one
        ("2024-06", "2024-08-31", "2023": both ends included; EXIF date taken, so files without one are left out),
        by a `camera` whose EXIF make and model contain the text (any case), and scoring at least `min_score`.
        """
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        only = SearchFilter.of(under, since, until, camera)
        query = self.query_vector(text, image, negative)
        index = self._ann_index()
        if not only:
            return self._files(self._ranked(index, query, k, min_score)[0], only)[:k]
        with self.db.snapshot():  # one database state for every read below
            return self._files(self._filtered(index, query, k, only, min_score), only)[:k]

    def _filtered(self, index, query: np.ndarray, k: int, only: SearchFilter,
                  min_score: float | None) -> list[tuple[float, int]]:
        """The `k` best (score, vector id) with a file that passes `only`.

        A filter that passes at most LIST_FIRST_MAX files lists their vector ids (the date and camera indexes hold
        them) and searches among those alone. For a wider one, the best FILTER_CANDIDATES matches without the
        filter come first, those that pass kept: all it takes when many photos pass. An approximate index (IVF,
        HNSW) then ranks again, as deep and as wide as the share that passed asks (the k best of a 10% filter lie
        about 10 times deeper): without this, recall@20 of a 10% filter was 0.82 against 0.95. When fewer than k
        pass (a wide filter that runs against the query: summer photos for "snow"), the allowed ids are listed
        after all. Measured end to end (`benchmarks/index.py --part filters`, p50): between 10,000 and 100,000
        allowed files both ways cost about the same (1M files, 65,944 allowed: 22.0 ms through the candidates,
        22.3 ms listed); above, the candidates win (66-90% of 1M: 14 ms against 0.14-0.16 s); below, listing
        (1% of 1M: 14 ms, where schema 3's candidates and then listing took 74-76 ms).
        """
        allowed = self.db.ids_matching(only, at_most=LIST_FIRST_MAX)
        if allowed is None:  # many pass: the best matches without the filter first
            found, complete = self._ranked(index, query, max(k, FILTER_CANDIDATES), min_score)
            kept = self._passing(found, only)
            if len(kept) >= k and not complete and ann.index_type_of(index) != "flat":
                share = len(kept) / len(found)
                again = self._ranked(index, query, min(len(found), math.ceil(2 * k / share)), min_score,
                                     widen=1 / share)[0]
                # Both passes are approximate: keep the best of either (HNSW's first pass, efSearch 1,000 for its
                # 1,000 candidates, can search deeper than the second).
                best = {i: score for score, i in kept + self._passing(again, only)}
                kept = sorted(((score, i) for i, score in best.items()), reverse=True)
            if len(kept) >= k or complete:
                return kept[:k]
            allowed = self.db.ids_matching(only)
        return self._ranked(index, query, k, min_score, allowed)[0] if len(allowed) else []

    def _passing(self, found: list[tuple[float, int]], only: SearchFilter) -> list[tuple[float, int]]:
        passing = self.db.ids_passing([i for _, i in found], only)
        return [(score, i) for score, i in found if i in passing]

    def _ranked(self, index, query: np.ndarray, n: int, min_score: float | None,
                allowed: np.ndarray | None = None, widen: float = 1.0) -> tuple[list[tuple[float, int]], bool]:
        """((score, vector id) of the `n` best vectors (of `allowed`) scoring at least `min_score`, best first;
        whether no other vector could join them: the index holds at most `n`, or (exact search only) the last
        was already below `min_score`; an approximate search may not have reached a better one)."""
        scores, ids = ann.search_ann(index, query[None], n, allowed, widen=widen)
        found = [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        below = min_score is not None and bool(found) and found[-1][0] < min_score
        complete = index.ntotal <= n or (below and ann.index_type_of(index) == "flat")
        return [(s, i) for s, i in found if min_score is None or s >= min_score], complete

    def _files(self, found: list[tuple[float, int]], only: SearchFilter) -> list[SearchHit]:
        """The files (that pass `only`) of the vectors `found`, in its order."""
        files = self.db.files_of_ids([i for _, i in found], only)
        return [SearchHit(f.path, score, f) for score, i in found for f in files.get(i, [])]

    # -- reporting ------------------------------------------------------------------------------------------

    def stats(self) -> IndexStats:
        index_type = None
        if self.db.count("vectors"):
            index_type = ann.index_type_of(self._ann_index())
        size = sum(p.stat().st_size for p in (self.db.path, self.db.path.with_name(self.db.path.name + "-wal"))
                   if p.exists())
        return IndexStats(
            str(self.db.path), self.db.count("files"), self.db.count("vectors"), self.db.count("skipped"),
            self.db.roots(), self.db.model_info(), index_type, size,
            self.ann_path.stat().st_size if self.ann_path.exists() else 0, self.db.setting("last_build"),
            self.db.setting("encoders", []))

    def errors(self) -> list[SkippedFile]:
        """Files the builds could not index, with the reason for each."""
        return self.db.skipped_files()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> PhotoIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
