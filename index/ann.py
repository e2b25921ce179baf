"""Approximate nearest-neighbour search over the photo embeddings, with FAISS.

Vectors are float32 and L2-normalised, so inner product is cosine similarity.
The SQLite database is the single source of truth for vectors: the FAISS index
built here is derived from it, written to one file together with a stamp of the
database state it was built from, and rebuilt whenever that stamp no longer
matches or the file is damaged. An IVF index of the same database is updated
instead (`update_ann`: the vectors removed since are removed, the new ones
added to the lists the trained quantiser picks), which at 1M vectors takes
seconds where training takes minutes; it is retrained once the number of
vectors has moved past what its lists were sized for, when many new vectors lie
outside what it was trained on, or when its lists have grown uneven. HNSW can't
remove ids and flat is cheap to build, so they are rebuilt.

Index types (every number below is from `benchmarks/index.py --part faiss`,
recorded in benchmarks/README.md, "Photo index: FAISS level"):
- "flat": exact search, IndexFlatIP in an IndexIDMap2.
- "hnsw": IndexHNSWFlat in an IndexIDMap2.
- "ivf":  IndexIVFScalarQuantizer (8 bits per dimension), ids stored in the
          inverted lists themselves.

The index file (`<db>.faiss`: the index, its stamp and the imbalance after
training) is read and written by `index.ann_file`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import faiss
import numpy as np
from faiss.contrib.ivf_tools import add_preassigned

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivf")

# Numbers below: benchmarks/index.py --part faiss, 1M x 768 synthetic clustered
# embeddings, 2-core AMD EPYC VM, batch-1 queries on one thread (see
# benchmarks/README.md, "Photo index: FAISS level"). Target: p95 <= 10 ms with
# recall@10 >= 0.95 at 1M.

# Flat search reads every vector once per query: p95 1.1 ms at 10k, 4.0 ms at
# 30k, 6.9 ms at 50k, 13.1 ms at 100k, 116 ms at 1M. Up to 50k it meets the
# target exactly, with no training and nothing to tune.
FLAT_MAX_N = 50_000

# IVF, nlist = IVF_LISTS_PER_SQRT_N * sqrt(N). At 1M, 4000 lists with SQ8 and
# nprobe 32: recall@10 0.964, p95 3.1-3.4 ms, 788 MB (0.26x flat), 133-146 s
# build on 2 threads. nprobe 16 gave 0.958 (too little margin), 64 gave 0.969.
# 2000 lists needed nprobe 64 (0.952, p95 8.4 ms); 1000 lists reached 0.95
# only at nprobe 128 (p95 24 ms).
IVF_LISTS_PER_SQRT_N = 4.0
IVF_ENCODING = "SQ8"  # 1/4 of Flat's memory and faster to scan; Flat gained ~1 point of recall at 1.6x the p95
# (update_ann's drift check reads SQ8's trained ranges: other encodings would skip it)
IVF_NPROBE = 32
IVF_MIN_POINTS_PER_LIST = 39  # faiss's k-means warns below 39 training points per centroid
IVF_TRAIN_POINTS_PER_LIST = 64  # k-means sample per list (faiss suggests 39 to 256); 256k vectors at 1M
IVF_MIN_LISTS = 8  # below this an IVF index is a slower flat index: build flat instead
IVF_MIN_TRAINING = IVF_MIN_LISTS * IVF_MIN_POINTS_PER_LIST  # 312: fewer vectors than this get flat, even if asked ivf
# `update_ann` keeps a trained IVF index while the ideal list count for the current size is within this factor
# of its own: sqrt(2), as lists grow with sqrt(N), is twice or half the vectors it was trained on. (Measured: 1%
# removed and 1% added at 1M; how recall drifts up to the edges is not.)
UPDATE_NLIST_RATIO = math.sqrt(2)

# ... and declines when many new vectors lie outside what the index was trained on (photos unlike the old ones):
# their residuals (vector minus nearest list centre) leave the ranges the 8-bit codes were trained on. A new vector
# is outside when more than UPDATE_CLIPPED_DIMS of its dimensions are. When more than UPDATE_MAX_OUTSIDE of the new
# vectors are, and at least UPDATE_MIN_OUTSIDE of them (a few odd photos are not worth a rebuild), it declines.
# Measured on synthetic data in benchmarks/README.md (`benchmarks/index.py --part drift`).
UPDATE_CLIPPED_DIMS = 0.01
UPDATE_MAX_OUTSIDE = 0.05
UPDATE_MIN_OUTSIDE = 20

# ... and declines when the update would leave the lists more uneven than training did: their imbalance factor
# (`imbalance`: how many times more codes a query scans than it would with even lists) more than
# UPDATE_MAX_IMBALANCE_GROWTH times its value right after training. A query then does 20% more work than after a
# rebuild, and the quantiser no longer fits the collection: photos of a kind it was trained on few of, added a
# few at a time, fill a few lists without ever lying outside the trained ranges.
UPDATE_MAX_IMBALANCE_GROWTH = 1.2

# HNSW (not chosen by "auto": at 1M it takes 4.3x IVF's memory and 2x its build
# time). M 32, efConstruction 40: at 1M 3.35 GB, 273 s build; efSearch 128 gave
# recall@10 0.949 (p95 0.8 ms), 256 gave 0.968 (p95 2.4 ms).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 256

# HNSW filters of up to this many ids are searched exactly, through the flat
# storage under the graph: about 2.5 ms of flat scan (see FLAT_MAX_N) plus a
# membership test per stored vector, where a graph search restricted to a small
# subset finds few of its members.
EXACT_FILTER_MAX = 20_000
_HNSW_EF_FILTERED_MAX = 1024  # bounds a filtered HNSW search's widened beam (and its time)

_BITMAP_MAX_BITS = 1 << 26  # ids up to 64M filter through a bitmap (8 MiB); larger ones through a hash set


def choose_index_type(n: int, dim: int = 768) -> str:
    """Index type for `n` vectors of `dim`: exact "flat" while it meets the latency target, "ivf" above.

    A flat scan costs n * dim, so the 50k limit measured at 768-d scales with the
    dimension: 200k vectors of the embedded model's 192-d cost what 50k of 768-d do.
    """
    if n < 0:
        raise ValueError(f"Number of vectors must be >= 0, got {n}")
    return "flat" if n * dim <= FLAT_MAX_N * 768 else "ivf"


def resolved_index_type(index_type: str, n: int, dim: int) -> str:
    """The type of index `build_ann` makes of n vectors of `dim` for `index_type` ("auto" or one of INDEX_TYPES)."""
    if index_type == "auto":
        index_type = choose_index_type(n, dim)
    return "flat" if index_type == "ivf" and _ivf_nlist(n) < IVF_MIN_LISTS else index_type


# Fills a trained, empty IVF index with `vectors` and `ids` in parts, elsewhere (the distributed build: Ray tasks),
# and returns the filled copies for `merge_from`, in the order of the parts.
AddParts = Callable[[faiss.Index, np.ndarray, np.ndarray], list[faiss.Index]]


def build_ann(vectors: np.ndarray, ids: np.ndarray, index_type: str = "auto",
              add_parts: AddParts | None = None) -> faiss.Index:
    """An inner-product index over `vectors` (N, D) float32 that returns `ids` (N,) int64.

    "auto" picks the type with `choose_index_type(N, D)`. N = 0 gives an empty,
    searchable flat index. An IVF index is trained once, on a sample; `add_parts`
    then fills copies of it in parallel and they are merged, giving the same index.
    """
    if index_type != "auto" and index_type not in INDEX_TYPES:
        raise ValueError(f"Unknown index type: {index_type!r}; expected one of {('auto',) + INDEX_TYPES}")
    vectors, ids = _check_vectors(vectors, ids)
    if index_type == "auto":
        index_type = choose_index_type(*vectors.shape)
    if index_type == "hnsw":
        return _build_hnsw(vectors, ids)
    if index_type == "ivf":
        return _build_ivf(vectors, ids, add_parts=add_parts)
    return _build_flat(vectors, ids)


def search_ann(
    index: faiss.Index, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None, widen: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` (scores (Q, k) float32, ids (Q, k) int64) of each query, best first.

    Missing results (fewer than k vectors, or allowed) have id -1 and score -inf.
    `allowed_ids` restricts the results to those ids; the search widens
    (nprobe, efSearch) as the allowed fraction shrinks, so that recall holds.
    `widen` widens it as much without restricting it: for a caller that will keep
    only a share of the results (1 / that share).
    """
    return _search(index, queries, k, allowed_ids, ef_search=HNSW_EF_SEARCH, nprobe=IVF_NPROBE, widen=widen)


