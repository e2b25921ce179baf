"""The ANN layer: exactness of flat search, recall of HNSW and IVF, id filters, and updates of an IVF index.

The index file is tested in test_ann_file.py."""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np
import pytest

from tests.helpers.vectors import DIM, clustered
from vlm_vision.index import ann

K = 10


def brute_force(base: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ base.T.astype(np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth)) / truth.size


def test_flat_equals_numpy_brute_force(ann_data, ann_indexes):
    base, ids, queries = ann_data
    scores, found = ann.search_ann(ann_indexes["flat"], queries, K)
    want_scores, want_ids = brute_force(base, ids, queries, K)
    assert scores.dtype == np.float32 and found.dtype == np.int64 and found.shape == (len(queries), K)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall_against_flat(ann_data, ann_indexes, kind):
    _, _, queries = ann_data
    _, truth = ann.search_ann(ann_indexes["flat"], queries, K)
    scores, found = ann.search_ann(ann_indexes[kind], queries, K)
    assert ann.index_type_of(ann_indexes[kind]) == kind
    assert recall(found, truth) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "results must come best first"


@pytest.mark.parametrize("kind", ann.INDEX_TYPES)
def test_ids_are_the_callers(ann_data, ann_indexes, kind):
    base, ids, _ = ann_data
    _, found = ann.search_ann(ann_indexes[kind], base[:50], 1)
    np.testing.assert_array_equal(found[:, 0], ids[:50])  # each stored vector finds itself


@pytest.mark.parametrize("sparse_ids", [True, False], ids=["hash-set", "bitmap"])
@pytest.mark.parametrize("kind", ann.INDEX_TYPES)
def test_allowed_ids_restrict_results(ann_data, kind, sparse_ids):
    base, sparse, queries = ann_data
    ids = sparse if sparse_ids else np.arange(len(base), dtype=np.int64) * 2 + 1
    index = ann.build_ann(base, ids, kind)
    rows = np.random.default_rng(3).choice(len(base), size=300, replace=False)
    allowed = ids[rows]
    scores, found = ann.search_ann(index, queries, K, allowed_ids=allowed)
    assert np.isin(found, allowed).all()
    want_scores, want_ids = brute_force(base[rows], allowed, queries, K)
    if kind == "ivf":  # 8-bit codes: scores are approximate, so near ties may swap
        assert recall(found, want_ids) >= 0.95
    else:  # flat, and HNSW's exact path for small filters
        np.testing.assert_array_equal(found, want_ids)
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_allowed_ids_through_the_ann_path(ann_data, ann_indexes, kind, monkeypatch):
    base, ids, queries = ann_data
    # 2500 allowed ids: HNSW takes its (widened) graph search instead of the exact path;
    # IVF probes twice nprobe lists, not every list.
    monkeypatch.setattr(ann, "EXACT_FILTER_MAX", 10)
    rows = np.arange(0, len(base), 2)
    scores, found = ann.search_ann(ann_indexes[kind], queries, K, allowed_ids=ids[rows])
    assert np.isin(found, ids[rows]).all()
    assert recall(found, brute_force(base[rows], ids[rows], queries, K)[1]) >= 0.9


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_widen_probes_as_a_filter_of_that_share_would_without_restricting(ann_data, ann_indexes, kind):
    _, _, queries = ann_data
    index = ann_indexes[kind]
    wide = ann.search_ann(index, queries, K, widen=4)
    assert all(np.array_equal(a, b) for a, b in zip(wide, ann._search(  # the probe of a 25% filter, unfiltered
        index, queries, K, None, ef_search=4 * ann.HNSW_EF_SEARCH, nprobe=4 * ann.IVF_NPROBE)))
    assert ann.search_ann(index, queries, K, widen=0.5)[1].tolist() == ann.search_ann(index, queries, K)[1].tolist()


@pytest.mark.parametrize("kind", ann.INDEX_TYPES)
def test_allowed_ids_matching_nothing(ann_data, ann_indexes, kind):
    _, _, queries = ann_data
    for allowed in (np.array([], dtype=np.int64), np.array([-5, 12345])):  # empty; ids not in the index
        scores, found = ann.search_ann(ann_indexes[kind], queries[:3], K, allowed_ids=allowed)
        assert (found == -1).all() and np.isneginf(scores).all()


