"""The training loop shared by the image autoencoders (`vq_trainer`, `vae_trainer`): seeded epoch batches, resume
from orbax checkpoints, TensorBoard / metrics.jsonl, progress lines and the NaN/Inf stop.

    params, seconds = fit("vq", params, tx, step, batches, steps=500, workdir=..., shown={"mse": "recon_mse"})
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from janus_jax import paths
from janus_jax.train.checkpoint import Checkpointer, Preempted, abstract_like
from janus_jax.train.metrics import MetricsWriter, Progress, check_finite


def to_model_range(images_uint8: np.ndarray) -> np.ndarray:
  """uint8[..., 3] -> float32 in [-1, 1]."""
  return images_uint8.astype(np.float32) / 127.5 - 1.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR in dB of two image batches in [-1, 1] (peak-to-peak 2)."""
  mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
  return float("inf") if mse == 0 else 10.0 * np.log10(4.0 / mse)


def epoch_batches(images: np.ndarray | Iterable[np.ndarray], batch_size: int, seed: int,
                  start: int) -> Iterator[np.ndarray]:
  """uint8[B, H, W, 3] batches from step `start` on: from an array, by a seeded permutation per epoch (so a resumed
  run sees the same batches as an uninterrupted one); from an iterable of batches, from its current position."""
  if not isinstance(images, np.ndarray):
    for batch in images:
      yield np.asarray(batch)
    return
  n = len(images)
  per_epoch = max(n // batch_size, 1)
  step = start
  while True:
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    yield images[order[k * batch_size:(k + 1) * batch_size]]
    step += 1


StepFn = Callable[[Any, Any, jax.Array, int], tuple[Any, Any, Mapping[str, jax.Array]]]


def fit(name: str, params: Any, tx: optax.GradientTransformation, step_fn: StepFn,
        images: np.ndarray | Iterable[np.ndarray], *, steps: int, batch_size: int, seed: int = 0,
        workdir: str | None = None, checkpoint_every: int = 0, log_every: int = 50,
        shown: Mapping[str, str] | None = None, check_batch: Callable[[np.ndarray], None] | None = None,
        evaluate: Callable[[Any], tuple[dict, Mapping[str, float]]] | None = None,
        quiet: bool = False) -> tuple[Any, dict]:
  """Runs `steps` updates `step_fn(params, opt_state, float32[B, H, W, 3] in [-1, 1], step) -> (params, opt_state,
  metrics)`; returns (params, report) with report = the `evaluate(params)` report plus steps and train_seconds.

  With a `workdir`, writes `<name>/...` scalars (TensorBoard + metrics.jsonl; `evaluate` also returns the final
  scalars to write) and orbax checkpoints of {params, opt_state}, and resumes from the latest checkpoint found
  there; SIGTERM saves at the next step and raises `checkpoint.Preempted`. `shown` maps progress-line labels to metric names; `check_batch` validates each uint8 batch.
  """
  state = {"params": params, "opt_state": tx.init(params)}
  start = 0
  ckpt = writer = None
  if workdir:
    ckpt = Checkpointer(paths.resolve(workdir) / "checkpoints", save_every=checkpoint_every or steps, keep=2)
    restored = ckpt.restore_latest(abstract_like(state))
    if restored is not None:
      state, start = restored
      if not quiet:
        print(f"resumed {name} training from step {start}")
    writer = MetricsWriter(workdir, resume_step=start)
  params, opt_state = state["params"], state["opt_state"]
  batches = epoch_batches(images, batch_size, seed, start)
  progress = Progress(steps, start)
  t0 = time.time()
  try:
    for step in range(start, steps):
      try:
        batch = next(batches)
      except StopIteration:
        raise ValueError(f"{name}: the image iterator ran out after {step} of {steps} steps.") from None
      if check_batch is not None:
        check_batch(batch)
      params, opt_state, metrics = step_fn(params, opt_state, jnp.asarray(to_model_range(batch)), step)
      done = step + 1
      if done % log_every == 0 or done == steps:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        check_finite(done, metrics, ckpt.latest_step() if ckpt else None)
        if writer:
          writer.scalars(done, {f"{name}/{k}": v for k, v in metrics.items()})
        if not quiet:
          print(f"[{name}] " + progress.line(done, {k: metrics[m] for k, m in (shown or {}).items()}), flush=True)
      if ckpt is not None:
        stop = ckpt.preemption_point(done)
        ckpt.maybe_save(done, {"params": params, "opt_state": opt_state}, force=stop)
        if stop:
          if not quiet:
            print(f"[{name}] SIGTERM: checkpoint written at step {done}; exiting.", flush=True)
          raise Preempted(f"{name} training stopped by SIGTERM at step {done} (checkpoint saved)")
    seconds = round(time.time() - t0, 1)
    report, scalars = evaluate(params) if evaluate is not None else ({}, {})
    report = dict(report, steps=steps, train_seconds=seconds)
    if writer and start < steps:  # a finished run reloaded (e.g. the main job restarted) logs nothing twice
      writer.scalars(steps, {f"{name}/{k}": v for k, v in scalars.items()})
  finally:
    if ckpt is not None:
      ckpt.close()
    if writer:
      writer.close()
  return params, report


__all__ = ["to_model_range", "psnr", "epoch_batches", "fit"]