def index_type_of(index: faiss.Index) -> str:
    """"flat", "hnsw" or "ivf" for an index made by `build_ann` (or read by `read_ann`)."""
    inner = _inner(index)
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    raise ValueError(f"Not an index made by build_ann: {type(inner).__name__}")


def update_ann(index: faiss.Index, ids: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray],
               index_type: str = "auto", *, trained_imbalance: float | None) -> faiss.Index | None:
    """`index` (IVF) brought to hold exactly `ids`, or None when rebuilding is the better choice.

    Ids it holds that are not in `ids` are removed; `vectors_of(new_ids)` gives the vectors of the ids it lacks,
    which are added. None for flat and HNSW indexes, for an `index_type` (as `build_ann` takes it) that is no
    longer IVF, when the ideal number of lists for len(ids) (`_ivf_nlist`) is more than `UPDATE_NLIST_RATIO`
    times off the index's own (the collection has about doubled or halved since the quantiser was trained), when
    many new vectors lie outside what the index was trained on (`_count_outside`), when the update would leave
    the lists' `imbalance` more than UPDATE_MAX_IMBALANCE_GROWTH times `trained_imbalance` (the value right after
    training, which `ann_file.read_stale_ann` gives), and when `trained_imbalance` is not known (None or NaN).
    """
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if index_type_of(index) != "ivf" or len(ids) == 0:
        return None
    inner, nlist = _inner(index), _ivf_nlist(len(ids))
    if resolved_index_type(index_type, len(ids), index.d) != "ivf" or not (
            inner.nlist / UPDATE_NLIST_RATIO <= nlist <= inner.nlist * UPDATE_NLIST_RATIO):
        return None
    if trained_imbalance is None or math.isnan(trained_imbalance):
        logger.info("The IVF index's imbalance after training is not recorded (an older file); rebuilding")
        return None
    held, held_lists = _ivf_contents(inner)
    kept = np.isin(held, ids, assume_unique=True)
    removed = held[~kept]
    added = np.setdiff1d(ids, held, assume_unique=True)
    vectors, lists = None, np.empty(0, dtype=np.int64)
    if len(added):  # read and checked before the index changes: a ValueError leaves it as it was
        vectors, added = _check_vectors(vectors_of(added), added)
        if vectors.shape[1] != index.d:
            raise ValueError(f"vectors_of gave {vectors.shape[1]}-d vectors for a {index.d}-d index")
        lists = _assign(inner, vectors)  # once, for the checks and the add
        outside = _count_outside(inner, vectors, lists)
        if too_many_outside(outside, len(vectors)):
            logger.info("%d of %d new vectors lie outside what the IVF index was trained on; rebuilding", outside,
                        len(vectors))
            return None
    after = _imbalance(np.bincount(held_lists[kept], minlength=inner.nlist) + np.bincount(lists, minlength=inner.nlist))
    if after > UPDATE_MAX_IMBALANCE_GROWTH * trained_imbalance:
        logger.info("Updating would leave the IVF lists' imbalance at %.2f, %.2f after training; rebuilding", after,
                    trained_imbalance)
        return None
    if len(removed):
        sel, _ = _selector(removed)
        index.remove_ids(sel)
    if vectors is not None:
        add_preassigned(inner, vectors, lists, added)  # what add_with_ids does, without assigning again
    logger.info("Updated the IVF index: %d vectors removed, %d added, %d in all", len(removed), len(added),
                index.ntotal)
    return index


