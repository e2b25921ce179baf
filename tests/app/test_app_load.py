"""The app under load, briefly (issue 32, part 1): 8 concurrent clients on the launched app for a few seconds, every
answer checked, no error. `benchmarks/app_load.py` is the long version; this test runs its driver."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.app.test_app import free_port
from vlm_vision.app.backend import Backend

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from app_load import build_index, run_load  # noqa: E402


def test_eight_clients_get_right_answers_and_no_errors(tmp_path):
    from vlm_vision.app.__main__ import launch_options
    from vlm_vision.app.ui import build_demo

    db = tmp_path / "load.db"
    build_index(db, images=2000)
    backend = Backend(db, dtype="float32")
    demo = build_demo(backend=backend)
    port = free_port()
    demo.queue(default_concurrency_limit=4).launch(prevent_thread_lock=True, quiet=True,
                                                   **launch_options(backend, "127.0.0.1", port))
    try:
        results = run_load(f"http://127.0.0.1:{port}", clients=8, seconds=4)
    finally:
        demo.close()
        backend.close()
    assert set(results) == {"text search", "image search", "classify"}
    assert {kind: r["errors"] for kind, r in results.items()} == {kind: [] for kind in results}
    assert all(len(r["latencies"]) >= 2 for r in results.values())  # every kind answered, and checked its answer
