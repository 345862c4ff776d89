"""Metrics and feedback: TensorBoard (clu metric writers) + `metrics.jsonl`, a progress line, NaN guard.

    writer = MetricsWriter(workdir)                 # only process 0 writes files
    writer.scalars(step, {"train/loss": 1.23})      # TensorBoard + one JSON line per call
    writer.images(step, {"samples": uint8[N, H, W, 3]})
    progress = Progress(total_steps); print(progress.line(step, {"loss": 1.2}))
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

import jax
import numpy as np


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss; the last good checkpoint is left in place."""


class MetricsWriter:
  """Scalars and images to TensorBoard (clu) and scalars to `<workdir>/metrics.jsonl`."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from clu import metric_writers  # pylint: disable=import-outside-toplevel
        self._tb = metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"), asynchronous=False)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": int(step), **values}) + "\n")
    if self._tb is not None:
      self._tb.write_scalars(int(step), values)

  def images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    if self.enabled and self._tb is not None:
      self._tb.write_images(int(step), {k: np.asarray(v) for k, v in images.items()})

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(workdir: str) -> list[dict]:
  """All lines of `<workdir>/metrics.jsonl` (handy in notebooks)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """A one-line progress report: step, steps/s, ETA and the given scalars."""

  def __init__(self, total_steps: int, first_step: int = 0):
    self.total = total_steps
    self.t0, self.s0 = time.time(), first_step

  def line(self, step: int, values: Mapping[str, float]) -> str:
    done = step - self.s0
    elapsed = time.time() - self.t0
    rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    shown = "  ".join(f"{k}={v:.4g}" for k, v in values.items())
    eta_s = f"{eta:5.0f}s" if math.isfinite(eta) else "  ?"
    return f"step {step:6d}/{self.total}  {rate:6.2f} steps/s  ETA {eta_s}  {shown}"


def check_finite(step: int, values: Mapping[str, float], last_checkpoint: int | None) -> None:
  """Raises NonFiniteLossError naming the step, the bad metrics and the checkpoint to resume from."""
  bad = {k: v for k, v in values.items() if not math.isfinite(float(v))}
  if bad:
    where = (f"the last good checkpoint (step {last_checkpoint}) is kept" if last_checkpoint is not None
             else "no checkpoint was written yet")
    raise NonFiniteLossError(
        f"Non-finite metrics at step {step}: {bad}; training stopped and {where}. Fix: lower optim.lr, check "
        "the data, or resume from that checkpoint with a different seed.")
