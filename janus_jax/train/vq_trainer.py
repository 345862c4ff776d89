"""Training the VQ image tokenizer (the same `VQModel` Janus uses) on images, e.g. Shapes.

Loss = reconstruction MSE + codebook loss + commitment loss (β in `VQConfig.commit_beta`), computed on the
L2-normalised latents as the official quantizer does, optionally + an adversarial term (`adversarial_weight` > 0:
a PatchGAN discriminator trained with the hinge loss from step `adversarial_start` on, the generator term
-mean D(x_hat) with a fixed weight). LlamaGen's LPIPS perceptual term needs a pretrained VGG, which nothing here may
download, so it is not offered. Reports reconstruction PSNR and codebook usage on held-out images.

    params, report = train_vq(vq_cfg, images_train, images_eval, steps=800, batch_size=64, lr=2e-3, workdir=...)
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from janus_jax import compile_options
from janus_jax.models.configs import VQConfig
from janus_jax.models.patch_discriminator import PatchDiscriminator
from janus_jax.models.vq import VQModel, l2_normalize
from janus_jax.train.autoencoder_loop import fit, psnr, to_model_range


def _optimizer(lr: float, warmup: int, steps: int) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(steps, warmup + 1), lr * 0.1)
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=0.0))


def _vq_losses(model: VQModel, params, x):
  """(total loss, metrics, reconstruction) of the reconstruction + codebook + commitment objective."""
  recon, _, aux = model.apply({"params": params}, x)
  rec = jnp.mean(jnp.square(recon.astype(jnp.float32) - x))
  total = rec + aux["codebook_loss"] + aux["commit_loss"]
  return total, {"loss": total, "recon_mse": rec, "codebook_loss": aux["codebook_loss"],
                 "commit_loss": aux["commit_loss"], "batch_usage": aux["codebook_usage"]}, recon


def make_step(cfg: VQConfig, lr: float, warmup: int, steps: int):
  """(model, tx, step, reconstruct) of the plain objective: `step(params, opt_state, float32[B, H, W, 3]) ->
  (params, opt_state, metrics)` jitted with the platform's training options (`janus_jax.compile_options`, read
  now), `reconstruct(params, x) -> (recon, codes)`."""
  model = VQModel(cfg)
  tx = _optimizer(lr, warmup, steps)

  def loss_fn(params, x):
    total, metrics, _ = _vq_losses(model, params, x)
    return total, metrics

  @functools.partial(jax.jit, compiler_options=compile_options.train_compiler_options())
  def step(params, opt_state, x):
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  @jax.jit
  def reconstruct(params, x):
    recon, codes, _ = model.apply({"params": params}, x)
    return recon, codes

  return model, tx, step, reconstruct


_step_fn = functools.lru_cache(maxsize=None)(make_step)


@functools.lru_cache(maxsize=None)
def _adversarial_step_fn(cfg: VQConfig, lr: float, warmup: int, steps: int, weight: float, start: int):
  """(tx, step) over params {"model": VQ params, "disc": discriminator params}; each has its own AdamW (and
  clipping). Before step `start` neither the adversarial term nor the discriminator update is applied, so the VQ
  trains exactly as without the discriminator."""
  model, disc = VQModel(cfg), PatchDiscriminator()
  tx = optax.multi_transform({"model": _optimizer(lr, warmup, steps), "disc": _optimizer(lr, warmup, steps)},
                             {"model": "model", "disc": "disc"})

  def generator_loss(p, d, x, on):
    total, metrics, recon = _vq_losses(model, p, x)
    adv = -jnp.mean(disc.apply({"params": d}, recon))
    return total + on * weight * adv, (dict(metrics, loss=total + on * weight * adv, adv_loss=adv), recon)

  def discriminator_loss(d, x, recon):
    real, fake = disc.apply({"params": d}, x), disc.apply({"params": d}, recon)
    return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))

  @functools.partial(jax.jit, compiler_options=compile_options.train_compiler_options())
  def step(params, opt_state, x, i):
    on = (i >= start).astype(jnp.float32)
    (_, (metrics, recon)), g_model = jax.value_and_grad(generator_loss, has_aux=True)(
        params["model"], params["disc"], x, on)
    d_loss, g_disc = jax.value_and_grad(discriminator_loss)(params["disc"], x, jax.lax.stop_gradient(recon))
    grads = {"model": g_model, "disc": jax.tree.map(lambda g: g * on, g_disc)}
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, dict(metrics, disc_loss=d_loss)

  return tx, step


@functools.lru_cache(maxsize=None)
def _restart_fn(cfg: VQConfig):
  """(params, images float32[B, H, W, 3], key) -> (params, number restarted): every code no latent of the batch
  maps to is moved onto a random (normalised) encoder latent of the batch — dead-code restart, the standard cure
  for codebook collapse (a few of the K codes doing all the work)."""
  model = VQModel(cfg)

  @jax.jit
  def restart(params, x, key):
    z = model.apply({"params": params}, x, method=VQModel.encode_features)
    _, codes, _ = model.apply({"params": params}, x, method=VQModel.encode)
    z = z.reshape(-1, z.shape[-1])
    if cfg.codebook_l2_norm:
      z = l2_normalize(z)
    dead = jnp.bincount(codes.reshape(-1), length=cfg.codebook_size) == 0
    new = z[jax.random.randint(key, (cfg.codebook_size,), 0, z.shape[0])]
    emb = params["quantize"]["embedding"]["embedding"]
    emb = jnp.where(dead[:, None], new.astype(emb.dtype), emb)
    params = {**params, "quantize": {**params["quantize"], "embedding": {"embedding": emb}}}
    return params, jnp.sum(dead)

  return restart


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
             checkpoint_every: int = 0, restart_every: int = 0, restart_until: float = 0.75,
             adversarial_weight: float = 0.0, adversarial_start: int = 0,
             quiet: bool = False) -> tuple[Any, dict[str, Any]]:
  """Trains a VQ tokenizer from scratch on uint8[N, H, W, 3] images; returns (params, report).

  restart_every: every that many steps (0: never), up to `restart_until` x steps, codes unused by the current
    batch are restarted on random encoder latents of it (before the update; deterministic, so resume stays exact).
  adversarial_weight / adversarial_start: the optional PatchGAN term (0: off); the discriminator's params and
    optimizer state are checkpointed with the VQ's, so resume stays exact.

  With a `workdir`, writes metrics (TensorBoard + metrics.jsonl) and orbax checkpoints, and resumes from the latest
  checkpoint found there. Batches are drawn by a seeded permutation per epoch, so a resumed run sees the same
  images as an uninterrupted one.
  """
  if train_images.ndim != 4 or train_images.shape[-1] != 3 or train_images.dtype != np.uint8:
    raise ValueError(f"train_vq expects uint8[N, H, W, 3] images, got {train_images.dtype}{train_images.shape}.")
  if adversarial_weight < 0 or adversarial_start < 0:
    raise ValueError(f"adversarial_weight ({adversarial_weight}) and adversarial_start ({adversarial_start}) must "
                     "be >= 0.")
  model, tx, plain_step, _ = _step_fn(cfg, float(lr), int(warmup), int(steps))
  x0 = jnp.asarray(to_model_range(train_images[:1]))
  params = nn.unbox(model.init(jax.random.PRNGKey(seed), x0)["params"])
  adversarial = adversarial_weight > 0
  if adversarial:
    tx, adv_step = _adversarial_step_fn(cfg, float(lr), int(warmup), int(steps), float(adversarial_weight),
                                        int(adversarial_start))
    disc = nn.unbox(PatchDiscriminator().init(jax.random.PRNGKey(seed + 2), x0)["params"])
    params = {"model": params, "disc": disc}
  vq_params = (lambda p: p["model"]) if adversarial else (lambda p: p)

  def evaluate(p):
    report = evaluate_vq(cfg, vq_params(p), eval_images)
    return report, {"eval_psnr": report["psnr"], "eval_codebook_usage": report["codebook_usage"]}

  restart, restart_key = _restart_fn(cfg), jax.random.PRNGKey(seed + 1)

  def update(p, o, x, i):
    if restart_every and i % restart_every == 0 and i < restart_until * steps:
      restarted, _ = restart(vq_params(p), x, jax.random.fold_in(restart_key, i))
      p = dict(p, model=restarted) if adversarial else restarted
    return adv_step(p, o, x, jnp.int32(i)) if adversarial else plain_step(p, o, x)

  params, report = fit("vq", params, tx, update, train_images, steps=steps,
                       batch_size=batch_size, seed=seed, workdir=workdir, checkpoint_every=checkpoint_every,
                       log_every=log_every, shown={"mse": "recon_mse", "usage": "batch_usage"}, evaluate=evaluate,
                       quiet=quiet)
  return vq_params(params), report