def _assign(index: faiss.IndexIVF, vectors: np.ndarray) -> np.ndarray:
    """The list (N,) each of `vectors` goes to: its nearest centre, as `add_with_ids` assigns."""
    return index.quantizer.search(vectors, 1)[1][:, 0].copy()


def too_many_outside(outside: int, new: int) -> bool:
    """Whether `outside` of `new` vectors lying outside the trained ranges call for a rebuild: more than
    UPDATE_MAX_OUTSIDE of them, and at least UPDATE_MIN_OUTSIDE."""
    return outside >= UPDATE_MIN_OUTSIDE and outside > UPDATE_MAX_OUTSIDE * new


def _count_outside(index: faiss.IndexIVF, vectors: np.ndarray, lists: np.ndarray, chunk: int = 8192) -> int:
    """How many of `vectors` (in `lists`) have residuals (vector minus list centre) outside the 8-bit codes' trained
    ranges in more than UPDATE_CLIPPED_DIMS of their dimensions: their codes would be clipped. 0 for other codes."""
    if not (isinstance(index, faiss.IndexIVFScalarQuantizer) and index.by_residual
            and index.sq.qtype == faiss.ScalarQuantizer.QT_8bit):
        return 0
    trained = faiss.vector_float_to_array(index.sq.trained)  # QT_8bit: each dimension's minimum, then its range
    low, high = trained[:index.d], trained[:index.d] + trained[index.d:]
    count = 0
    for start in range(0, len(vectors), chunk):
        residuals = index.quantizer.reconstruct_batch(lists[start:start + chunk])  # the centres, then in place:
        np.subtract(vectors[start:start + chunk], residuals, out=residuals)
        clipped_dims = np.count_nonzero((residuals < low) | (residuals > high), axis=1)
        count += int(np.count_nonzero(clipped_dims > UPDATE_CLIPPED_DIMS * index.d))
    return count


