"""Metrics and feedback: TensorBoard (clu metric writers) + `metrics.jsonl`, a progress line, NaN guard.

    writer = MetricsWriter(workdir, resume_step=s)  # only process 0 writes files; lines after step s are dropped
    writer.scalars(step, {"train/loss": 1.23})      # TensorBoard + one JSON line per call
    writer.images(step, {"samples": uint8[N, H, W, 3]})
    progress = Progress(total_steps); print(progress.line(step, {"loss": 1.2}))
"""
from __future__ import annotations

import json
import math
import time
from typing import Mapping

import jax
import numpy as np

from janus_jax import paths


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/Inf loss; the last good checkpoint is left in place."""


class MetricsWriter:
  """Scalars and images to TensorBoard (clu) and scalars to `<workdir>/metrics.jsonl` (local or remote workdir).

  `resume_step`: a run resumed from the checkpoint at that step first drops the lines written after it (a killed run
  may have logged steps it never saved), so the file ends up as an uninterrupted run's."""

  def __init__(self, workdir: paths.PathLike, tensorboard: bool = True, resume_step: int | None = None):
    self.enabled = jax.process_index() == 0
    workdir = paths.resolve(workdir)
    self.path = workdir / "metrics.jsonl"
    self._remote = paths.is_remote(workdir)  # object stores cannot append: the file is rewritten instead
    self._lines: list[str] = []
    self._tb = None
    if self.enabled:
      workdir.mkdir(parents=True, exist_ok=True)
      if self.path.exists():
        kept = [l for l in _parsed_lines(self.path.read_text()) if resume_step is None or l[1]["step"] <= resume_step]
        self._lines = [text for text, _ in kept]
        self.path.write_text("".join(t + "\n" for t in self._lines))
      if tensorboard:
        from clu import metric_writers  # pylint: disable=import-outside-toplevel
        self._tb = metric_writers.create_default_writer(str(workdir / "tensorboard"), asynchronous=False)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    line = json.dumps({"step": int(step), **values})
    self._lines.append(line)
    if self._remote:
      self.path.write_text("".join(t + "\n" for t in self._lines))
    else:
      with self.path.open("a") as f:
        f.write(line + "\n")
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


def _parsed_lines(text: str) -> list[tuple[str, dict]]:
  """(line, record) of every complete JSON line (a line cut short by a killed process is skipped)."""
  out = []
  for line in text.splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(record, dict) and "step" in record:
      out.append((line, record))
  return out


def read_metrics(workdir: paths.PathLike) -> list[dict]:
  """All lines of `<workdir>/metrics.jsonl` (handy in notebooks)."""
  path = paths.resolve(workdir) / "metrics.jsonl"
  return [record for _, record in _parsed_lines(path.read_text())] if path.exists() else []


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
