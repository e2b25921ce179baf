"""The local build against the distributed build on Ray (1 and 2 model workers), over the same generated JPEGs.

Each row builds a fresh index of the same folder, with the model already loaded in this process (the Ray rows start
their Ray instance inside the timed call, as `vlm-index build --engine ray` does). Printed per row: wall time and
images/s over the whole call; the time to the first stored batch (start-up: Ray, the actors' model loads); the
steady rate from the first stored batch to the last; and Ray's cost per image against the local build at the
steady rates. Results: benchmarks/README.md ("Distributed build").

    python benchmarks/distributed.py --images 1024
    python benchmarks/distributed.py --images 384 --batch-size 16 --model b16   # random weights, B/16@224
    python benchmarks/distributed.py --plan   # the FAISS costs behind docs/scale.md's plan for 100M images
    python benchmarks/distributed.py --images 1024 --model PATH --device cuda   # one GPU actor
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is imported: loopback only

import torch  # noqa: E402

from app_load import cpu_name  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from index_pipeline import b16_checkpoint, make_photos  # noqa: E402
from vlm_vision.index import PhotoIndex  # noqa: E402


def run(engine: str, photos: Path, args: argparse.Namespace, workers: int = 1, threads: int = 1,
        cpus: int | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        index = PhotoIndex(Path(tmp) / "index.db", args.model, device=args.device, mode=args.mode, create=True)
        index.model  # loaded before the clock starts
        stored: list[tuple[float, int]] = []  # (seconds, files stored) after each batch
        start = time.perf_counter()

        def progress(p) -> None:
            stored.append((time.perf_counter() - start, p.done))

        if engine == "local":
            summary = index.build([photos], batch_size=args.batch_size, progress=progress)
        else:
            import ray

            ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
            try:
                summary = index.build_on_ray([photos], workers=workers, cpus_per_worker=threads,
                                             batch_size=args.batch_size, progress=progress)
            finally:
                ray.shutdown()
        wall = time.perf_counter() - start
        index.close()
    (t0, n0), (t1, n1) = stored[0], stored[-1]
    return {"wall": wall, "encoded": summary.encoded, "first": t0, "steady": (n1 - n0) / (t1 - t0)}


def plan_costs() -> None:
    """One query's two costs in an IVF65536,PQ64 index of 768-d vectors, measured at a size that fits here, on one
    thread: the coarse step (a flat scan of 65,536 centroids) and the scan of the probed lists (per PQ64 code)."""
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    dim, n, nlist = 768, 200_000, 256
    centroids = rng.standard_normal((65_536, dim)).astype(np.float32)
    coarse = faiss.IndexFlatIP(dim)
    coarse.add(centroids)
    queries = rng.standard_normal((50, dim)).astype(np.float32)
    start = time.perf_counter()
    for q in queries:
        coarse.search(q[None], 64)
    coarse_ms = 1000 * (time.perf_counter() - start) / len(queries)

    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.index_factory(dim, f"IVF{nlist},PQ64", faiss.METRIC_INNER_PRODUCT)
    index.train(vectors[:50_000])
    index.add(vectors)
    faiss.omp_set_num_threads(1)
    index.nprobe = nlist  # every list: n codes scanned per query
    start = time.perf_counter()
    for q in queries[:10]:
        index.search(q[None], 10)
    scan_ms = 1000 * (time.perf_counter() - start) / 10
    print(f"coarse step, flat over 65,536 x {dim} centroids: {coarse_ms:.2f} ms per query (1 thread)")
    print(f"PQ64 list scan: {scan_ms:.1f} ms for {n:,} codes = {1e6 * scan_ms / n:.1f} ns per code (1 thread); "
          f"nprobe 64 of 65,536 lists over 100M vectors scans about {64 / 65_536 * 1e8:,.0f} codes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--model", default=None, help="default: the embedded model; b16: random weights, B/16@224")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", default="exact", help="the inference mode of every row (exact: no compile wait)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "vlm-bench-photos")
    parser.add_argument("--plan", action="store_true", help="measure the FAISS costs of the 100M plan instead")
    args = parser.parse_args()
    if args.plan:
        print(cpu_name())
        plan_costs()
        return

    if args.model == "b16":
        args.model = str(b16_checkpoint(args.folder / "siglip-b16-random"))
    photos = args.folder / f"{args.images}"
    make_photos(photos, args.images)
    print(f"{cpu_name()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} capability {torch.backends.cpu.get_cpu_capability()}, AVX-512 BF16 "
          f"{torch.cpu._is_avx512_bf16_supported()}; {args.images} JPEGs 320x240, model {args.model or 'default'}, "
          f"mode {args.mode}, batch {args.batch_size}, device {args.device}")
    cores = os.cpu_count() or 2
    rows = {"local build": run("local", photos, args)}
    rows["ray, 1 worker"] = run("ray", photos, args, workers=1, cpus=cores)
    # Two model actors of one CPU each, or one of two, and one CPU for decoding: on a 2-core machine Ray is told 3.
    rows["ray, 2 workers"] = run("ray", photos, args, workers=2, cpus=max(cores, 3))
    rows["ray, 1 worker x2"] = run("ray", photos, args, workers=1, threads=2, cpus=max(cores, 3))
    local = rows["local build"]
    print(f"{'':16} {'wall s':>7} {'img/s':>7} {'first batch s':>14} {'steady img/s':>13} {'x local':>8} "
          f"{'ms/img vs local':>16}")
    for name, r in rows.items():
        overhead = 1000 * (1 / r["steady"] - 1 / local["steady"])
        print(f"{name:16} {r['wall']:7.1f} {r['encoded'] / r['wall']:7.1f} {r['first']:14.2f} {r['steady']:13.1f} "
              f"{r['steady'] / local['steady']:8.2f} {overhead:16.2f}")


if __name__ == "__main__":
    main()
