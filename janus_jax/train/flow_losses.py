"""JanusFlow training objectives (janus_models.md 5.3): rectified flow + REPA on t2i rows, text CE elsewhere.

For a text-to-image row (same layout as Janus: `... <|Assistant|>:<begin_of_image>` + N latent positions):
    x   = VAE latent of the target image (scaled, frozen VAE)          float[B, h, w, C]
    t   ~ logit-normal(loc, scale), z0 ~ N(0, I)
    z_t = t * x + (1 - t) * z0,  target velocity x - z0
    LLM input: the `<begin_of_image>` position carries the time embedding t_emb, the N gen positions the
    encoder's latent tokens; the velocity is read at the SAME N positions (no next-token shift).
    L_RF   = mean over the latent of (v - (x - z0))^2
    L_REPA = -mean over the N tokens of cos(h_phi(hidden after block k), stop_grad(SigLIP(image)))
Loss = text CE sum / text tokens + rf_weight * L_RF + repa_weight * L_REPA (RF and REPA averaged over the t2i
rows), every normaliser taken over the GLOBAL batch, so gradient accumulation equals the full batch.

Config `config.train.flow` (all optional): t_location (0.0), t_scale (1.0) of the logit-normal; rf_weight (1.0);
repa_weight (1.0; 0 disables REPA and skips its forward); sample_posterior (False: use the VAE posterior mean).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from janus_jax.configs.common import reject_unknown_keys
from janus_jax.models.backbone import scatter_image_features
from janus_jax.models.llama import causal_mask
from janus_jax.train import losses

FLOW_DEFAULTS = dict(t_location=0.0, t_scale=1.0, rf_weight=1.0, repa_weight=1.0, sample_posterior=False)


def resolve_flow_config(flow_cfg: Mapping[str, Any] | Any | None) -> dict[str, Any]:
  """`config.train.flow` over FLOW_DEFAULTS; unknown keys raise naming the valid ones."""
  cfg = dict(flow_cfg.to_dict() if hasattr(flow_cfg, "to_dict") else (flow_cfg or {}))
  reject_unknown_keys(cfg, FLOW_DEFAULTS, "train.flow")
  out = {**FLOW_DEFAULTS, **cfg}
  if float(out["t_scale"]) <= 0:
    raise ValueError(f"train.flow.t_scale must be > 0, got {out['t_scale']}.")
  return out


class FlowSums(NamedTuple):
  """Additive statistics (float32 scalars) of one (micro)batch."""
  text_loss: jax.Array
  text_tokens: jax.Array
  text_correct: jax.Array
  rf_loss: jax.Array      # sum over t2i rows of the row's mean squared velocity error
  repa_loss: jax.Array    # sum over t2i rows of the row's negative mean cosine similarity
  gen_rows: jax.Array
  dropped: jax.Array

  @classmethod
  def zeros(cls) -> "FlowSums":
    return cls(*([jnp.zeros((), jnp.float32)] * len(cls._fields)))


def sample_logit_normal(rng: jax.Array, shape, loc: float = 0.0, scale: float = 1.0) -> jax.Array:
  """t = sigmoid(loc + scale * N(0, 1)), float32 in (0, 1) (SD3's logit-normal timestep density)."""
  return jax.nn.sigmoid(loc + scale * jax.random.normal(rng, shape, jnp.float32))


def gather_in_order(x: jax.Array, mask: jax.Array, n: int) -> jax.Array:
  """float[B, T, D] -> float[B, n, D]: each row's first n positions where mask is True, in order."""
  idx, _, _ = losses.gather_positions(mask, n)
  return jnp.take_along_axis(x, idx[..., None], axis=1)


def time_token_mask(gen_mask: jax.Array) -> jax.Array:
  """bool[B, T]: the position right before each row's generated block (`<begin_of_image>`), which carries t_emb."""
  nxt = jnp.concatenate([gen_mask[:, 1:], jnp.zeros_like(gen_mask[:, :1])], axis=1)
  return nxt & ~gen_mask


def interpolate(x: jax.Array, z0: jax.Array, t: jax.Array) -> jax.Array:
  """z_t = t * x + (1 - t) * z0 with t float[B] broadcast over the latent."""
  t = t.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
  return t * x + (1.0 - t) * z0


def _resize(images: jax.Array, size: int) -> jax.Array:
  if images.shape[1] == size and images.shape[2] == size:
    return images
  return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "bicubic")