def test_few_allowed_ids_pad_with_minus_one(ann_data, ann_indexes):
    base, ids, queries = ann_data
    scores, found = ann.search_ann(ann_indexes["flat"], queries[:2], K, allowed_ids=ids[:3])
    assert set(found[0, :3]) == set(ids[:3])
    assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()


@pytest.mark.parametrize("kind", ["auto", *ann.INDEX_TYPES])
def test_empty_index_is_searchable(kind):
    index = ann.build_ann(np.zeros((0, DIM), np.float32), np.zeros(0, np.int64), kind)
    assert index.ntotal == 0
    scores, found = ann.search_ann(index, clustered(3, seed=4), K)
    assert found.shape == (3, K) and (found == -1).all() and np.isneginf(scores).all()


def test_ivf_with_few_vectors_falls_back_to_flat(caplog):
    base = clustered(100, seed=5)
    ids = np.arange(100, dtype=np.int64) + 1000
    with caplog.at_level(logging.INFO, logger=ann.__name__):
        index = ann.build_ann(base, ids, "ivf")
    assert ann.index_type_of(index) == "flat"
    assert "too few for an IVF index" in caplog.text
    _, found = ann.search_ann(index, base[:5], 1)
    np.testing.assert_array_equal(found[:, 0], ids[:5])


def test_k_larger_than_the_index_pads():
    base = clustered(4, seed=6)
    scores, found = ann.search_ann(ann.build_ann(base, np.arange(4) + 10), base[:1], 6)
    assert sorted(found[0, :4]) == [10, 11, 12, 13] and (found[0, 4:] == -1).all()
    assert np.isneginf(scores[0, 4:]).all()


def test_choose_index_type():
    assert ann.choose_index_type(0) == "flat"
    assert ann.choose_index_type(ann.FLAT_MAX_N) == "flat"
    assert ann.choose_index_type(4 * ann.FLAT_MAX_N, dim=192) == "flat"  # the cost of a scan is n * dim
    assert ann.choose_index_type(4 * ann.FLAT_MAX_N + 1, dim=192) == "ivf"
    assert ann.choose_index_type(ann.FLAT_MAX_N + 1) == "ivf"
    with pytest.raises(ValueError, match="must be >= 0"):
        ann.choose_index_type(-1)


def test_unknown_index_type_raises():
    with pytest.raises(ValueError, match=r"Unknown index type: 'annoy'; expected one of"):
        ann.build_ann(clustered(10, seed=7), np.arange(10), "annoy")


@pytest.mark.parametrize(
    "vectors, ids, message",
    [
        (np.zeros((3, DIM)), np.arange(2), "ids must have shape"),
        (np.zeros(DIM), np.arange(1), "vectors must have shape"),
        (np.zeros((3, DIM)), np.array([1, 2, 1]), "ids must be unique"),
        (np.zeros((2, DIM)), np.array([-1, 2]), "ids must be >= 0"),
        (np.full((2, DIM), np.nan), np.arange(2), "vectors must be finite"),
    ],
)
def test_bad_build_inputs_raise(vectors, ids, message):
    with pytest.raises(ValueError, match=message):
        ann.build_ann(vectors, ids, "flat")


def test_bad_search_inputs_raise(ann_indexes):
    with pytest.raises(ValueError, match=r"queries must have shape \(Q, 64\)"):
        ann.search_ann(ann_indexes["flat"], np.zeros((2, 32), np.float32), K)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ann.search_ann(ann_indexes["flat"], np.zeros((2, DIM), np.float32), 0)


def test_update_ann_removes_and_adds_without_retraining(ann_data):
    base, ids, queries = ann_data
    index = ann.build_ann(base[:4500], ids[:4500], "ivf")
    centroids = index.quantizer.reconstruct_n(0, index.nlist).copy()
    keep = ids[500:]  # the first 500 go, the last 500 (not indexed yet) come
    row = {int(i): r for r, i in enumerate(ids)}
    asked = []

    def vectors_of(new_ids: np.ndarray) -> np.ndarray:
        asked.append(np.sort(new_ids))
        return base[[row[int(i)] for i in new_ids]]

    trained = ann.imbalance(index)
    updated = ann.update_ann(index, keep, vectors_of, "ivf", trained_imbalance=trained)  # "auto": flat at 5000 x 64

    assert updated is index and updated.ntotal == len(keep)
    assert len(asked) == 1  # only the new vectors are read
    np.testing.assert_array_equal(asked[0], np.sort(ids[4500:]))
    np.testing.assert_array_equal(ann._ivf_ids(updated), np.sort(keep))
    np.testing.assert_array_equal(updated.quantizer.reconstruct_n(0, updated.nlist), centroids)
    _, found = ann.search_ann(updated, base[4500:], 1)  # each added vector finds itself
    np.testing.assert_array_equal(found[:, 0], ids[4500:])
    _, truth = brute_force(base[500:], keep, queries, K)
    assert recall(ann.search_ann(updated, queries, K)[1], truth) >= 0.9
    assert ann.update_ann(updated, keep, vectors_of, "ivf", trained_imbalance=trained) is updated
    assert len(asked) == 1  # no change, nothing read


