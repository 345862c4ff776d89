"""Host-side progress reporting from inside compiled loops.

A loop built with `every > 0` calls `tick(step)` through `jax.debug.callback` once every `every` steps; the
callback advances whatever tqdm bar `reporting(...)` installed. Without a bar the callback is a no-op. Loops
built with `every == 0` (the API default) contain no callback at all.
"""
from __future__ import annotations

import contextlib

import jax

_BAR = None


def tick(step) -> None:
  if _BAR is not None:
    _BAR.n = int(step)
    _BAR.refresh()


def maybe_tick(step, every: int) -> None:
  """Inside a compiled loop: report `step` to the host every `every` steps (nothing when every == 0)."""
  if every > 0:
    jax.lax.cond(step % every == 0, lambda: jax.debug.callback(tick, step), lambda: None)


@contextlib.contextmanager
def reporting(total: int, desc: str):
  """Shows a tqdm bar for the duration of the block."""
  from tqdm import tqdm
  global _BAR
  _BAR = tqdm(total=total, desc=desc, unit="tok")
  try:
    yield _BAR
  finally:
    _BAR.n = total
    _BAR.refresh()
    _BAR.close()
    _BAR = None
