"""Training a small KL autoencoder (`janus_jax.models.kl_vae.AutoencoderKL`) on images, e.g. Shapes, as the latent
space of a JanusFlow-style flow model. Shares its loop with `vq_trainer` (`autoencoder_loop.fit`).

Loss = reconstruction (MSE, or L1 with `recon_loss="l1"`) of the decoded posterior sample
     + kl_weight * KL(q(z|x) || N(0, 1)) averaged over latent elements (default 1e-6, as SD VAEs).
Perceptual (LPIPS) and adversarial terms of the full SD-VAE recipe are NOT implemented: `perceptual_weight` and
`adversarial_weight` must be 0, anything else raises NotImplementedError. On flat procedural images the pixel loss
alone reaches high PSNR.

`evaluate_vae` reports reconstruction PSNR (decoding the posterior mean) and the statistics of the posterior-mean
latents; `report["scaling_factor"]` = 1 / latent std is what a flow model on `to_latent(mean, logvar)` should use
(`calibrated_config(cfg, report)` puts it into the config).

    params, report = train_vae(vae_cfg, images_train, images_eval, steps=800, batch_size=64, lr=1e-3, workdir=...)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from janus_jax import compile_options
from janus_jax.models.configs import KLVAEConfig
from janus_jax.models.kl_vae import AutoencoderKL, init_vae_params, kl_divergence
from janus_jax.train.autoencoder_loop import fit, psnr, to_model_range

RECON_LOSSES = ("mse", "l1")


def _check_loss_options(recon_loss: str, perceptual_weight: float, adversarial_weight: float) -> None:
  if recon_loss not in RECON_LOSSES:
    raise ValueError(f"recon_loss={recon_loss!r} is not supported; choose one of {list(RECON_LOSSES)}.")
  for name, w in (("perceptual_weight", perceptual_weight), ("adversarial_weight", adversarial_weight)):
    if w:
      raise NotImplementedError(
          f"{name}={w}: the VAE trainer implements only the pixel (MSE / L1) + KL loss; LPIPS and the patch "
          f"discriminator of the SD-VAE recipe are not implemented. Set {name}=0.")


@functools.lru_cache(maxsize=None)
def _step_fn(cfg: KLVAEConfig, lr: float, warmup: int, steps: int, kl_weight: float, recon_loss: str,
             sample_posterior: bool):
  model = AutoencoderKL(cfg)
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(steps, warmup + 1), lr * 0.1)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=0.0))

  def loss_fn(params, x, rng):
    recon, mean, logvar = model.apply({"params": params}, x, rng, sample_posterior)
    diff = recon.astype(jnp.float32) - x
    rec = jnp.mean(jnp.square(diff)) if recon_loss == "mse" else jnp.mean(jnp.abs(diff))
    kl = jnp.mean(kl_divergence(mean, logvar))
    total = rec + kl_weight * kl
    return total, {"loss": total, f"recon_{recon_loss}": rec, "kl": kl,
                   "posterior_std": jnp.mean(jnp.exp(0.5 * logvar))}

  @functools.partial(jax.jit, compiler_options=compile_options.train_compiler_options())
  def step(params, opt_state, x, rng):
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  @jax.jit
  def reconstruct(params, x):
    recon, mean, logvar = model.apply({"params": params}, x)
    return recon, mean, logvar

  return model, tx, step, reconstruct


def evaluate_vae(cfg: KLVAEConfig, params, images: np.ndarray, batch_size: int = 64) -> dict[str, Any]:
  """Reconstruction PSNR (dB, decoding the posterior mean) and latent statistics on uint8[N, H, W, 3] images.

  Returns:
    psnr; latent_mean / latent_std: mean and std of the posterior-mean latents over all elements;
    latent_channel_mean / latent_channel_std: the same per latent channel (lists); posterior_std: mean of
    exp(logvar / 2); latent_sample_std: std of posterior samples (sqrt(var(mean) + E[exp(logvar)]));
    kl: mean KL per latent element; scaling_factor = 1 / latent_std and shift_factor = latent_mean (the values
    that make `to_latent(mean, logvar)` zero-mean unit-variance; SDXL-VAE uses a scale only).
  """
  _, _, _, reconstruct = _step_fn(cfg, 0.0, 1, 2, 0.0, "mse", False)
  c = cfg.latent_channels
  s1, s2 = np.zeros(c), np.zeros(c)
  var_sum = kl_sum = std_sum = 0.0
  count = 0
  recons = []
  for i in range(0, len(images), batch_size):
    x = to_model_range(images[i:i + batch_size])
    r, mean, logvar = jax.device_get(reconstruct(params, jnp.asarray(x)))
    recons.append(np.asarray(r, np.float32))
    m = np.asarray(mean, np.float64).reshape(-1, c)
    lv = np.asarray(logvar, np.float64).reshape(-1, c)
    s1 += m.sum(0)
    s2 += np.square(m).sum(0)
    var_sum += float(np.exp(lv).sum())
    std_sum += float(np.exp(0.5 * lv).sum())
    kl_sum += float(0.5 * (np.square(m) + np.exp(lv) - 1.0 - lv).sum())
    count += m.shape[0]
  n = count * c
  ch_mean = s1 / count
  ch_std = np.sqrt(np.maximum(s2 / count - np.square(ch_mean), 0.0))
  mean = float(s1.sum() / n)
  var = float(max(s2.sum() / n - mean ** 2, 0.0))
  std = var ** 0.5
  return {"psnr": psnr(np.concatenate(recons), to_model_range(images)),
          "latent_mean": mean, "latent_std": std,
          "latent_channel_mean": [float(v) for v in ch_mean], "latent_channel_std": [float(v) for v in ch_std],
          "posterior_std": std_sum / n, "latent_sample_std": (var + var_sum / n) ** 0.5, "kl": kl_sum / n,
          "scaling_factor": 1.0 / std if std > 0 else float("inf"), "shift_factor": mean}


def calibrated_config(cfg: KLVAEConfig, report: dict[str, Any], shift: bool = False) -> KLVAEConfig:
  """`cfg` with scaling_factor (and, when `shift`, shift_factor) taken from an `evaluate_vae` report."""
  return dataclasses.replace(cfg, scaling_factor=float(report["scaling_factor"]),
                             shift_factor=float(report["shift_factor"]) if shift else cfg.shift_factor)


def _check_images(x: np.ndarray, cfg: KLVAEConfig, what: str) -> None:
  if x.ndim != 4 or x.shape[-1] != cfg.in_channels or x.dtype != np.uint8:
    raise ValueError(f"{what} expects uint8[N, H, W, {cfg.in_channels}] images, got {x.dtype}{x.shape}.")


def train_vae(cfg: KLVAEConfig, train_images: np.ndarray | Iterable[np.ndarray], eval_images: np.ndarray, *,
              steps: int, batch_size: int, lr: float = 1e-3, warmup: int = 50, seed: int = 0,
              kl_weight: float = 1e-6, recon_loss: str = "mse", sample_posterior: bool = True,
              perceptual_weight: float = 0.0, adversarial_weight: float = 0.0, workdir: str | None = None,
              log_every: int = 50, checkpoint_every: int = 0, quiet: bool = False) -> tuple[Any, dict[str, Any]]:
  """Trains a KL autoencoder from scratch; returns (params, report) with report = `evaluate_vae` on `eval_images`
  plus steps / train_seconds.

  Args:
    train_images: uint8[N, H, W, 3] (batches drawn by a seeded permutation per epoch) or an iterable of uint8
      batches (e.g. a dataset iterator; `batch_size` is then only used for evaluation).
    kl_weight: weight of the mean-per-element KL term; recon_loss: 'mse' or 'l1'.
    sample_posterior: decode a posterior sample during training (True, as SD VAEs) or the mean.
    perceptual_weight, adversarial_weight: must be 0 (not implemented; raises NotImplementedError otherwise).
  With a `workdir`, writes metrics (TensorBoard + metrics.jsonl) and orbax checkpoints, and resumes from the latest
  checkpoint found there.
  """
  _check_loss_options(recon_loss, perceptual_weight, adversarial_weight)
  _check_images(eval_images, cfg, "train_vae (eval_images)")
  _, tx, step_fn, _ = _step_fn(cfg, float(lr), int(warmup), int(steps), float(kl_weight), recon_loss,
                               bool(sample_posterior))
  noise_key = jax.random.PRNGKey(seed + 1)

  def step(params, opt_state, x, i):
    return step_fn(params, opt_state, x, jax.random.fold_in(noise_key, i))

  def evaluate(params):
    report = evaluate_vae(cfg, params, eval_images, batch_size=batch_size)
    return report, {"eval_psnr": report["psnr"], "eval_latent_std": report["latent_std"]}

  return fit("vae", init_vae_params(cfg, jax.random.PRNGKey(seed)), tx, step, train_images, steps=steps,
             batch_size=batch_size, seed=seed, workdir=workdir, checkpoint_every=checkpoint_every,
             log_every=log_every, shown={"rec": f"recon_{recon_loss}", "kl": "kl"},
             check_batch=lambda b: _check_images(b, cfg, "train_vae (training batch)"), evaluate=evaluate,
             quiet=quiet)


__all__ = ["train_vae", "evaluate_vae", "calibrated_config", "RECON_LOSSES"]
