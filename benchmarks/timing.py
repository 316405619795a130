"""The one timing loop the benchmarks share."""

from __future__ import annotations

import time
from typing import Callable


def step_times(step: Callable[[], object], steps: int, warmup: int = 2) -> list[float]:
    """Seconds of each of `steps` calls of `step` after `warmup` untimed ones (compilation,
    caches). `step` must block until its work is done."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times
