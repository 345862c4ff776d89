"""Timing for the benchmark scripts: the median wall time of a call after a warm-up (compile) call."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
  """Median seconds of `repeats` calls of `fn` (which blocks until its result is ready), after one untimed call."""
  if warmup:
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)
