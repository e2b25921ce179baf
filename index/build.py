"""The build pipeline: scan, diff against the database, read and encode what changed, commit in batches.

Decoding runs in DataLoader workers while the main process runs the model, and
each batch is committed in one transaction, so a build killed at any moment
resumes where it stopped. Removals of files that vanished from disk come last,
after renamed files had their chance to reuse the vectors of their old paths.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vlm_vision.model import Preprocessing

from .db import Database, IndexedFile, SkippedFile
from .photos import DEFAULT_MAX_PIXELS, PhotoRecord, read_photo
from .scan import FoundFile, ScanResult, is_under, scan

logger = logging.getLogger(__name__)

# Resized uint8 images (B, 3, H, W), or NaFlex uint8 patches (B, N, p * p * 3) with their grids (B, 2), ->
# L2-normalised float32 embeddings (B, D).
Encoder = Callable[[torch.Tensor, torch.Tensor | None], np.ndarray]


def default_workers() -> int:
    """Decoding processes: one per core beyond the one running the model, at least 1, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class BuildProgress:
    """Passed to the progress callback after each committed batch."""

    done: int  # files read so far in this build
    total: int  # files to read (new, changed, or skipped before and changed since)
    encoded: int  # images run through the model so far
    seconds: float


@dataclass
class BuildSummary:
    added: int = 0  # new paths, content encoded
    updated: int = 0  # changed paths, content re-encoded
    reused: int = 0  # new or changed paths whose content was already indexed (renames, duplicates)
    removed: int = 0  # paths gone from disk, dropped from the index
    skipped: int = 0  # files that can't be indexed; reasons in `skipped_files` and `vlm-index errors`
    unchanged: int = 0  # same size and mtime as at the last build: not read
    encoded: int = 0  # images run through the model
    resumed: int = 0  # files taken from the shards of an earlier, unfinished distributed build: not read again
    seconds: float = 0.0
    skipped_files: list[SkippedFile] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        keys = ("added", "updated", "reused", "removed", "skipped", "unchanged", "encoded", "resumed", "seconds")
        return {k: getattr(self, k) for k in keys}


class _PhotoDataset(Dataset):
    """Reads one file per item in a worker; the model never waits on decoding."""

    def __init__(self, files: Sequence[FoundFile], processor: Preprocessing, known: frozenset[str],
                 max_pixels: int | None) -> None:
        self.files, self.processor, self.known, self.max_pixels = files, processor, known, max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> PhotoRecord:
        return read_photo(self.files[i], self.processor, self.known, self.max_pixels)


@dataclass
class _Batch:
    """One DataLoader batch: its records, and the pixels of those decoded, stacked in one tensor.

    Stacking in the worker sends one shared-memory tensor per batch to the main process instead of one
    per image, which had held a GPU build to 14% of the model's own speed.
    """

    records: list[PhotoRecord]
    pixels: torch.Tensor | None  # (B', 3, H, W), or NaFlex patches (B', N, p * p * 3)
    rows: list[int | None]  # records[i]'s row in `pixels`; None when it wasn't decoded
    grids: torch.Tensor | None = None  # NaFlex: (B', 2), each row's patch grid (h, w)

    def pin_memory(self) -> _Batch:
        """Called by the DataLoader's pinning thread (pin_memory=True): page-locked pixels copy to a GPU without
        waiting for the host."""
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


def _collate(records: list[PhotoRecord]) -> _Batch:
    rows, stacked, grids = [], [], []
    for r in records:
        rows.append(None if r.pixels is None else len(stacked))
        if r.pixels is not None:
            stacked.append(r.pixels)
            grids.append(r.grid)
            r.pixels = None  # travels once, in the stacked tensor
    naflex = bool(grids) and grids[0] is not None
    return _Batch(records, torch.stack(stacked) if stacked else None, rows, torch.tensor(grids) if naflex else None)


@dataclass
class BuildPlan:
    """What a build has to do, from a scan diffed against the database."""

    to_read: list[FoundFile]  # new files, changed ones, and skipped ones changed since
    indexed_before: dict[str, tuple[int, int, str]]  # path -> (size, mtime_ns, hash) under the folders
    gone: list[str]  # paths in the index (indexed or skipped) no longer found: removed after the reading


def plan_build(db: Database, found: ScanResult, folders: Sequence[str], summary: BuildSummary) -> BuildPlan:
    """Diff `found` (a scan of `folders`, plus any listed files) against the database, count what is unchanged into
    `summary`, and record the scan's problems at once."""
    indexed_before = db.file_states(folders)
    skipped_before = db.skipped_states(folders)
    listed = [f.path for f in found.files if not is_under(f.path, folders)]  # from a listing, not a folder
    if listed:
        indexed_before |= db.file_states_at(listed)
        skipped_before |= db.skipped_states_at(listed)
    to_read: list[FoundFile] = []
    seen: set[str] = set()
    for f in found.files:
        seen.add(f.path)
        state = indexed_before.get(f.path)
        if state is not None and state[:2] == (f.size, f.mtime_ns):
            summary.unchanged += 1
        elif skipped_before.get(f.path) == (f.size, f.mtime_ns, f.ctime_ns):
            summary.skipped += 1  # skipped before and untouched since: the same reason still holds
        else:
            to_read.append(f)
    problems = [SkippedFile(p.path, p.reason) for p in found.problems]
    seen.update(p.path for p in problems)
    db.commit_batch([], {}, problems)
    summary.skipped += len(problems)
    summary.skipped_files += problems
    gone = [p for p in (indexed_before.keys() | skipped_before.keys())
            if p not in seen and not is_under(p, found.unlisted)]
    return BuildPlan(to_read, indexed_before, gone)


