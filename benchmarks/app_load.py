"""The app under load: N concurrent clients on its real HTTP queue API (the one gradio_client uses), for a fixed time.

    python benchmarks/app_load.py                                   # 10,000 images; 1, 4, 16 clients, 60 s each
    python benchmarks/app_load.py --clients 16 --seconds 10         # a quick look

The index holds the sample images, encoded for real, and --images small noise pictures stored with synthetic vectors
(random unit vectors), so every result has a real thumbnail and nothing but the samples is encoded. The app runs as
`vlm-app` in a process of its own on 127.0.0.1 with the embedded model, so the clients' threads don't share its
interpreter. The clients speak the HTTP queue API that gradio_client speaks (POST /gradio_api/call/NAME, then the
answer's event stream), with httpx: gradio_client's own threads took 60% of this machine's 2 cores at 16 clients.
Each client repeats, in turn: a text search (one of a few dozen queries, so some repeat), an image search by a
sample image, and a classify of a sample image. Latency is the API's answer (result images as URLs; the client does
not download them, as a browser fetches and caches thumbnails apart). Printed per client count and request kind:
requests/s, p50/p95/p99 latency and errors; then the text-search p95 against the issue's target of 1 s."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

QUERIES = [f"{adjective} {thing}" for adjective in ("red", "blue", "happy", "small", "shiny", "old")
           for thing in ("apple", "heart", "rocket", "pizza", "sun", "face", "cat")]


def build_index(db: Path, images: int) -> None:
    """The samples, encoded; then `images` small noise pictures beside the database, each stored with a synthetic
    vector (a random unit vector): real files, so every result has a real thumbnail, without encoding them."""
    from PIL import Image

    from vlm_vision.checkpoints import SAMPLES
    from vlm_vision.index import PhotoIndex
    from vlm_vision.index.db import IndexedFile

    folder = db.parent / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    with PhotoIndex(db, create=True) as index:
        index.build([SAMPLES], workers=0)
        dim = index.db.model_info().dim
        rng = np.random.default_rng(0)
        for start in range(0, images, 1000):
            vectors = rng.standard_normal((min(1000, images - start), dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            hashes = [hashlib.blake2b(v.tobytes(), digest_size=16).hexdigest() for v in vectors]
            files = []
            for i, h in enumerate(hashes):
                path = folder / f"img_{start + i:06d}.png"
                Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
                files.append(IndexedFile(str(path), h, path.stat().st_size, path.stat().st_mtime_ns, 32, 24, None,
                                         None))
            index.db.commit_batch(files, dict(zip(hashes, vectors)), [])
        index.search("warm up", k=1)  # writes the FAISS file once, before the clients come


def start_app(db: Path, port: int) -> subprocess.Popen:
    """`vlm-app` on 127.0.0.1:`port` over `db`, waited for until it answers."""
    import httpx

    app = subprocess.Popen([sys.executable, "-m", "vlm_vision.app", "--index", str(db), "--port", str(port),
                            "--dtype", "float32"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise RuntimeError(f"vlm-app exited: {app.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).status_code == 200:
                return app
        except httpx.HTTPError:
            time.sleep(0.5)
    app.kill()
    raise RuntimeError("vlm-app did not answer within 180 s")


class ApiClient:
    """One client of the app's HTTP queue API, as gradio_client uses it but lighter (the clients share this machine's
    2 cores with the app): POST /gradio_api/call/NAME queues a request, GET .../EVENT_ID streams its answer."""

    def __init__(self, url: str) -> None:
        import httpx

        self.http = httpx.Client(base_url=f"{url}/gradio_api", timeout=120)

    def upload(self, path: Path) -> dict:
        """An image uploaded once, as the FileData the API takes."""
        response = self.http.post("/upload", files={"files": (path.name, path.read_bytes())})
        response.raise_for_status()
        return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}

    def predict(self, api_name: str, *data) -> list:
        response = self.http.post(f"/call/{api_name}", json={"data": list(data)})
        response.raise_for_status()
        event, payload = None, None
        with self.http.stream("GET", f"/call/{api_name}/{response.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event in ("complete", "error"):
                    payload = line.removeprefix("data: ")
                    break
        if event != "complete":
            raise RuntimeError(f"{api_name}: {event}: {payload}")
        return json.loads(payload)


def requests(client: ApiClient) -> dict[str, Callable[[int], object]]:
    """The request kinds a client sends, each a call of the request number; each checks its own answer."""
    from vlm_vision.checkpoints import SAMPLES

    pizza = client.upload(SAMPLES / "pizza.png")

    def text_search(i: int) -> None:
        gallery = client.predict("search", QUERIES[i % len(QUERIES)], None, "", 10, "", "", "", "", None)[0]
        if len(gallery) != 10:
            raise AssertionError(f"{len(gallery)} results, not 10")

    def image_search(i: int) -> None:
        gallery = client.predict("search", "", pizza, "", 10, "", "", "", "", None)[0]
        if not gallery[0]["caption"].endswith("pizza.png"):
            raise AssertionError(f"pizza.png is not the first result: {gallery[0]['caption']}")

    def classify(i: int) -> None:
        result = client.predict("classify", pizza, "pizza, rocket, red heart", "{}")[0]
        if result["label"] != "pizza":
            raise AssertionError(f"classified as {result['label']}")

    return {"text search": text_search, "image search": image_search, "classify": classify}


def run_load(url: str, clients: int, seconds: float) -> dict[str, dict[str, list]]:
    """Run `clients` threads against `url` for `seconds`; per request kind, the latencies and the errors."""
    results: dict[str, dict[str, list]] = {}
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client_loop(n: int) -> None:
        calls = requests(ApiClient(url))
        ready.wait()
        i = n  # clients start at different points of the cycle
        while not stop.is_set():
            kind = list(calls)[i % len(calls)]
            start = time.perf_counter()
            try:
                calls[kind](i)
                outcome, value = "latencies", time.perf_counter() - start
            except Exception as e:  # noqa: BLE001 - every failure counts, whatever its kind
                outcome, value = "errors", f"{type(e).__name__}: {e}"
            with lock:
                results.setdefault(kind, {"latencies": [], "errors": []})[outcome].append(value)
            i += 1

    threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    return results


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(clients: int, seconds: float, results: dict[str, dict[str, list]]) -> float:
    """Print one table row per request kind; returns the text search's p95 in seconds."""
    for kind, r in sorted(results.items()):
        lat = r["latencies"]
        print(f"| {clients} | {kind} | {len(lat) + len(r['errors'])} | {len(lat) / seconds:.1f} | "
              f"{1000 * statistics.median(lat) if lat else float('nan'):.0f} | {1000 * percentile(lat, 95):.0f} | "
              f"{1000 * percentile(lat, 99):.0f} | {len(r['errors'])} |", flush=True)
        for error in r["errors"][:3]:
            print(f"    error: {error[:200]}")
    return percentile(results.get("text search", {}).get("latencies", []), 95)


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="synthetic vectors beside the samples")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--port", type=int, default=7911)
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "load.db"
        build_index(db, args.images)
        app = start_app(db, args.port)
        try:
            print(f"# {args.images + 12} images, embedded model, {cpu_name()}, {os.cpu_count()} cores, "
                  f"{args.seconds:.0f} s per client count")
            print("| clients | request | requests | req/s | p50 ms | p95 ms | p99 ms | errors |")
            print("|---|---|---|---|---|---|---|---|")
            server, here = psutil.Process(app.pid), psutil.Process()
            for clients in args.clients:
                cpu = [sum(p.cpu_times()[:2]) for p in (server, here)]
                p95 = report(clients, args.seconds, run_load(f"http://127.0.0.1:{args.port}", clients, args.seconds))
                busy = [sum(p.cpu_times()[:2]) - before for p, before in zip((server, here), cpu)]
                print(f"    CPU seconds over {args.seconds:.0f} s: app {busy[0]:.0f}, clients {busy[1]:.0f}")
                if clients == max(args.clients):
                    print(f"\ntext search p95 at {clients} clients: {p95:.2f} s (target: under 1 s)")
        finally:
            app.terminate()
            app.wait(timeout=30)


if __name__ == "__main__":
    main()
