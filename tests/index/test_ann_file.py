"""The index file (`index.ann_file`): round trips, stamps, the imbalance after training, both formats, damage."""

from __future__ import annotations

import logging
import math
import struct
import zlib

import faiss
import numpy as np
import pytest

from tests.helpers.vectors import first_format_file
from vlm_vision.index import ann, ann_file

K = 10


def write(index, path, stamp: str) -> None:
    """Write a freshly built index, as PhotoIndex does."""
    ann_file.write_ann(index, path, stamp, trained_imbalance=ann.imbalance(index))


@pytest.mark.parametrize("kind", ann.INDEX_TYPES)
def test_write_read_roundtrip(ann_data, ann_indexes, kind, tmp_path):
    _, ids, queries = ann_data
    path = tmp_path / "photos.faiss"
    write(ann_indexes[kind], path, "db-v1")
    loaded = ann_file.read_ann(path, "db-v1")
    assert loaded is not None and ann.index_type_of(loaded) == kind
    for allowed in (None, ids[::7]):
        want = ann.search_ann(ann_indexes[kind], queries, K, allowed_ids=allowed)
        got = ann.search_ann(loaded, queries, K, allowed_ids=allowed)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    assert [p.name for p in tmp_path.iterdir()] == ["photos.faiss"]  # no temporary file left behind


def test_write_replaces_an_existing_file(ann_data, ann_indexes, tmp_path):
    path = tmp_path / "photos.faiss"
    write(ann_indexes["flat"], path, "old")
    write(ann_indexes["ivf"], path, "new")
    assert ann_file.read_ann(path, "old") is None
    assert ann.index_type_of(ann_file.read_ann(path, "new")) == "ivf"


def test_read_with_another_stamp_is_stale(ann_indexes, tmp_path, caplog):
    path = tmp_path / "photos.faiss"
    write(ann_indexes["flat"], path, "db-v1")
    with caplog.at_level(logging.INFO, logger=ann_file.__name__):
        assert ann_file.read_ann(path, "db-v2") is None
    assert "stale" in caplog.text


def test_read_missing_file(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger=ann_file.__name__):
        assert ann_file.read_ann(tmp_path / "nothing.faiss", "db-v1") is None
    assert "No ANN index" in caplog.text


HEADER_V1 = 8 + 4 + len("db-v1") + 8 + 4  # magic, stamp length, stamp, payload length, CRC
HEADER_V2 = HEADER_V1 + 8  # ... and the trained imbalance before the payload length


@pytest.mark.parametrize("first_format", [False, True], ids=["VLMANN02", "VLMANN01"])
@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "truncated"),  # cut in the payload
        (lambda b: b[:10], "not an ANN index file"),  # cut in the magic and stamp length
        (lambda b: b[:15], "truncated"),  # cut in the stamp
        (lambda b: b[:HEADER_V1 + 4], "truncated"),  # cut past the first format's header, inside the second's
        (lambda b: b[:HEADER_V2 - 1], "truncated"),  # cut one byte short of the second format's header
        (lambda b: b + b"x", "trailing bytes"),
        (lambda b: b[:-100] + bytes([b[-100] ^ 0xFF]) + b[-99:], "CRC mismatch"),  # one flipped byte
        (lambda b: b"\x00" * len(b), "not an ANN index file"),
        (lambda b: b"", "not an ANN index file"),
    ],
    ids=["truncated", "header-only", "stamp-cut", "v1-header-cut", "v2-header-cut", "trailing", "bit-flip", "zeros",
         "empty"],
)
def test_read_damaged_file_gives_none(ann_indexes, tmp_path, caplog, damage, message, first_format):
    path = tmp_path / "photos.faiss"
    if first_format:
        first_format_file(path, faiss.serialize_index(ann_indexes["flat"]).tobytes())
    else:
        write(ann_indexes["flat"], path, "db-v1")
    assert ann_file.read_ann(path, "db-v1") is not None
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger=ann_file.__name__):
        assert ann_file.read_ann(path, "db-v1") is None
    assert message in caplog.text


def test_the_crc_covers_the_trained_imbalance(ann_indexes, tmp_path, caplog):
    path = tmp_path / "photos.faiss"
    write(ann_indexes["ivf"], path, "db-v1")
    data = bytearray(path.read_bytes())
    data[HEADER_V1 - 12 + 7] ^= 0x10  # a bit of the imbalance's exponent, just before the payload length
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger=ann_file.__name__):
        assert ann_file.read_stale_ann(path, lambda stamp: True) is None
    assert "CRC mismatch" in caplog.text


def test_read_garbage_file_gives_none(tmp_path, caplog):
    path = tmp_path / "photos.faiss"
    path.write_bytes(np.random.default_rng(8).bytes(5000))
    with caplog.at_level(logging.WARNING, logger=ann_file.__name__):
        assert ann_file.read_ann(path, "db-v1") is None
    assert "not an ANN index file" in caplog.text


