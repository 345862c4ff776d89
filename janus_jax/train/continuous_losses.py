"""The `ar_continuous` objective: text CE + a per-token rectified-flow loss through the flow head.

For a text-to-image row (the Janus layout: `... <begin_of_image>` + N generated positions):
    x_k   = token k of the target image (a scaled KL-VAE latent patch, frozen VAE)        float[B, N, P]
    LLM input at generated position k: gen_in(x_k); at `<begin_of_image>`: its embedding + gen_boi
    c_k   = gen_out(hidden at the position before token k)   (teacher forcing: next-token prediction)
    per token, `t_samples` draws of t ~ logit-normal(loc, scale), z0 ~ N(0, I), x_t = t x_k + (1 - t) z0:
    L_RF  = mean over tokens, draws and the token's P values of (head(x_t, t, c_k) - (x_k - z0))^2
The LLM gets the gradient of L_RF through the head's condition c_k. Loss = text CE sum / text tokens + rf_weight *
L_RF sum / generated tokens, each normaliser over the GLOBAL batch (gradient accumulation equals the full batch).

Config `config.train.continuous` (all optional): t_location (0.0), t_scale (1.0), rf_weight (1.0), t_samples (4:
draws of t per token per step; the head is small, so several draws cost little and lower the gradient noise),
sample_posterior (False: the VAE posterior mean).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from janus_jax.configs.common import reject_unknown_keys
from janus_jax.models.backbone import scatter_image_features
from janus_jax.models.llama import causal_mask
from janus_jax.train import losses
from janus_jax.train.flow_losses import gather_in_order, sample_logit_normal, time_token_mask

CONTINUOUS_DEFAULTS = dict(t_location=0.0, t_scale=1.0, rf_weight=1.0, t_samples=4, sample_posterior=False)


def resolve_continuous_config(cont_cfg: Mapping[str, Any] | Any | None) -> dict[str, Any]:
  """`config.train.continuous` over CONTINUOUS_DEFAULTS; unknown keys raise naming the valid ones."""
  cfg = dict(cont_cfg.to_dict() if hasattr(cont_cfg, "to_dict") else (cont_cfg or {}))
  reject_unknown_keys(cfg, CONTINUOUS_DEFAULTS, "train.continuous")
  out = {**CONTINUOUS_DEFAULTS, **cfg}
  if float(out["t_scale"]) <= 0:
    raise ValueError(f"train.continuous.t_scale must be > 0, got {out['t_scale']}.")
  if int(out["t_samples"]) < 1:
    raise ValueError(f"train.continuous.t_samples must be >= 1, got {out['t_samples']}.")
  return out


class ContinuousSums(NamedTuple):
  """Additive statistics (float32 scalars) of one (micro)batch."""
  text_loss: jax.Array
  text_tokens: jax.Array
  text_correct: jax.Array
  rf_loss: jax.Array     # sum over generated tokens of the token's mean squared velocity error (over draws, P)
  gen_tokens: jax.Array  # generated tokens of the rows with an image
  dropped: jax.Array

  @classmethod
  def zeros(cls) -> "ContinuousSums":
    return cls(*([jnp.zeros((), jnp.float32)] * len(cls._fields)))


def predictor_mask(gen_mask: jax.Array) -> jax.Array:
  """bool[B, T]: positions whose next position is a generated token (`<begin_of_image>` .. token N-2): their
  hidden states condition the head for that next token."""
  return jnp.concatenate([gen_mask[:, 1:], jnp.zeros_like(gen_mask[:, :1])], axis=1)


def generated_token_count(batch: Mapping[str, jax.Array]) -> jax.Array:
  """float32: the generated tokens of the rows that have an image (the normaliser of L_RF)."""
  gen = batch["gen_image_mask"]
  rows = batch.get("has_gen_image", gen.any(axis=1))
  return jnp.sum(gen & rows[:, None]).astype(jnp.float32)


def continuous_loss_sums(module, batch: dict, rng: jax.Array, c: Mapping[str, Any],
                         max_text_tokens: int | None = None) -> ContinuousSums:
  """Forward + the objectives as additive sums (call via `model.apply(..., method=continuous_loss_sums)`).

  A batch without `gen_pixels` (a mixture without text-to-image rows) has the text loss alone."""
  cfg = module.cfg
  n = cfg.num_image_tokens
  rng_t, rng_z, rng_post = jax.random.split(rng, 3)
  ids, gen_mask = batch["input_ids"], batch["gen_image_mask"]
  has_gen = "gen_pixels" in batch
  embeds = module.embed_multimodal(ids, batch["und_image_mask"], batch["und_pixels"])
  if has_gen:
    x = jax.lax.stop_gradient(module.encode_tokens(batch["gen_pixels"],
                                                   rng_post if c["sample_posterior"] else None))  # [B, N, P]
    embeds = scatter_image_features(embeds, gen_mask, module.embed_tokens(x))
    boi = time_token_mask(gen_mask)[..., None]
    embeds = embeds + jnp.where(boi, module.boi_embedding()[None].astype(embeds.dtype), 0.0)
  mask = causal_mask(batch["valid"], ids.shape[1])
  if "segment_ids" in batch:
    seg = batch["segment_ids"]
    mask = mask & (seg[:, :, None] == seg[:, None, :])
  hidden, _ = module.llm(embeds, batch["positions"], mask)

  rf = gen_tokens = jnp.zeros((), jnp.float32)
  if has_gen:
    rows = batch.get("has_gen_image", gen_mask.any(axis=1))
    cond = module.head_condition(gather_in_order(hidden, predictor_mask(gen_mask), n))  # [B, N, W]
    k, (b, _, p) = int(c["t_samples"]), x.shape
    t = sample_logit_normal(rng_t, (k, b, n), float(c["t_location"]), float(c["t_scale"]))
    z0 = jax.random.normal(rng_z, (k, b, n, p), jnp.float32)
    x_t = t[..., None] * x[None] + (1.0 - t[..., None]) * z0
    cond_k = jnp.broadcast_to(cond[None], (k,) + cond.shape)
    v = module.velocity(x_t.reshape(-1, p), t.reshape(-1), cond_k.reshape(-1, cond.shape[-1])).reshape(x_t.shape)
    err = jnp.mean(jnp.square(v - (x[None] - z0)), axis=(0, 3))  # [B, N]: mean over draws and the token's values
    weight = rows[:, None].astype(jnp.float32) * jnp.ones((1, n), jnp.float32)
    rf, gen_tokens = jnp.sum(err * weight), jnp.sum(weight)
  t_loss, t_ok, t_n, t_drop = losses.head_xent(hidden, batch["targets"], batch["text_loss_mask"],
                                               module.text_logits, max_text_tokens)
  return ContinuousSums(t_loss, t_n, t_ok, rf, gen_tokens, t_drop)


def total_continuous_loss(sums: ContinuousSums, text_tokens: jax.Array, gen_tokens: jax.Array,
                          c: Mapping[str, Any]) -> jax.Array:
  """text CE / text_tokens + rf_weight * RF / gen_tokens (global normalisers)."""
  safe = lambda x: jnp.maximum(x, 1.0)  # pylint: disable=unnecessary-lambda-assignment
  return sums.text_loss / safe(text_tokens) + float(c["rf_weight"]) * sums.rf_loss / safe(gen_tokens)


def continuous_metrics(sums: ContinuousSums, c: Mapping[str, Any]) -> dict[str, jax.Array]:
  safe = lambda x: jnp.maximum(x, 1.0)  # pylint: disable=unnecessary-lambda-assignment
  return {
      "loss": total_continuous_loss(sums, sums.text_tokens, sums.gen_tokens, c),
      "loss_text": sums.text_loss / safe(sums.text_tokens),
      "accuracy_text": sums.text_correct / safe(sums.text_tokens),
      "loss_rf": sums.rf_loss / safe(sums.gen_tokens),
      "tokens_text": sums.text_tokens,
      "gen_tokens": sums.gen_tokens,
      "tokens_dropped": sums.dropped,
  }


__all__ = ["CONTINUOUS_DEFAULTS", "resolve_continuous_config", "ContinuousSums", "predictor_mask",
           "generated_token_count", "continuous_loss_sums", "total_continuous_loss", "continuous_metrics"]