def flow_loss_sums(module, batch: dict, rng: jax.Array, flow_cfg: Mapping[str, Any],
                   max_text_tokens: int | None = None) -> FlowSums:
  """Forward + all JanusFlow objectives as additive sums (call via `model.apply(..., method=flow_loss_sums)`).

  `batch` is the standard training batch (`janus_jax/train/batch.py`) with `gen_pixels` / `has_gen_image`; a
  batch without `gen_pixels` (a mixture without text-to-image rows) has the text loss alone (rf, repa, rows 0).
  """
  cfg = module.cfg
  n = cfg.num_image_tokens
  rng_t, rng_z, rng_post = jax.random.split(rng, 3)
  ids, gen_mask = batch["input_ids"], batch["gen_image_mask"]
  has_gen = "gen_pixels" in batch
  b = ids.shape[0]

  embeds = module.embed_multimodal(ids, batch["und_image_mask"], batch["und_pixels"])
  if has_gen:
    x = jax.lax.stop_gradient(module.encode_latents(batch["gen_pixels"],
                                                    rng_post if flow_cfg["sample_posterior"] else None))
    t = sample_logit_normal(rng_t, (b,), float(flow_cfg["t_location"]), float(flow_cfg["t_scale"]))
    z0 = jax.random.normal(rng_z, x.shape, jnp.float32)
    tokens, t_emb, skip = module.gen_inputs(interpolate(x, z0, t), t)
    embeds = scatter_image_features(embeds, gen_mask, tokens)
    embeds = jnp.where(time_token_mask(gen_mask)[..., None], t_emb[:, None].astype(embeds.dtype), embeds)
  mask = causal_mask(batch["valid"], ids.shape[1])
  if "segment_ids" in batch:
    seg = batch["segment_ids"]
    mask = mask & (seg[:, :, None] == seg[:, None, :])
  use_repa = has_gen and float(flow_cfg["repa_weight"]) != 0.0
  out = module.llm(embeds, batch["positions"], mask, capture_layer=cfg.repa.layer if use_repa else None)
  hidden = out[0]

  rows = batch.get("has_gen_image", gen_mask.any(axis=1)).astype(jnp.float32)
  rf = repa = jnp.zeros((), jnp.float32)
  if has_gen:
    v = module.velocity(gather_in_order(hidden, gen_mask, n), skip, t_emb)
    per_row_mse = jnp.mean(jnp.square(v - (x - z0).astype(jnp.float32)), axis=tuple(range(1, v.ndim)))
    rf = jnp.sum(per_row_mse * rows)
  if use_repa:
    target = module.vision_features(_resize(batch["gen_pixels"], cfg.vision.image_size))
    target = jax.lax.stop_gradient(target.astype(jnp.float32))
    pred = module.repa_features(gather_in_order(out[2], gen_mask, n))
    cos = jnp.sum(_unit(pred) * _unit(target), axis=-1)  # [B, N]
    repa = jnp.sum(-jnp.mean(cos, axis=1) * rows)

  t_loss, t_ok, t_n, t_drop = losses.head_xent(hidden, batch["targets"], batch["text_loss_mask"],
                                               module.text_logits, max_text_tokens)
  return FlowSums(t_loss, t_n, t_ok, rf, repa, jnp.sum(rows), t_drop)


def _unit(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), 1e-12))


def total_flow_loss(sums: FlowSums, text_tokens: jax.Array, gen_rows: jax.Array,
                    flow_cfg: Mapping[str, Any]) -> jax.Array:
  """text CE / text_tokens + rf_weight * RF / gen_rows + repa_weight * REPA / gen_rows (global normalisers)."""
  safe = lambda x: jnp.maximum(x, 1.0)
  return (sums.text_loss / safe(text_tokens) + float(flow_cfg["rf_weight"]) * sums.rf_loss / safe(gen_rows)
          + float(flow_cfg["repa_weight"]) * sums.repa_loss / safe(gen_rows))


def flow_metrics(sums: FlowSums, flow_cfg: Mapping[str, Any]) -> dict[str, jax.Array]:
  safe = lambda x: jnp.maximum(x, 1.0)
  return {
      "loss": total_flow_loss(sums, sums.text_tokens, sums.gen_rows, flow_cfg),
      "loss_text": sums.text_loss / safe(sums.text_tokens),
      "accuracy_text": sums.text_correct / safe(sums.text_tokens),
      "loss_rf": sums.rf_loss / safe(sums.gen_rows),
      "loss_repa": sums.repa_loss / safe(sums.gen_rows),
      "tokens_text": sums.text_tokens,
      "gen_rows": sums.gen_rows,
      "tokens_dropped": sums.dropped,
  }


__all__ = ["FLOW_DEFAULTS", "resolve_flow_config", "FlowSums", "sample_logit_normal", "gather_in_order",
           "time_token_mask", "interpolate", "flow_loss_sums", "total_flow_loss", "flow_metrics"]
