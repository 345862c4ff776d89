"""Training the VQ image tokenizer (the same `VQModel` Janus uses) on images, e.g. Shapes.

Loss = reconstruction MSE + codebook loss + commitment loss (β in `VQConfig.commit_beta`), computed on the
L2-normalised latents as the official quantizer does. Perceptual and adversarial terms (LlamaGen's full recipe) are
not implemented; on flat procedural images MSE alone reaches high PSNR. Reports reconstruction PSNR and codebook
usage on held-out images.

    params, report = train_vq(vq_cfg, images_train, images_eval, steps=800, batch_size=64, lr=2e-3, workdir=...)
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from janus_jax.models.configs import VQConfig
from janus_jax.models.vq import VQModel
from janus_jax.train.checkpoint import Checkpointer, abstract_like
from janus_jax.train.metrics import MetricsWriter, Progress, check_finite


def to_model_range(images_uint8: np.ndarray) -> np.ndarray:
  """uint8[..., 3] -> float32 in [-1, 1]."""
  return images_uint8.astype(np.float32) / 127.5 - 1.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR in dB of two image batches in [-1, 1] (peak-to-peak 2)."""
  mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
  return float("inf") if mse == 0 else 10.0 * np.log10(4.0 / mse)


@functools.lru_cache(maxsize=None)
def _step_fn(cfg: VQConfig, lr: float, warmup: int, steps: int):
  model = VQModel(cfg)
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(steps, warmup + 1), lr * 0.1)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=0.0))

  def loss_fn(params, x):
    recon, codes, aux = model.apply({"params": params}, x)
    rec = jnp.mean(jnp.square(recon.astype(jnp.float32) - x))
    total = rec + aux["codebook_loss"] + aux["commit_loss"]
    return total, {"loss": total, "recon_mse": rec, "codebook_loss": aux["codebook_loss"],
                   "commit_loss": aux["commit_loss"], "batch_usage": aux["codebook_usage"]}

  @jax.jit
  def step(params, opt_state, x):
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  @jax.jit
  def reconstruct(params, x):
    recon, codes, _ = model.apply({"params": params}, x)
    return recon, codes

  return model, tx, step, reconstruct


def evaluate_vq(cfg: VQConfig, params, images: np.ndarray, batch_size: int = 64) -> dict[str, float]:
  """PSNR (dB) and codebook usage (fraction of codes used) on uint8[N, H, W, 3] images."""
  _, _, _, reconstruct = _step_fn(cfg, 0.0, 1, 2)
  recons, codes = [], []
  for i in range(0, len(images), batch_size):
    x = to_model_range(images[i:i + batch_size])
    r, c = reconstruct(params, jnp.asarray(x))
    recons.append(np.asarray(r))
    codes.append(np.asarray(c).reshape(-1))
  codes = np.concatenate(codes)
  return {"psnr": psnr(np.concatenate(recons), to_model_range(images)),
          "codebook_usage": float(len(np.unique(codes)) / cfg.codebook_size),
          "codes_used": int(len(np.unique(codes)))}


def train_vq(cfg: VQConfig, train_images: np.ndarray, eval_images: np.ndarray, *, steps: int, batch_size: int,
             lr: float = 2e-3, warmup: int = 50, seed: int = 0, workdir: str | None = None, log_every: int = 50,
             checkpoint_every: int = 0, quiet: bool = False) -> tuple[Any, dict[str, Any]]:
  """Trains a VQ tokenizer from scratch on uint8[N, H, W, 3] images; returns (params, report).

  With a `workdir`, writes metrics (TensorBoard + metrics.jsonl) and orbax checkpoints, and resumes from the latest
  checkpoint found there. Batches are drawn by a seeded permutation per epoch, so a resumed run sees the same
  images as an uninterrupted one.
  """
  if train_images.ndim != 4 or train_images.shape[-1] != 3 or train_images.dtype != np.uint8:
    raise ValueError(f"train_vq expects uint8[N, H, W, 3] images, got {train_images.dtype}{train_images.shape}.")
  model, tx, step_fn, _ = _step_fn(cfg, float(lr), int(warmup), int(steps))
  x0 = jnp.asarray(to_model_range(train_images[:1]))
  params = nn.unbox(model.init(jax.random.PRNGKey(seed), x0)["params"])
  opt_state = tx.init(params)
  state = {"params": params, "opt_state": opt_state}
  start = 0
  ckpt = writer = None
  if workdir:
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=checkpoint_every or steps, keep=2)
    restored = ckpt.restore_latest(abstract_like(state))
    if restored is not None:
      state, start = restored
      if not quiet:
        print(f"resumed VQ training from step {start}")
    writer = MetricsWriter(workdir)
  params, opt_state = state["params"], state["opt_state"]
  n = len(train_images)
  per_epoch = max(n // batch_size, 1)
  progress = Progress(steps, start)
  t0 = time.time()
  for step in range(start, steps):
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    idx = order[k * batch_size:(k + 1) * batch_size]
    params, opt_state, metrics = step_fn(params, opt_state, jnp.asarray(to_model_range(train_images[idx])))
    done = step + 1
    if done % log_every == 0 or done == steps:
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      check_finite(done, metrics, ckpt.latest_step() if ckpt else None)
      if writer:
        writer.scalars(done, {f"vq/{k}": v for k, v in metrics.items()})
      if not quiet:
        print("[vq] " + progress.line(done, {"mse": metrics["recon_mse"], "usage": metrics["batch_usage"]}),
              flush=True)
    if ckpt is not None:
      ckpt.maybe_save(done, {"params": params, "opt_state": opt_state})
  report = evaluate_vq(cfg, params, eval_images)
  report.update(steps=steps, train_seconds=round(time.time() - t0, 1))
  if writer:
    writer.scalars(steps, {"vq/eval_psnr": report["psnr"], "vq/eval_codebook_usage": report["codebook_usage"]})
    writer.close()
  if ckpt is not None:
    ckpt.close()
  return params, report
