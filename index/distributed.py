"""The index build on a Ray cluster: Ray Data reads and decodes, an actor pool encodes, Parquet shards carry the
results to the driver, which imports them into the index database as they arrive.

    sources, listed by the driver and diffed against the database (as the local build does)
      -> read_photos: Ray Data CPU tasks, spread over the nodes (hash, metadata, resized pixels; bad files get
         the local build's reasons)
      -> Encoder: an actor pool, one model per actor (a GPU each, or CPU cores), in the index's inference mode;
         each batch becomes one Parquet shard
      -> the driver stores each shard in SQLite (`store_batch`, the local build's commit) and finally trains FAISS
         once and fills it in parallel Ray tasks

A shard is written under a temporary name and renamed, and named after its files, so a shard on disk is whole and a
retried batch rewrites the same shard. A rerun (after a crash, a lost node, or with new photos) takes each file
whose path, size and mtime a shard still holds from that shard instead of reading it again. Needs the optional
extra: pip install "vlm-vision[ray]".
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import faiss
import numpy as np
import torch
from pyarrow import ArrowException

from vlm_vision.model import NaFlexProcessor, Preprocessing, processor_from_dict

from . import faults
from .build import BuildProgress, BuildSummary, _Batch, _commit, finish_build, plan_build, rereader, store_batch
from .encoding import check_same_model, encode_pixels, model_info
from .photos import PhotoRecord, read_photo
from .scan import FoundFile, ScanResult
from .sources import is_uri, list_sources

if TYPE_CHECKING:
    import pyarrow as pa

    from .photo_index import PhotoIndex

__all__ = ["RayBuild", "add_parts_on_ray", "list_sources", "ray_session"]

logger = logging.getLogger(__name__)

RAY_EXTRA = 'pip install "vlm-vision[ray]"'
# Below this many vectors per part, adding on this process beats shipping parts to tasks (FAISS's own add is
# multi-threaded): `add_parts_on_ray` fills one part per this many vectors, at most one per CPU of the cluster.
ADD_PART_MIN_VECTORS = 100_000
# A decoding task reserves this much memory: a 100-megapixel photo (photos.DEFAULT_MAX_PIXELS) decodes to 300 MB.
DECODE_MEMORY = 512 * 2**20
_TEXT = ("hash", "taken_at", "camera", "error")  # string columns, "" for none between the stages
_NUMBERS = ("width", "height")  # int columns, -1 for none between the stages


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ImportError(f"The distributed build needs Ray Data: {RAY_EXTRA}") from e
    return ray


@contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[list[str]]:
    """Connect to the Ray cluster at `address`, or start a Ray instance on this machine bound to 127.0.0.1 only
    (offering `num_cpus` CPUs, default: the machine's); a session already open in this process (the caller's own
    `ray.init`) is used as it is. Yields the addresses of the cluster's live nodes."""
    if address is None:  # read when ray is first imported: a local instance then never binds a network address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = _import_ray()
    if ray.is_initialized():
        yield node_addresses()
        return
    try:
        if address is None:  # "local": a new instance even where $RAY_ADDRESS names a cluster (--address auto: it)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as e:
        raise ValueError(f"Can't reach a Ray cluster at {address!r} ({e}). Start one (`ray start --head`), or leave "
                         f"out --address to run Ray on this machine alone.") from e
    try:
        yield node_addresses()
    finally:
        ray.shutdown()


def node_addresses() -> list[str]:
    """The addresses of the Ray cluster's live nodes, one per node."""
    ray = _import_ray()
    return [node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]]