def imbalance(index: faiss.Index) -> float:
    """The IVF lists' imbalance factor, nlist * sum(size^2) / N^2: how many times more codes a query scans than it
    would with lists of even size (1 when they are). NaN for flat and HNSW indexes and for an empty one."""
    if index_type_of(index) != "ivf":
        return math.nan
    return _imbalance(np.array(_list_sizes(_inner(index))))


def _imbalance(sizes: np.ndarray) -> float:
    total = int(sizes.sum())
    return len(sizes) * float(np.square(sizes, dtype=np.float64).sum()) / total**2 if total else math.nan


def _list_sizes(index: faiss.IndexIVF) -> list[int]:
    return [index.invlists.list_size(i) for i in range(index.nlist)]


def _ivf_contents(index: faiss.IndexIVF) -> tuple[np.ndarray, np.ndarray]:
    """(ids, lists): every id stored in the inverted lists of `index`, sorted, and the list each is in."""
    sizes = _list_sizes(index)
    parts = [faiss.rev_swig_ptr(index.invlists.get_ids(i), size).copy() for i, size in enumerate(sizes) if size]
    if not parts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    ids = np.concatenate(parts)
    lists = np.repeat(np.arange(index.nlist, dtype=np.int64), sizes)
    order = np.argsort(ids, kind="stable")
    return ids[order], lists[order]


def _ivf_ids(index: faiss.IndexIVF) -> np.ndarray:
    """Every id stored in the inverted lists of `index`, sorted."""
    return _ivf_contents(index)[0]


# --- building -------------------------------------------------------------------------


def _check_vectors(vectors: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`vectors` as C-contiguous float32 (N, D) and `ids` as int64 (N,), or ValueError saying what is wrong."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise ValueError(f"vectors must have shape (N, D) with D > 0, got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors must be finite: a NaN or infinity has no nearest neighbours")
    if ids.shape != (len(vectors),):
        raise ValueError(f"ids must have shape ({len(vectors)},) to match vectors, got {ids.shape}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique")
    if len(ids) and ids.min() < 0:
        raise ValueError("ids must be >= 0 (-1 marks a missing result)")
    return vectors, ids


def _build_flat(vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, ids)
    return index


def _build_hnsw(
    vectors: np.ndarray, ids: np.ndarray, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION
) -> faiss.Index:
    inner = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = ef_construction
    index = faiss.IndexIDMap2(inner)
    index.add_with_ids(vectors, ids)
    return index


def _ivf_nlist(n: int) -> int:
    """Number of IVF lists for `n` vectors: IVF_LISTS_PER_SQRT_N * sqrt(n), with enough points to train each."""
    return min(round(IVF_LISTS_PER_SQRT_N * math.sqrt(n)), n // IVF_MIN_POINTS_PER_LIST)


def _build_ivf(
    vectors: np.ndarray, ids: np.ndarray, nlist: int | None = None, encoding: str = IVF_ENCODING, seed: int = 0,
    add_parts: AddParts | None = None,
) -> faiss.Index:
    """IVF index trained on a seeded sample of `vectors`; a flat index when there are too few to train lists."""
    n, dim = vectors.shape
    nlist = _ivf_nlist(n) if nlist is None else nlist
    if nlist < IVF_MIN_LISTS:
        logger.info("%d vectors are too few for an IVF index (%d lists); building a flat index", n, nlist)
        return _build_flat(vectors, ids)
    # For inner product faiss trains the coarse quantiser with spherical k-means.
    index = faiss.index_factory(dim, f"IVF{nlist},{encoding}", faiss.METRIC_INNER_PRODUCT)
    n_train = min(n, nlist * IVF_TRAIN_POINTS_PER_LIST)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=n_train, replace=False))
    index.train(vectors[rows])
    if add_parts is None:
        index.add_with_ids(vectors, ids)
        return index
    for part in add_parts(index, vectors, ids):  # each list keeps the order of one add over all vectors
        index.merge_from(part, 0)
    return index