def finish_build(db: Database, plan: BuildPlan, summary: BuildSummary, start: float) -> BuildSummary:
    """Remove the files gone from disk (last: renamed files had their chance to reuse their vectors)."""
    if plan.gone:
        db.remove(plan.gone)
    summary.removed = sum(p in plan.indexed_before for p in plan.gone)
    summary.seconds = time.perf_counter() - start
    return summary


def run_build(db: Database, encode: Encoder, processor: Preprocessing, folders: Sequence[str], *,
              batch_size: int = 32, workers: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
              progress: Callable[[BuildProgress], None] | None = None,
              before_reading: Callable[[int], None] | None = None, pin_memory: bool = False) -> BuildSummary:
    """Bring the index up to date with `folders` (absolute paths of existing folders).

    `before_reading(n)` learns how many files the build will read, at most the images it will encode, before the
    first is read: the encoder's mode may depend on it (compiling pays only for many images). `pin_memory` pins
    each batch's pixels as it arrives (for a model on a GPU)."""
    start = time.perf_counter()
    summary = BuildSummary()
    plan = plan_build(db, scan(folders), folders, summary)
    to_read = plan.to_read
    if to_read and before_reading is not None:
        before_reading(len(to_read))
    known = db.known_hashes()
    dataset = _PhotoDataset(to_read, processor, frozenset(known), max_pixels)
    workers = min(default_workers() if workers is None else workers, len(to_read) // batch_size + 1)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers if to_read else 0,
                        collate_fn=_collate, prefetch_factor=4 if workers and to_read else None, pin_memory=pin_memory)
    done = 0
    reread = rereader(processor, max_pixels)
    for batch in loader:
        _commit(db, encode, reread, batch, plan.indexed_before, known, summary)
        done += len(batch.records)
        if progress is not None:
            progress(BuildProgress(done, len(to_read), summary.encoded, time.perf_counter() - start))
    return finish_build(db, plan, summary, start)


def rereader(processor: Preprocessing, max_pixels: int | None) -> Callable[[FoundFile], PhotoRecord]:
    """Reads a file again, decoding it whatever its content (see `_commit`)."""
    def reread(file: FoundFile) -> PhotoRecord:
        return read_photo(file, processor, frozenset(), max_pixels)
    return reread


def _commit(db: Database, encode: Encoder, reread: Callable[[FoundFile], PhotoRecord], batch: _Batch,
            indexed_before: dict, known: set[str], summary: BuildSummary) -> None:
    """Encode the new contents of one batch and store the batch in one transaction."""
    records, rows, pixels, grids = list(batch.records), list(batch.rows), batch.pixels, batch.grids
    for i, r in enumerate(records):
        # A worker skips decoding content the index had when the build started; if that content has left
        # the index since (its only file was modified in an earlier batch), decode it after all.
        if r.error is None and rows[i] is None and r.hash not in known:
            r = records[i] = reread(r.file)
            if r.error is None:
                rows[i] = 0 if pixels is None else len(pixels)
                pixels = r.pixels[None] if pixels is None else torch.cat([pixels, r.pixels[None]])
                if r.grid is not None:
                    grid = torch.tensor([r.grid])
                    grids = grid if grids is None else torch.cat([grids, grid])
    to_encode: dict[str, int] = {}  # new content: hash -> its pixel row
    for r, row in zip(records, rows):
        if r.error is None and row is not None and r.hash not in known and r.hash not in to_encode:
            to_encode[r.hash] = row
    vectors: dict[str, np.ndarray] = {}
    if to_encode:
        chosen = list(to_encode.values())
        every = chosen == list(range(len(pixels)))
        selected = pixels if every else pixels[chosen]  # (B, 3, H, W), or NaFlex patches
        selected_grids = None if grids is None else grids if every else grids[chosen]
        vectors = dict(zip(to_encode, encode(selected, selected_grids)))
    store_batch(db, records, vectors, indexed_before, known, summary)


def store_batch(db: Database, records: Sequence[PhotoRecord], vectors: dict[str, np.ndarray], indexed_before: dict,
                known: set[str], summary: BuildSummary, encoded_now: bool = True) -> None:
    """Store one batch in one transaction: `records` (read or skipped files) and `vectors`, the embeddings of their
    contents that `known` (the hashes in the index, kept up to date here) lacks. The first record of a new content
    counts as added or updated, the others as reused; `vectors` count as encoded unless an earlier run made them."""
    skipped = [SkippedFile(r.file.path, r.error, r.file.size, r.file.mtime_ns, r.file.ctime_ns)
               for r in records if r.error is not None]
    good = [r for r in records if r.error is None]
    first: dict[str, PhotoRecord] = {}  # new content: hash -> the record it came from
    for r in good:
        if r.hash in vectors:
            first.setdefault(r.hash, r)
    # Content indexed before (renames, duplicates) takes its metadata from a file that has it.
    metadata = db.metadata_of(r.hash for r in good if r.hash not in vectors)
    metadata |= {h: (r.width, r.height, r.taken_at, r.camera) for h, r in first.items()}
    files = []
    for r in good:
        files.append(IndexedFile(r.file.path, r.hash, r.file.size, r.file.mtime_ns, *metadata[r.hash]))
        if first.get(r.hash) is r:
            if r.file.path in indexed_before:
                summary.updated += 1
            else:
                summary.added += 1
        else:
            summary.reused += 1
    known -= db.commit_batch(files, vectors, skipped)
    known.update(vectors)
    summary.encoded += len(vectors) if encoded_now else 0
    summary.skipped += len(skipped)
    summary.skipped_files += skipped
