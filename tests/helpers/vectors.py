"""Synthetic embeddings and index files for the ANN and photo-index tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

DIM = 64


def clustered(n: int, seed: int, n_clusters: int = 50, dim: int = DIM) -> np.ndarray:
    """(n, dim) unit float32 vectors around `n_clusters` random centres (seeded; same centres for every seed)."""
    centres = np.random.default_rng(1234).standard_normal((n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(n_clusters, size=n)] + 0.1 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def example_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base (5000, 64), ids (5000,): unique, non-contiguous, large int64, queries (200, 64), held out)."""
    base = clustered(5000, seed=0)
    ids = np.random.default_rng(1).choice(2**40, size=5000, replace=False).astype(np.int64)
    return base, ids, clustered(200, seed=2)


def first_format_file(path: Path, payload: bytes, stamp: bytes = b"db-v1") -> None:
    """An index file as the first format wrote it (b"VLMANN01": no trained imbalance; the CRC of the payload)."""
    path.write_bytes(b"VLMANN01" + struct.pack("<I", len(stamp)) + stamp
                     + struct.pack("<QI", len(payload), zlib.crc32(payload)) + payload)