# --- searching ------------------------------------------------------------------------


def _inner(index: faiss.Index) -> faiss.Index:
    """The index under an IndexIDMap2 wrapper, downcast to its concrete class."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap2):
        return faiss.downcast_index(index.index)
    return index


def _search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    allowed_ids: np.ndarray | None,
    *,
    ef_search: int,
    nprobe: int,
    widen: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """`search_ann` with explicit efSearch and nprobe (the benchmark sweeps them)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.d:
        raise ValueError(f"queries must have shape (Q, {index.d}), got {queries.shape}")
    kind = index_type_of(index)

    sel = None
    n_allowed = index.ntotal
    widen = max(1.0, widen)  # 1 / the fraction of the results that will be kept
    if allowed_ids is not None:
        sel, n_allowed = _selector(allowed_ids)
        if n_allowed == 0:
            return _missing(len(queries), k)
        widen = max(widen, index.ntotal / n_allowed)

    if kind == "flat":
        params = faiss.SearchParameters(sel=sel) if sel is not None else None
        scores, ids = index.search(queries, k, params=params)
    elif kind == "hnsw" and sel is not None and n_allowed <= EXACT_FILTER_MAX:
        scores, ids = _search_hnsw_exact(index, queries, k, sel)
    elif kind == "hnsw":
        # A filtered search keeps only the allowed nodes it visits: widening the beam
        # by 1 / fraction reaches about as many allowed nodes as an unfiltered search.
        ef = _widened(ef_search, widen, max(ef_search, _HNSW_EF_FILTERED_MAX))
        scores, ids = index.search(queries, k, params=faiss.SearchParametersHNSW(efSearch=max(ef, k), sel=sel))
    else:
        # Only allowed entries of the probed lists are scored, so probing 1 / fraction
        # more lists scores about as many vectors as an unfiltered search (checking an
        # id costs far less than scoring it). Small filters probe every list, which
        # makes the search exhaustive over the allowed ids.
        params = faiss.SearchParametersIVF(nprobe=_widened(nprobe, widen, _inner(index).nlist), sel=sel)
        scores, ids = index.search(queries, k, params=params)
    scores[ids < 0] = -np.inf
    return scores, ids


def _widened(value: int, widen: float, cap: int) -> int:
    """`value` (nprobe, efSearch) times `widen` (1 / the allowed fraction), rounded up, at most `cap`."""
    return min(math.ceil(value * widen), cap)


def _selector(allowed_ids: np.ndarray) -> tuple[faiss.IDSelector | None, int]:
    """(selector of `allowed_ids`, number of distinct ids in it); (None, 0) when nothing is allowed.

    A bitmap over 0..max id unless the ids are huge: SQLite rowids are small. For
    1M allowed ids of 1M stored (1M x 32-d IVF1000,SQ8, every list probed) a
    bitmap took 1.2 ms to build and 8 ms to search, IDSelectorBatch's hash set
    41 ms and 170 ms.
    """
    allowed = np.asarray(allowed_ids, dtype=np.int64).ravel()
    allowed = allowed[allowed >= 0]  # ids are >= 0, so negative ones can't match anything
    if len(allowed) == 0:
        return None, 0
    top = int(allowed.max())
    if top < _BITMAP_MAX_BITS:
        bits = np.zeros(top + 1, dtype=bool)
        bits[allowed] = True
        return faiss.IDSelectorBitmap(np.packbits(bits, bitorder="little")), int(np.count_nonzero(bits))
    allowed = np.unique(allowed)
    return faiss.IDSelectorBatch(allowed), len(allowed)


def _search_hnsw_exact(
    index: faiss.IndexIDMap2, queries: np.ndarray, k: int, sel: faiss.IDSelector
) -> tuple[np.ndarray, np.ndarray]:
    """Exact search of the allowed ids through the flat storage under the HNSW graph."""
    storage = faiss.downcast_index(_inner(index).storage)
    params = faiss.SearchParameters(sel=faiss.IDSelectorTranslated(index.id_map, sel))
    scores, rows = storage.search(queries, k, params=params)
    id_map = faiss.rev_swig_ptr(index.id_map.data(), index.id_map.size())  # a view, not a copy
    return scores, np.where(rows >= 0, id_map[np.maximum(rows, 0)], -1)


def _missing(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n_queries, k), -np.inf, dtype=np.float32), np.full((n_queries, k), -1, dtype=np.int64)
