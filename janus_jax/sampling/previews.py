"""Streaming previews: partial images sent to the host from inside a compiled sampling loop.

A loop built with `every > 0` calls `maybe_emit(step, every, make_frame, total)`: at every `every`-th step before the
last it runs `make_frame()` on device (the mode's partial decode -> uint8[P, H, W, 3]) and hands it to the host
through an ordered `jax.debug.callback`, which calls the `on_preview(step, frames)` function that `previewing(...)`
installed. The last frame is the returned image itself, delivered by the caller (`final_frame`), so it equals it.
Loops built with `every == 0` (the default) contain neither the decode nor a callback: their executable is the one
without previews.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import jax
import numpy as np

_HANDLER: Callable[[int, np.ndarray], None] | None = None


def _emit(step, frames) -> None:
  if _HANDLER is not None:
    _HANDLER(int(step), np.asarray(frames))


def maybe_emit(step, every: int, make_frame: Callable[[], jax.Array], total: int) -> None:
  """Inside a compiled loop: at steps divisible by `every` and below `total` send `make_frame()` to the host."""
  if every <= 0:
    return
  due = (step % every == 0) & (step < total)
  jax.lax.cond(due, lambda: jax.debug.callback(_emit, step, make_frame(), ordered=True), lambda: None)


def final_frame(on_preview, total: int, images: np.ndarray) -> None:
  """On the host, after the loop: the returned images as the last frame (step `total`)."""
  if on_preview is not None:
    on_preview(int(total), np.asarray(images))


@contextlib.contextmanager
def previewing(on_preview: Callable[[int, np.ndarray], None]):
  """Routes the frames of the loops run inside the block to `on_preview(step, uint8[P, H, W, 3])`."""
  global _HANDLER
  previous, _HANDLER = _HANDLER, on_preview
  try:
    yield
  finally:
    jax.effects_barrier()  # every frame of the block has arrived
    _HANDLER = previous


def check_preview_args(preview_every: int, on_preview, total: int) -> int:
  """preview_every as an int in [0, total] (0: no previews); ValueError naming the fix otherwise."""
  if not (isinstance(preview_every, (int, np.integer)) and 0 <= preview_every):
    raise ValueError(f"preview_every must be an int >= 0 (0 = no previews), got {preview_every!r}.")
  if preview_every and on_preview is None:
    raise ValueError("preview_every > 0 needs on_preview=fn(step, frames uint8[N, H, W, 3]) to receive the frames.")
  return int(min(preview_every, total))


__all__ = ["maybe_emit", "final_frame", "previewing", "check_preview_args"]