class ShardFolder:
    """The Parquet shards of a distributed build, in a local folder or under a URI (s3://, gs://, ...)."""

    def __init__(self, location: str) -> None:
        from pyarrow import fs

        self.location = location
        if is_uri(location):
            self.fs, self.root = fs.FileSystem.from_uri(location)
        else:
            self.fs, self.root = fs.LocalFileSystem(), os.path.abspath(location)
        self.fs.create_dir(self.root, recursive=True)

    def write(self, table: pa.Table) -> str:
        """Write one batch's shard whole (a temporary name, then renamed); returns its name."""
        import pyarrow.parquet as pq

        key = "\n".join(f"{p}\t{s}\t{m}" for p, s, m in _rows(table, ("path", "size", "mtime_ns")))
        name = f"shard-{hashlib.blake2b(key.encode('utf-8', 'surrogateescape'), digest_size=12).hexdigest()}.parquet"
        temporary = f"{self.root}/{name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table, temporary, filesystem=self.fs)
        self.fs.move(temporary, f"{self.root}/{name}")
        return name

    def read(self, name: str, columns: Sequence[str] | None = None) -> pa.Table:
        import pyarrow.parquet as pq

        return pq.read_table(f"{self.root}/{name}", columns=columns, filesystem=self.fs)

    def delete(self, name: str) -> None:
        self.fs.delete_file(f"{self.root}/{name}")

    def finished(self) -> dict[tuple[str, int, int], str]:
        """(path, size, mtime_ns) -> the shard holding that file's row, over every whole shard; files skipped with a
        reason are left out (they are read again, as the local build retries them). Temporary files of a killed
        writer are deleted; so is a shard that can't be read (it is written again if needed)."""
        from pyarrow import fs

        held = {}
        infos = self.fs.get_file_info(fs.FileSelector(self.root))
        for info in sorted(infos, key=lambda i: (i.mtime_ns or 0, i.base_name)):  # a newer shard wins
            if info.base_name.endswith(".tmp"):
                self.fs.delete_file(info.path)
            elif info.base_name.startswith("shard-") and info.base_name.endswith(".parquet"):
                try:
                    table = self.read(info.base_name, ["path", "size", "mtime_ns", "error"])
                except (ArrowException, OSError) as e:
                    logger.warning("Shard %s can't be read (%s); deleting it", info.path, e)
                    self.fs.delete_file(info.path)
                    continue
                for *key, error in _rows(table, ("path", "size", "mtime_ns", "error")):
                    if error is None:
                        held[tuple(key)] = info.base_name
        return held


def _rows(table: pa.Table, columns: Sequence[str]) -> Iterator[tuple]:
    """The values of `columns`, one tuple per row."""
    return zip(*(table.column(c).to_pylist() for c in columns))


def shard_location(db_path: str, database_id: str, shards: str | os.PathLike | None) -> str:
    """Where an index's shards go: a folder named by its database's id under `shards` (default: `<db>.shards`
    beside the database), so that a new index (another model, a rebuilt database) never takes an old one's."""
    base = str(shards) if shards is not None else f"{db_path}.shards"
    return f"{base.rstrip('/')}/{database_id}"


def _pixel_shape(processor: Preprocessing) -> tuple[int, ...]:
    """The shape of one image's uint8 pixels between the stages: (3, H, W), or NaFlex patches (N, p * p * 3)."""
    if isinstance(processor, NaFlexProcessor):
        return processor.max_num_patches, processor.patch_size ** 2 * 3
    return 3, *processor.size


def read_photos(batch: dict[str, np.ndarray], processor: dict, known, max_pixels: int | None) -> dict:
    """Ray Data task: read a batch of files (`read_photo`, the local build's reader) into columns. Pixels of files
    not decoded (bad, or content the index has) are zeros, with `decoded` False."""
    ray = _import_ray()
    processor = processor_from_dict(processor)
    known_hashes = KnownHashes(ray.get(known) if isinstance(known, ray.ObjectRef) else known)
    files = [FoundFile(str(p), int(s), int(m), int(c))
             for p, s, m, c in zip(batch["path"], batch["size"], batch["mtime_ns"], batch["ctime_ns"])]
    records = [read_photo(f, processor, known_hashes, max_pixels) for f in files]
    pixels = np.zeros((len(records), *_pixel_shape(processor)), dtype=np.uint8)
    grids = np.zeros((len(records), 2), dtype=np.int64)
    for i, r in enumerate(records):
        if r.pixels is not None:
            pixels[i] = r.pixels.numpy()
            grids[i] = r.grid or (0, 0)
    columns = {name: batch[name] for name in ("path", "size", "mtime_ns", "ctime_ns")}
    columns |= {name: np.array([getattr(r, name) or "" for r in records], dtype=object) for name in _TEXT}
    columns |= {name: np.array([-1 if getattr(r, name) is None else getattr(r, name) for r in records])
                for name in _NUMBERS}
    return columns | {"decoded": np.array([r.pixels is not None for r in records]), "pixels": pixels, "grid": grids}


