"""Interleaved timing, shared by the benchmarks: the calls run in turn (a, b, a, b, ...), so that a drift in the
machine's speed (background load, clock changes) touches each alike, and each gets its median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(calls: dict[str, Callable[[], object]], min_time: float, min_runs: int = 3,
                device: torch.device | None = None, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each call, after `warmup` runs each, over at least `min_time` s and `min_runs` runs each."""
    for call in calls.values():  # allocator, kernels, caches
        for _ in range(warmup):
            call()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or min(len(t) for t in times.values()) < min_runs:
        for name, call in calls.items():
            sync(device)
            t0 = time.perf_counter()
            call()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}
