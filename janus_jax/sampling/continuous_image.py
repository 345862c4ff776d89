"""Generation mode `ar_continuous`: one compiled program samples continuous image tokens autoregressively.

The outer loop walks the N tokens with the LLM's KV cache; inside it the flow head integrates its velocity ODE
from noise (t = 0) to the token (t = 1) with `num_steps` Euler steps. Classifier-free guidance acts on the head's
velocity: the conditional and unconditional prompt rows (as in the other modes) give two conditions, the head runs
on both with the same x_t, and v = v_uncond + w (v_cond - v_uncond). The initial noise is scaled by `temperature`.
The sampled token is fed back through `gen_in` to both rows.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from janus_jax.models.janus_continuous import JanusContinuousModel, token_dim
from janus_jax.models.llama import KVCache, causal_mask, positions_from_mask
from janus_jax.processing import image as image_proc
from janus_jax.sampling import previews, progress
from janus_jax.sampling.ar_image import block_mask, partial_images
from janus_jax.sampling.sample import cfg_combine


def euler_token(velocity, cond: jax.Array, noise: jax.Array, cfg_weight, num_steps: int) -> jax.Array:
  """Integrates one token's ODE with CFG: velocity(x [2M, P], t [2M], cond [2M, W]) -> [2M, P]; cond stacks the
  conditional rows over the unconditional ones; noise float[M, P] (x at t = 0). Returns x at t = 1, float32[M, P]."""
  m = noise.shape[0]
  dt = 1.0 / num_steps

  def step(k, x):
    t = jnp.full((2 * m,), k * dt, jnp.float32)
    v = velocity(jnp.concatenate([x, x]), t, cond)
    return x + dt * cfg_combine(v[:m], v[m:], cfg_weight)

  return jax.lax.fori_loop(0, num_steps, step, noise.astype(jnp.float32))


def decode_to_uint8(model: JanusContinuousModel, params, tokens: jax.Array, count=None) -> jax.Array:
  """tokens float[B, N, P] -> uint8[B, H, W, 3] (VAE decode, the mode's uint8 rule); with `count`, the pixel
  blocks of tokens >= count (not sampled yet) are neutral grey."""
  cfg = model.cfg
  if count is not None:
    tokens = jnp.where((jnp.arange(tokens.shape[1]) < count)[None, :, None], tokens, 0.0)
  images = model.apply({"params": params}, tokens, method=JanusContinuousModel.decode_tokens)
  if count is None:
    return image_proc.to_uint8(images, cfg.mode.pixel_rounding, xp=jnp)
  mask = block_mask(cfg, count, cfg.cont.patch_size * cfg.vae.downsample)
  return partial_images(images, mask, cfg.mode.pixel_rounding)


@functools.lru_cache(maxsize=None)
def compiled_continuous_generate(model: JanusContinuousModel, *, num_steps: int, progress_every: int = 0,
                                 preview_every: int = 0):
  """Jitted `generate(params, ids, valid, rng, cfg_weight, temperature) -> float32[P, N, token_dim]` tokens.

  ids int32[2P, T] / valid bool[2P, T]: prompt rows ending in `<begin_of_image>`, conditional rows first, then their
  unconditional twins (left padded); cfg_weight, temperature: float scalars (traced: changing them does not
  recompile). Cached per (model, num_steps, progress_every, preview_every): same shapes reuse one executable.
  `preview_every=k > 0` sends every k tokens before the last the partial latent grid decoded (tokens not sampled yet
  neutral grey) to `previews.previewing`.
  """
  cfg = model.cfg
  n, dim = cfg.num_image_tokens, token_dim(cfg)
  M = JanusContinuousModel

  def run(params, ids, valid, rng, cfg_weight, temperature):
    apply = lambda method, *a: model.apply({"params": params}, *a, method=method)  # pylint: disable=unnecessary-lambda-assignment
    velocity = lambda x, t, c: apply(M.velocity, x, t, c)  # pylint: disable=unnecessary-lambda-assignment
    rows, t = ids.shape
    p = rows // 2
    cache = KVCache.zeros(cfg.llm, rows, t + n)
    key_valid = jnp.concatenate([valid, jnp.ones((rows, n), bool)], axis=1)
    positions = positions_from_mask(valid)
    next_position = positions[:, -1] + 1
    embeds = apply(M.embed_text, ids)
    embeds = embeds.at[:, -1].add(apply(M.boi_embedding)[0].astype(embeds.dtype))  # the `<begin_of_image>` slot
    hidden, cache = apply(M.llm, embeds, positions, causal_mask(key_valid, t, 0), cache, jnp.int32(0))

    def sample(last_hidden, i):
      cond = apply(M.head_condition, last_hidden)
      noise = temperature * jax.random.normal(jax.random.fold_in(rng, i), (p, dim), jnp.float32)
      return euler_token(velocity, cond, noise, cfg_weight, num_steps)

    tokens = jnp.zeros((p, n, dim), jnp.float32).at[:, 0].set(sample(hidden[:, -1], 0))
    previews.maybe_emit(1, preview_every, lambda: decode_to_uint8(model, params, tokens, 1), n)

    def step(i, carry):
      tokens, cache = carry
      prev = jax.lax.dynamic_slice_in_dim(tokens, i - 1, 1, axis=1)
      emb = apply(M.embed_tokens, jnp.concatenate([prev, prev]))
      slot = t + i - 1
      hidden, cache = apply(M.llm, emb, (next_position + i - 1)[:, None], causal_mask(key_valid, 1, slot), cache,
                            slot)
      tok = sample(hidden[:, 0], i)
      progress.maybe_tick(i + 1, progress_every)
      tokens = jax.lax.dynamic_update_slice_in_dim(tokens, tok[:, None], i, axis=1)
      previews.maybe_emit(i + 1, preview_every, lambda: decode_to_uint8(model, params, tokens, i + 1), n)
      return tokens, cache

    tokens, _ = jax.lax.fori_loop(1, n, step, (tokens, cache))
    return tokens

  return jax.jit(run)


@functools.lru_cache(maxsize=None)
def compiled_decode_tokens(model: JanusContinuousModel):
  """Jitted `decode(params, tokens float[B, N, P]) -> uint8[B, H, W, 3]` (VAE decode, the mode's uint8 rule)."""

  def run(params, tokens):
    return decode_to_uint8(model, params, tokens)

  return jax.jit(run)


__all__ = ["euler_token", "decode_to_uint8", "compiled_continuous_generate", "compiled_decode_tokens"]