class KnownHashes:
    """The index's content hashes as one sorted array (zero-copy from Ray's object store): `in` by binary search."""

    def __init__(self, hashes: np.ndarray) -> None:
        self.hashes = hashes

    @staticmethod
    def array(hashes: set[str]) -> np.ndarray:
        return np.array(sorted(hashes), dtype="S32")

    def __contains__(self, digest: str) -> bool:
        i = int(np.searchsorted(self.hashes, digest.encode()))
        return i < len(self.hashes) and self.hashes[i] == digest.encode()


class Encoder:
    """Ray Data actor: one model, loaded once, encodes each batch of decoded photos and writes the batch as a shard.
    Returns one row per batch: the shard's name, its files and what encoded them."""

    def __init__(self, model: str, dtype: str | None, mode: str, device: str, threads: int, processor: dict,
                 recorded, shards: str) -> None:
        from vlm_vision.checkpoints import resolve_checkpoint
        from vlm_vision.inference import optimize
        from vlm_vision.model import DualEncoder

        if device == "cpu":
            torch.set_num_threads(threads)
        folder = resolve_checkpoint(model)
        self.model = DualEncoder.from_pretrained(folder, dtype=dtype, device=device)
        self.model.processor = processor_from_dict(processor)
        check_same_model(recorded, model_info(self.model, model, folder))  # every node, the same model
        if mode != "exact":
            optimize(self.model, mode)
        self.shards = ShardFolder(shards)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pyarrow as pa

        from vlm_vision.inference import describe

        decoded = np.asarray(batch["decoded"], dtype=bool)
        dim = self.model.vision.config.hidden_size
        embeddings = [None] * len(decoded)
        if decoded.any():
            naflex = isinstance(self.model.processor, NaFlexProcessor)
            grids = torch.from_numpy(np.asarray(batch["grid"])[decoded]) if naflex else None
            vectors = encode_pixels(self.model, torch.from_numpy(np.asarray(batch["pixels"])[decoded]), grids)
            for row, vector in zip(np.flatnonzero(decoded), vectors):
                embeddings[row] = vector
        columns = {name: pa.array([int(v) for v in batch[name]], pa.int64())
                   for name in ("size", "mtime_ns", "ctime_ns")}
        columns |= {name: pa.array([str(v) or None for v in batch[name]], pa.string()) for name in _TEXT}
        columns |= {name: pa.array([None if v < 0 else int(v) for v in batch[name]], pa.int32()) for name in _NUMBERS}
        table = pa.table({"path": pa.array([str(p) for p in batch["path"]], pa.string())} | columns | {
            "embedding": pa.array(embeddings, pa.list_(pa.float32(), dim))})
        return {"shard": np.array([self.shards.write(table)]), "files": np.array([len(decoded)]),
                "encoded": np.array([int(decoded.sum())]), "encoder": np.array([describe(self.model)])}


