"""Benchmarks of the photo index, one part at a time (results in benchmarks/README.md).

    python benchmarks/index.py --part faiss                 # the ANN layer: 1M x 768 synthetic vectors
    python benchmarks/index.py --part update                # a stale 1M IVF index: update vs rebuild
    python benchmarks/index.py --part drift --new same      # many updates in a row (200k x 768)
    python benchmarks/index.py --part drift --new other     # ... of photos unlike the indexed ones
    python benchmarks/index.py --part build --n 2000        # build throughput / the model's own
    python benchmarks/index.py --part build --model b16 --dtype bfloat16 --n 96 --workers 0 1
    python benchmarks/index.py --part rescan --n 10000      # an unchanged folder
    python benchmarks/index.py --part query --n 100000      # text query latency, model loaded
    python benchmarks/index.py --part filters --n 100000    # ... with folder, date and camera filters
    python benchmarks/index.py --part decode --model b16    # camera-size JPEGs: reduced vs full decode

The faiss part lives in index_faiss.py (its docstring describes the data and the
timing), the others in index_pipeline.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's vlm_vision first
from vlm_vision.index import ann  # noqa: E402
from vlm_vision.inference import MODES  # noqa: E402
from index_faiss import part_drift, part_faiss, part_update  # noqa: E402
from index_pipeline import part_build, part_decode, part_filters, part_query, part_rescan  # noqa: E402

PARTS: dict[str, Callable[[argparse.Namespace], None]] = {
    "faiss": part_faiss,
    "update": part_update,
    "drift": part_drift,
    "build": part_build,
    "rescan": part_rescan,
    "query": part_query,
    "filters": part_filters,
    "decode": part_decode,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=sorted(PARTS), required=True)
    parser.add_argument("--n", type=int, default=None,
                        help="vectors (faiss, update: 1M; query, filters: 100k) or image files (build: 2000, "
                             "rescan: 10k, decode: 8 per size)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=None, help="default: N / 250")
    parser.add_argument("--change", type=float, default=0.01,
                        help="update, drift: the fraction of N removed, and the same number added (per round)")
    parser.add_argument("--rounds", type=int, default=8, help="drift: updates in a row")
    parser.add_argument("--new", choices=["other", "same"], default="other",
                        help="drift: where the added vectors come from (another distribution or the indexed one)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads to build")
    parser.add_argument("--search-threads", type=int, default=1,
                        help="faiss OpenMP threads to search (see the module docstring)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="calls per query (decode: reads per photo); the fastest counts")
    parser.add_argument("--steps", nargs="+", default=["flat", "ivf", "hnsw"], choices=["flat", "ivf", "hnsw"])
    parser.add_argument("--flat-sizes", type=int, nargs="+", default=[10_000, 30_000, 50_000, 100_000])
    parser.add_argument("--flat-queries", type=int, default=200,
                        help="queries for flat below full N (its time hardly depends on the query)")
    parser.add_argument("--flat-queries-full", type=int, default=50,
                        help="queries for flat at full N (each scans all N vectors)")
    parser.add_argument("--ivf", nargs="+", default=["1,SQ8", "1,Flat", "4,SQ8"],
                        help="IVF configurations 'LISTS_PER_SQRT_N,ENCODING'")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--hnsw-n", type=int, default=1_000_000, help="HNSW is built on the first N vectors")
    parser.add_argument("--hnsw-m", type=int, default=ann.HNSW_M)
    parser.add_argument("--hnsw-ef-construction", type=int, default=ann.HNSW_EF_CONSTRUCTION)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--filter-fractions", type=float, nargs="+", default=[0.001, 0.01, 0.05, 0.1, 0.5])
    parser.add_argument("--filter-queries", type=int, default=200)
    parser.add_argument("--tmp-dir", default=None, help="where write_ann/read_ann are timed")
    pipeline = parser.add_argument_group("build, rescan, query and decode")
    pipeline.add_argument("--model", default=None,
                          help="SigLIP checkpoint (default: the embedded model; 'b16': random weights, B/16@224)")
    pipeline.add_argument("--batch-size", type=int, default=32)
    pipeline.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16"])
    pipeline.add_argument("--mode", default="exact", choices=MODES,
                          help="build: the encoder's inference mode (the model alone runs in it too)")
    pipeline.add_argument("--device", default="cpu")
    pipeline.add_argument("--workers", type=int, nargs="+", default=[1], help="build: decoding processes to try")
    pipeline.add_argument("--torch-threads", type=int, default=None)
    pipeline.add_argument("--index-type", default="auto", choices=["auto", *ann.INDEX_TYPES],
                          help="filters: the FAISS index type (as `index build --index-type`)")
    pipeline.add_argument("--photo-sizes", nargs="+", default=["4000x3000", "4032x3024", "6000x4000", "4000x2250"],
                          help="decode: camera photo sizes WIDTHxHEIGHT")
    pipeline.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "vlm-index-bench"),
                          help="where the generated photos (kept between runs) and indexes go")
    args = parser.parse_args()
    if args.part == "drift" and args.n is None:
        args.n = 200_000
    if args.part in ("faiss", "update") and args.n is None:
        args.n = 1_000_000
    Path(args.work).mkdir(parents=True, exist_ok=True)
    PARTS[args.part](args)


if __name__ == "__main__":
    main()
