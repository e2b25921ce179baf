"""The FAISS index file beside the database (`<db>.faiss`): one file, so the stamp and the index can't disagree.

Format:
    magic b"VLMANN02" | u32 stamp length | stamp (UTF-8) | f64 trained imbalance |
    u64 payload length | u32 CRC-32 of the trained imbalance and the payload | payload (faiss.write_index bytes)

The stamp names the database state the index was built from (`Database.stamp`). The trained imbalance is the IVF
lists' `ann.imbalance` right after training (NaN for flat and HNSW), which `ann.update_ann` compares an update
with. Files of the first format, b"VLMANN01" (no trained imbalance; the CRC covers the payload alone), are searched
as they are and rebuilt rather than updated. A file that is missing, stale, truncated or damaged reads as None, with
the reason logged, and the caller rebuilds it; writes are atomic.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import faiss

from vlm_vision.checkpoints import replace_atomically

from . import faults
from .ann import index_type_of

logger = logging.getLogger(__name__)

_MAGIC = b"VLMANN02"
_MAGIC_V1 = b"VLMANN01"  # the first format: no trained imbalance
_STAMP_HEADER = struct.Struct("<8sI")  # magic, stamp length
_IMBALANCE = struct.Struct("<d")  # trained imbalance (VLMANN02 only)
_PAYLOAD_HEADER = struct.Struct("<QI")  # payload length, CRC-32
_CHUNK = 1 << 22  # bytes read at a time when checking the CRC


def write_ann(index: faiss.Index, path: Path, stamp: str, *, trained_imbalance: float) -> None:
    """Write `index`, `stamp` and `trained_imbalance` to `path` atomically: readers see the old file or the new one,
    never half of one.

    `trained_imbalance` is the lists' `ann.imbalance` right after training: measured on an index just built, and
    for an index that `update_ann` brought up to date, the value `read_stale_ann` gave with it.
    """
    path = Path(path)
    stamp_bytes = stamp.encode("utf-8")
    imbalance_bytes = _IMBALANCE.pack(trained_imbalance)
    length = 0

    def write(f: BinaryIO) -> None:
        nonlocal length
        f.write(_STAMP_HEADER.pack(_MAGIC, len(stamp_bytes)) + stamp_bytes + imbalance_bytes)
        payload_at = f.tell() + _PAYLOAD_HEADER.size
        f.write(_PAYLOAD_HEADER.pack(0, 0))  # patched once the payload is written
        crc = zlib.crc32(imbalance_bytes)

        def write_chunk(chunk: bytes) -> int:
            nonlocal crc
            crc = zlib.crc32(chunk, crc)
            return f.write(chunk)

        # Streams the index through a callback, so no second in-memory copy of it is made.
        faiss.write_index(index, faiss.PyCallbackIOWriter(write_chunk))
        faults.point("ann-write")
        length = f.tell() - payload_at
        f.seek(payload_at - _PAYLOAD_HEADER.size)
        f.write(_PAYLOAD_HEADER.pack(length, crc))

    replace_atomically(path, write, durable=True)
    logger.info("Wrote %s index of %d vectors to %s (%d bytes)", index_type_of(index), index.ntotal, path, length)


def read_ann(path: Path, stamp: str) -> faiss.Index | None:
    """The index at `path` if it was written with `stamp`; None, logging why, if missing, stale or damaged."""
    found = _read(Path(path), stamp.encode("utf-8"))
    return None if found is None else found[0]


def read_stale_ann(path: Path, accept: Callable[[str], bool]) -> tuple[faiss.Index, float | None] | None:
    """(index, trained imbalance) at `path` if `accept(its stamp)`, checked before the payload is read; else None
    (logged). The trained imbalance, for `update_ann`, is None where the file doesn't record one (the first
    format) or records an impossible one (below 1, infinite or NaN: an imbalance factor is at least 1)."""
    return _read(Path(path), lambda stamp: accept(stamp.decode("utf-8", errors="replace")))


def _read(path: Path, accept: bytes | Callable[[bytes], bool]) -> tuple[faiss.Index, float | None] | None:
    try:
        with open(path, "rb") as f:
            return _read_open(f, path, accept)
    except FileNotFoundError:
        logger.info("No ANN index at %s; it will be built", path)
    except OSError as e:
        logger.warning("Can't read ANN index %s (%s); it will be rebuilt", path, e)
    return None


def _read_open(f, path: Path, accept: bytes | Callable[[bytes], bool]) -> tuple[faiss.Index, float | None] | None:
    """(index, trained imbalance) in an open file whose stamp is `accept` (or passes it); None, logging why.
    OSError is left to the caller."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(_STAMP_HEADER.size)
    magic = head[: len(_MAGIC)]
    if len(head) < _STAMP_HEADER.size or magic not in (_MAGIC, _MAGIC_V1):
        if len(head) == _STAMP_HEADER.size and magic[:6] == _MAGIC[:6]:
            logger.warning("ANN index %s is in a newer format (%r) than this version reads (%r); it will be rebuilt",
                           path, magic, _MAGIC)
        else:
            logger.warning("%s is not an ANN index file (no %r header); it will be rebuilt", path, _MAGIC)
        return None
    _, stamp_len = _STAMP_HEADER.unpack(head)
    imbalance_size = _IMBALANCE.size if magic == _MAGIC else 0
    payload_at = _STAMP_HEADER.size + stamp_len + imbalance_size + _PAYLOAD_HEADER.size
    if payload_at > size:
        logger.warning("ANN index %s is truncated (%d bytes); it will be rebuilt", path, size)
        return None
    found = f.read(stamp_len)
    if callable(accept):
        if not accept(found):
            logger.info("ANN index %s (stamp %.80r) can't be updated; it will be rebuilt", path, found)
            return None
    elif found != accept:
        logger.info("ANN index %s is stale (stamp %.80r, database %.80r); it will be updated or rebuilt",
                    path, found, accept)
        return None
    imbalance_bytes = f.read(imbalance_size)
    length, crc = _PAYLOAD_HEADER.unpack(f.read(_PAYLOAD_HEADER.size))
    if payload_at + length != size:
        logger.warning("ANN index %s is truncated or has trailing bytes (%d bytes, header says %d); "
                       "it will be rebuilt", path, size, payload_at + length)
        return None
    # Check the CRC before faiss parses anything: damaged sizes inside the payload could
    # make it allocate wildly, and damaged vectors would load without any error.
    found_crc = zlib.crc32(imbalance_bytes)
    while chunk := f.read(_CHUNK):
        found_crc = zlib.crc32(chunk, found_crc)
    if found_crc != crc:
        logger.warning("ANN index %s is damaged (CRC mismatch); it will be rebuilt", path)
        return None
    f.seek(payload_at)
    try:
        index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
        kind = index_type_of(index)
    except (RuntimeError, ValueError) as e:
        logger.warning("ANN index %s can't be loaded (%s); it will be rebuilt", path, str(e).splitlines()[0])
        return None
    trained = _IMBALANCE.unpack(imbalance_bytes)[0] if imbalance_bytes else None
    if trained is not None and kind == "ivf" and not 1.0 <= trained < math.inf:
        logger.warning("ANN index %s records an impossible imbalance after training (%r)", path, trained)
        trained = None
    return index, trained