class RayBuild:
    """One distributed build of `index` (the driver side)."""

    def __init__(self, index: PhotoIndex, shards: str, *, device: torch.device, address: str | None,
                 ray_cpus: int | None, shared_shards: bool, workers: int | None, cpus_per_worker: int,
                 batch_size: int, max_pixels: int | None) -> None:
        self.index, self.db, self.shards, self.device = index, index.db, ShardFolder(shards), device
        self.address, self.ray_cpus, self.shared_shards = address, ray_cpus, shared_shards
        self.workers, self.cpus_per_worker, self.batch_size, self.max_pixels = (workers, cpus_per_worker,
                                                                                batch_size, max_pixels)
        self.encoders: list[str] = []  # what encoded this build's vectors
        self.nodes: list[str] | None = None  # the cluster's node addresses, once Ray is started: only when needed
        self._session = ExitStack()

    def ray(self):
        """The `ray` module, connected: the session starts on first use (a rerun with nothing to read starts none)."""
        if self.nodes is None:
            self.nodes = self._session.enter_context(ray_session(self.address, self.ray_cpus))
            if not self.shared_shards and len(set(self.nodes)) > 1:
                raise ValueError(f"The Ray cluster has nodes on {len(set(self.nodes))} machines: give --shards a "
                                 f"folder or URI that every node and this process see (NFS, s3://...), not the "
                                 f"default beside the database, which only this machine sees")
        return _import_ray()

    def close(self) -> None:
        """End the Ray session this build started, if any."""
        self._session.close()

    def run(self, found: ScanResult, folders: list[str],
            progress: Callable[[BuildProgress], None] | None = None) -> BuildSummary:
        start = time.perf_counter()
        summary = BuildSummary()
        plan = plan_build(self.db, found, folders, summary)
        held = self.shards.finished()
        from_shards: dict[str, list[FoundFile]] = {}
        to_encode: list[FoundFile] = []
        for f in plan.to_read:
            name = held.get((f.path, f.size, f.mtime_ns))
            if name is None:
                to_encode.append(f)
            else:
                from_shards.setdefault(name, []).append(f)
        known = self.db.known_hashes()
        done = 0

        def store(name: str, files: list[FoundFile] | None) -> None:
            nonlocal done
            done += self._store_shard(name, files, plan.indexed_before, known, summary)
            faults.point("shard")
            if progress is not None:
                progress(BuildProgress(done, len(plan.to_read), summary.encoded, time.perf_counter() - start))

        if from_shards:
            logger.info("Taking %d files from the shards of an earlier run", sum(map(len, from_shards.values())))
        for name, files in from_shards.items():
            try:
                store(name, files)
            except (ArrowException, OSError) as e:  # torn inside, past the columns `finished` read
                logger.warning("Shard %s can't be read (%s); deleting it and reading its files again", name, e)
                self.shards.delete(name)
                to_encode += files
        if to_encode:
            for row in self._encode(to_encode, known):
                if row["encoder"] not in self.encoders:
                    self.encoders.append(row["encoder"])
                    self.index.note_encoder(row["encoder"])
                store(row["shard"], None)
        return finish_build(self.db, plan, summary, start)

    def _encode(self, files: list[FoundFile], known: set[str]) -> Iterator[dict]:
        """Run the Ray Data pipeline over `files`; yields one row per shard written, as each is finished."""
        ray = self.ray()
        from vlm_vision.inference import choose_mode

        index, model = self.index, self.index.model
        device = self.device  # the actors'; the driver's own model may be on its CPU
        gpus = device.type == "cuda"
        resources = ray.cluster_resources()
        workers = self.workers or (int(resources.get("GPU", 0)) if gpus else
                                   max(1, int(resources.get("CPU", 1)) // self.cpus_per_worker - 1))
        if gpus and resources.get("GPU", 0) < 1:
            raise ValueError("--device cuda, but the Ray cluster has no GPU: leave out --device to encode on CPUs")
        cpus = resources.get("CPU", 0)
        if not gpus and workers * self.cpus_per_worker >= cpus:
            raise ValueError(f"{workers} model workers of {self.cpus_per_worker} CPUs each would take all {cpus:g} "
                             f"CPUs of the Ray cluster and leave none for decoding: ask for fewer workers (--workers) "
                             f"or fewer CPUs each (--cpus-per-worker); on this machine alone, --ray-cpus may offer "
                             f"Ray more CPUs than it has cores")
        mode = index.mode if index.mode != "auto" else choose_mode(device, len(files) // workers)
        context = ray.data.DataContext.get_current()  # the build's own progress bar reports, in files
        context.enable_progress_bars = context.print_on_execution_start = False
        # Shards arrive in the order of the files: a build stores what the local build stores, in the same order
        # (the same vector ids), whichever actor finishes first; later batches wait in the object store meanwhile.
        context.execution_options.preserve_order = True
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # its "execution finished" lines: the bar says it
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
        processor = model.processor.to_dict()
        rows = [{"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "ctime_ns": f.ctime_ns} for f in files]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // self.batch_size)))
        # Decoding tasks (Ray Data spreads them over the nodes) reserve the memory a large photo takes to decode;
        # asking for it also keeps Ray Data from fusing the decoding into the model actors, which would wait on it.
        dataset = dataset.map_batches(
            read_photos, batch_size=self.batch_size, num_cpus=1, memory=DECODE_MEMORY,
            fn_kwargs={"processor": processor, "known": ray.put(KnownHashes.array(known)),
                       "max_pixels": self.max_pixels})
        dataset = dataset.map_batches(
            Encoder, batch_size=self.batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=0 if gpus else self.cpus_per_worker, num_gpus=1 if gpus else 0,
            fn_constructor_kwargs={
                "model": index.model_name, "dtype": str(index.dtype).removeprefix("torch.") if index.dtype else None,
                "mode": mode, "device": "cuda" if gpus else "cpu", "threads": self.cpus_per_worker,
                "processor": processor, "recorded": self.db.model_info(),
                "shards": self.shards.location})
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["shard"])):
                yield {key: getattr(batch[key][i], "item", lambda v=batch[key][i]: v)()  # numpy scalar or str
                       for key in ("shard", "files", "encoded", "encoder")}

    def _store_shard(self, name: str, files: list[FoundFile] | None, indexed_before: dict, known: set[str],
                     summary: BuildSummary) -> int:
        """Store one shard's rows (those of `files` only, when given) like one batch of the local build; returns
        the number of files stored. Content a reader skipped as indexed, but gone from the index since, is read
        and encoded here."""
        table = self.shards.read(name)
        # The embeddings as one array: 20 times faster than through Python lists, on the driver's path for every file
        column = table.column("embedding").combine_chunks()
        embeddings = column.values.to_numpy(zero_copy_only=False).reshape(len(column), self.db.model_info().dim)
        has_embedding = column.is_valid().to_numpy(zero_copy_only=False)
        wanted = None if files is None else {(f.path, f.size, f.mtime_ns): f for f in files}
        records, vectors, stragglers = [], {}, []
        for i, row in enumerate(table.drop_columns(["embedding"]).to_pylist()):
            key = (row["path"], row["size"], row["mtime_ns"])
            if wanted is not None and (key not in wanted or row["error"] is not None):
                continue  # a file changed since this shard was written, another run's row, or a skip to retry
            file = FoundFile(*key, row["ctime_ns"]) if wanted is None else wanted[key]  # the scan's ctime
            record = PhotoRecord(file, row["hash"], row["width"], row["height"], row["taken_at"], row["camera"],
                                 error=row["error"])
            if record.error is None and has_embedding[i] and record.hash not in known:
                vectors.setdefault(record.hash, embeddings[i])
            if record.error is None and record.hash not in known and record.hash not in vectors:
                stragglers.append(record)
            else:
                records.append(record)
        store_batch(self.db, records, vectors, indexed_before, known, summary, encoded_now=files is None)
        if files is not None:
            summary.resumed += len(records)
        if stragglers:  # after the rest: its commit may drop content these records share, never the reverse
            batch = _Batch(stragglers, None, [None] * len(stragglers))
            _commit(self.db, self.index._encode_pixels, rereader(self.index.model.processor, self.max_pixels), batch,
                    indexed_before, known, summary)
        return len(records) + len(stragglers)


def add_parts_on_ray(trained: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> list[faiss.Index]:
    """`ann.AddParts` on Ray: copies of the trained `trained` index filled in parallel tasks, one part each."""
    ray = _import_ray()
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    parts = max(1, min(cpus, len(vectors) // ADD_PART_MIN_VECTORS))
    blob = ray.put(faiss.serialize_index(trained))
    bounds = np.linspace(0, len(vectors), parts + 1).astype(int)
    add = ray.remote(num_cpus=1)(_add_part)
    filled = ray.get([add.remote(blob, vectors[a:b], ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    return [faiss.deserialize_index(part) for part in filled]


def _add_part(trained: np.ndarray, vectors: np.ndarray, ids: np.ndarray) -> np.ndarray:
    index = faiss.deserialize_index(trained)
    index.add_with_ids(vectors, ids)
    return faiss.serialize_index(index)