def test_read_plain_faiss_file_gives_none(ann_indexes, tmp_path, caplog):
    """A file written by faiss.write_index alone (no header, no stamp) is not taken as ours."""
    path = tmp_path / "photos.faiss"
    faiss.write_index(ann_indexes["flat"], str(path))
    with caplog.at_level(logging.WARNING, logger=ann_file.__name__):
        assert ann_file.read_ann(path, "db-v1") is None
    assert "not an ANN index file" in caplog.text


def test_a_newer_format_is_named_as_such(ann_indexes, tmp_path, caplog):
    path = tmp_path / "photos.faiss"
    write(ann_indexes["flat"], path, "db-v1")
    path.write_bytes(b"VLMANN03" + path.read_bytes()[8:])
    with caplog.at_level(logging.WARNING, logger=ann_file.__name__):
        assert ann_file.read_ann(path, "db-v1") is None
    assert "newer format (b'VLMANN03')" in caplog.text


@pytest.mark.parametrize("first_format", [False, True])
def test_valid_header_with_a_payload_faiss_cannot_read(tmp_path, caplog, first_format):
    """Right magic, stamp, length and CRC around bytes that are not a faiss index: faiss's error is caught."""
    payload = b"this is not a faiss index" * 10
    path = tmp_path / "photos.faiss"
    if first_format:
        first_format_file(path, payload)
    else:
        imbalance = struct.pack("<d", 1.0)
        path.write_bytes(b"VLMANN02" + struct.pack("<I", 5) + b"db-v1" + imbalance
                         + struct.pack("<QI", len(payload), zlib.crc32(payload, zlib.crc32(imbalance))) + payload)
    with caplog.at_level(logging.WARNING, logger=ann_file.__name__):
        assert ann_file.read_ann(path, "db-v1") is None
    assert "can't be loaded" in caplog.text


def test_the_file_records_the_imbalance_after_training(ann_data, tmp_path):
    """`write_ann` records the imbalance it is given and `read_stale_ann` gives it back; flat and HNSW have none."""
    base, ids, _ = ann_data
    index, path = ann.build_ann(base[:4500], ids[:4500], "ivf"), tmp_path / "photos.faiss"
    sizes = np.array([index.invlists.list_size(i) for i in range(index.nlist)])
    assert ann.imbalance(index) == pytest.approx(index.nlist * np.sum(sizes**2) / 4500**2)
    assert ann.imbalance(index) == pytest.approx(index.invlists.imbalance_factor())  # faiss's own count
    write(index, path, "db-v1")
    stale, trained = ann_file.read_stale_ann(path, lambda stamp: True)
    assert trained == ann.imbalance(index) and stale.ntotal == 4500
    ann_file.write_ann(index, path, "db-v2", trained_imbalance=1.25)  # as PhotoIndex writes an updated index
    assert ann_file.read_stale_ann(path, lambda stamp: stamp == "db-v2")[1] == 1.25
    for kind in ("flat", "hnsw"):
        write(ann.build_ann(base[:100], ids[:100], kind), path, "db-v3")
        assert math.isnan(ann_file.read_stale_ann(path, lambda stamp: True)[1])


@pytest.mark.parametrize("impossible", [math.inf, 0.5, -1.0, math.nan])
def test_an_impossible_recorded_imbalance_reads_as_unknown(ann_indexes, tmp_path, caplog, impossible):
    """An imbalance factor is at least 1: anything else (a bug that wrote it) must not switch the check off."""
    path = tmp_path / "photos.faiss"
    ann_file.write_ann(ann_indexes["ivf"], path, "db-v1", trained_imbalance=impossible)
    with caplog.at_level(logging.WARNING, logger=ann_file.__name__):
        index, trained = ann_file.read_stale_ann(path, lambda stamp: True)
    assert trained is None and index.ntotal == ann_indexes["ivf"].ntotal
    assert "impossible imbalance" in caplog.text


def test_a_first_format_file_is_searched_and_not_updated(ann_data, ann_indexes, tmp_path):
    base, ids, queries = ann_data
    path = tmp_path / "photos.faiss"
    first_format_file(path, faiss.serialize_index(ann_indexes["ivf"]).tobytes())
    loaded = ann_file.read_ann(path, "db-v1")
    expected = ann.search_ann(ann_indexes["ivf"], queries, K)[1]
    np.testing.assert_array_equal(ann.search_ann(loaded, queries, K)[1], expected)
    stale, trained = ann_file.read_stale_ann(path, lambda stamp: True)
    assert trained is None
    assert ann.update_ann(stale, ids, pytest.fail, "ivf", trained_imbalance=trained) is None