@pytest.mark.parametrize(("unlike", "declined"), [(10, False), (20, False), (30, True), (500, True)])
def test_update_ann_declines_new_vectors_unlike_those_it_was_trained_on(ann_data, unlike, declined, caplog):
    """Of 500 new vectors, `unlike` come from other clusters, far from every trained centre: more than 5% of them,
    and at least 20, call for a rebuild (10: too few to be worth it; 20: 4%)."""
    base, ids, _ = ann_data
    index = ann.build_ann(base[:4500], ids[:4500], "ivf")
    vectors = base.copy()
    vectors[4500:] = base[:500]  # the first 500 photos come back under new ids: they fit as the held ones do
    rotation = np.linalg.qr(np.random.default_rng(4).standard_normal((DIM, DIM)))[0].astype(np.float32)
    vectors[4500:4500 + unlike] = clustered(unlike, seed=3, n_clusters=5) @ rotation  # away from the old centres
    row = {int(i): r for r, i in enumerate(ids)}
    with caplog.at_level(logging.INFO, logger=ann.__name__):
        updated = ann.update_ann(index, ids[500:], lambda new: vectors[[row[int(i)] for i in new]], "ivf",
                                 trained_imbalance=ann.imbalance(index))
    assert updated is (None if declined else index)
    assert index.ntotal == 4500 and np.array_equal(ann._ivf_ids(index), np.sort(ids[:4500] if declined else ids[500:]))
    assert ("lie outside" in caplog.text) == declined  # declined by this check, not another


@pytest.mark.parametrize(("crowd", "declined"), [(60, False), (400, True)])
def test_update_ann_declines_when_the_lists_would_grow_uneven(ann_data, crowd, declined, caplog):
    """New vectors that all go to one list, inside the code ranges (copies of its photos under new ids: the
    outside check passes), crowd it: past 1.2 times the imbalance after training, the update declines before
    changing the index."""
    base, ids, _ = ann_data
    index = ann.build_ann(base[:4000], ids[:4000], "ivf")
    trained = ann.imbalance(index)
    inner = ann._inner(index)
    held, lists = ann._ivf_contents(inner)
    members = base[:4000][np.isin(ids[:4000], held[lists == np.bincount(lists).argmax()])]  # the largest list's
    new = members[np.random.default_rng(6).integers(len(members), size=crowd)]
    new_ids = ids[4000:4000 + crowd]
    sizes = np.bincount(np.concatenate([lists, ann._assign(inner, new)]), minlength=inner.nlist)
    assert (ann._imbalance(sizes) > ann.UPDATE_MAX_IMBALANCE_GROWTH * trained) == declined  # either side of it
    assert ann._count_outside(inner, new, ann._assign(inner, new)) < ann.UPDATE_MIN_OUTSIDE  # too few to decline
    row = {int(i): r for r, i in enumerate(new_ids)}
    with caplog.at_level(logging.INFO, logger=ann.__name__):
        updated = ann.update_ann(index, ids[:4000 + crowd], lambda asked: new[[row[int(i)] for i in asked]], "ivf",
                                 trained_imbalance=trained)
    assert updated is (None if declined else index)
    assert index.ntotal == (4000 if declined else 4000 + crowd)
    assert ("imbalance" in caplog.text) == declined


@pytest.mark.parametrize("side", [-1, 1])
def test_the_imbalance_check_predicts_what_the_update_leaves(ann_data, side, monkeypatch):
    """The imbalance update_ann computes before changing the index, for an update that removes and adds, is what
    faiss counts after it: with the bound a hair below that value it declines, a hair above it updates."""
    base, ids, _ = ann_data
    index = ann.build_ann(base[:4500], ids[:4500], "ivf")
    trained, keep = ann.imbalance(index), ids[500:]
    row = {int(i): r for r, i in enumerate(ids)}
    forced = faiss.clone_index(index)  # the update made by hand: remove, then add
    forced.remove_ids(faiss.IDSelectorBatch(ids[:500]))
    forced.add_with_ids(base[4500:], ids[4500:])
    after = forced.invlists.imbalance_factor()
    assert after != pytest.approx(trained)  # the update moves it
    monkeypatch.setattr(ann, "UPDATE_MAX_IMBALANCE_GROWTH", after / trained * (1 + side * 1e-9))
    updated = ann.update_ann(index, keep, lambda new: base[[row[int(i)] for i in new]], "ivf",
                             trained_imbalance=trained)
    assert updated is (index if side > 0 else None)
    assert ann.imbalance(index) == pytest.approx(after if side > 0 else trained, rel=1e-12)


def test_count_outside_counts_vectors_beyond_the_trained_code_ranges():
    """A vector is outside when more than 1% of its residual's dimensions (here 2.56 of 256) leave the ranges."""
    dim = 256
    vectors = clustered(1000, seed=5, dim=dim)
    index = ann._build_ivf(vectors, np.arange(1000), nlist=8)  # kept: `inner` is a view of it
    inner = ann._inner(index)
    trained = faiss.vector_float_to_array(inner.sq.trained)
    low, high = trained[:dim], trained[:dim] + trained[dim:]
    centre = inner.quantizer.reconstruct(3)
    rows = np.repeat((centre + (low + high) / 2)[None], 6, axis=0)  # residuals mid-range in every dimension
    rows[1, :2] = centre[:2] + low[:2] - 0.01  # two dimensions below: inside
    rows[2, :3] = centre[:3] + low[:3] - 0.01  # three below: outside
    rows[3, 5:8] = centre[5:8] + high[5:8] + 0.01  # three above: outside
    margin = 0.001 * (high - low)  # (exactly on an edge, float rounding of centre + edge - centre decides)
    rows[4] = centre + np.where(np.arange(dim) % 2, low + margin, high - margin)  # at the edges: inside
    rows[5, :3] = centre[:3] + high[:3] - 0.001  # just inside the top: inside
    lists = np.full(6, 3, dtype=np.int64)
    assert ann._count_outside(inner, rows.astype(np.float32), lists) == 2
    assert ann._count_outside(inner, rows[2:4].astype(np.float32), lists[:2]) == 2


def test_update_ann_declines_what_a_rebuild_does_better(ann_data, ann_indexes):
    base, ids, _ = ann_data
    never = pytest.fail  # no vectors are read when the answer is "rebuild"
    assert ann.update_ann(ann_indexes["flat"], ids, never, trained_imbalance=math.nan) is None
    assert ann.update_ann(ann_indexes["hnsw"], ids, never, trained_imbalance=math.nan) is None
    ivf = ann.build_ann(base, ids, "ivf")  # 128 lists for 5000 vectors
    trained = ann.imbalance(ivf)
    assert ann.update_ann(ivf, ids, never, "flat", trained_imbalance=trained) is None  # the type setting changed
    assert ann.update_ann(ivf, ids, never, trained_imbalance=trained) is None  # "auto" now picks flat for 5000 x 64
    assert ann.update_ann(ivf, ids[:2000], never, "ivf", trained_imbalance=trained) is None  # 51 lists: under 128/2
    assert ann.update_ann(ivf, ids[:0], never, "ivf", trained_imbalance=trained) is None
    for unknown in (None, math.nan):  # a file of the first format
        assert ann.update_ann(ivf, ids, never, "ivf", trained_imbalance=unknown) is None
    assert ivf.ntotal == len(ids)  # declining changed nothing


def test_ivf_is_built_from_ivf_min_training_vectors_and_flat_below():
    assert ann.IVF_MIN_TRAINING == 312  # the number the CLI's --index-type help and the README give
    assert ann.resolved_index_type("ivf", ann.IVF_MIN_TRAINING, 192) == "ivf"
    assert ann.resolved_index_type("ivf", ann.IVF_MIN_TRAINING - 1, 192) == "flat"
