"""Text-to-image sampling for JanusFlow (rectified-flow ODE with classifier-free guidance), compiled.

The official loop (janus_models.md 3.3): the prompt without its last tag, then the time-embedding token and the N
latent tokens; unconditional rows keep only BOS of the prompt (pads masked out, positions unchanged); velocity
read at the latent positions; `v = w * v_cond - (w - 1) * v_uncond` (here `sample.cfg_combine`, equal up to
rounding); explicit Euler from t = 0 (noise) to 1.

Here one jitted function runs the whole ODE (`lax.fori_loop`). With `prompt_cache=True` (default) the prompt's
KV cache is computed ONCE and every step feeds only the 1 + N new embeddings at offset P - 1 (exact: under causal
attention the prompt never sees them); `prompt_cache=False` recomputes the whole sequence each step as the
official code does (for parity tests and the benchmark). Solvers: `euler` (official) and `heun` (2nd order, two
model evaluations per step). A time-shift `s` warps the grid t_k = s*u / (1 + (s-1)*u), u = k/N (s = 1: uniform).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from janus_jax.models.janus_flow import JanusFlowModel
from janus_jax.models.llama import KVCache, causal_mask, positions_from_mask
from janus_jax.processing import image as image_proc
from janus_jax.sampling import previews, progress
from janus_jax.sampling.sample import cfg_combine

SOLVERS = ("euler", "heun")


def time_grid(num_steps: int, shift: float = 1.0) -> np.ndarray:
  """float32[num_steps + 1] ODE times from 0 to 1: t_k = s*u / (1 + (s - 1)*u) with u = k / num_steps."""
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
  if shift <= 0:
    raise ValueError(f"time shift must be > 0, got {shift}.")
  u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
  return (shift * u / (1.0 + (shift - 1.0) * u)).astype(np.float32)


def unconditional_rows(ids: jax.Array, valid: jax.Array, pad_id: int) -> tuple[jax.Array, jax.Array]:
  """The official unconditional twins of left-padded prompt rows: BOS kept, every later prompt token replaced by
  `pad_id` and masked out (positions are taken from the conditional rows, so they stay unchanged)."""
  first = jnp.cumsum(valid.astype(jnp.int32), axis=1) == 1
  bos = first & valid
  return jnp.where(bos, ids, pad_id), bos


def compiled_flow_generate(model: JanusFlowModel, *, num_steps: int = 30, solver: str = "euler",
                           shift: float = 1.0, prompt_cache: bool = True, progress_every: int = 0,
                           preview_every: int = 0):
  """Returns jitted `generate(params, ids, valid, z0, cfg_weight, pad_id) -> float32[P, h, w, C]` latents.

  Args of the returned function:
    ids: int32[P, T] prompt rows (left padded) that END with the generation tag (`<begin_of_image>`), whose slot
      the time embedding takes; valid: bool[P, T].
    z0: float32[P, h, w, C] initial noise (scaled latent space); cfg_weight: float scalar (traced).
    pad_id: int32 scalar, the id of the unconditional rows' pads (masked out anyway).
  Cached per (model, num_steps, solver, shift, prompt_cache, progress_every, preview_every). `preview_every=k > 0`
  sends every k steps before the last the decoded clean-image estimate x̂ = z_t + (1 - t) v to
  `previews.previewing`.
  """
  if solver not in SOLVERS:
    raise ValueError(f"Unknown solver {solver!r}; valid: {SOLVERS}.")
  return _compiled(model, int(num_steps), solver, float(shift), bool(prompt_cache), int(progress_every),
                   int(preview_every))


def decode_to_uint8(model: JanusFlowModel, params, z: jax.Array) -> jax.Array:
  """Scaled latents float[B, h, w, C] -> uint8[B, H, W, 3] (VAE decode, the mode's uint8 rule)."""
  images = model.apply({"params": params}, z, method=JanusFlowModel.decode_latents)
  return image_proc.to_uint8(images, model.cfg.mode.pixel_rounding, xp=jnp)


@functools.lru_cache(maxsize=None)
def _compiled(model: JanusFlowModel, num_steps: int, solver: str, shift: float, prompt_cache: bool,
              progress_every: int, preview_every: int = 0):
  cfg = model.cfg
  n = cfg.num_image_tokens
  grid = jnp.asarray(time_grid(num_steps, shift))

  def run(params, ids, valid, z0, cfg_weight, pad_id):
    apply = lambda method, *a, **k: model.apply({"params": params}, *a, method=method, **k)
    p, t = ids.shape
    un_ids, un_valid = unconditional_rows(ids, valid, pad_id)
    ids2 = jnp.concatenate([ids, un_ids])[:, :t - 1]          # the last tag is replaced by t_emb
    valid2 = jnp.concatenate([valid, un_valid])[:, :t - 1]
    pos = positions_from_mask(valid)
    prompt_pos = jnp.concatenate([pos, pos])[:, :t - 1]
    gen_pos = jnp.concatenate([pos, pos])[:, t - 1:t] + jnp.arange(n + 1)[None]  # t_emb at the tag's position
    key_valid = jnp.concatenate([valid2, jnp.ones((2 * p, n + 1), bool)], axis=1)
    prompt_emb = apply(JanusFlowModel.embed_text, ids2)

    cache = None
    if prompt_cache:
      cache = KVCache.zeros(cfg.llm, 2 * p, t + n)
      _, cache = apply(JanusFlowModel.llm, prompt_emb, prompt_pos, causal_mask(key_valid, t - 1, 0), cache,
                       jnp.int32(0))
      gen_mask = causal_mask(key_valid, n + 1, t - 1)

    def velocity(z, time, cache):
      """Guided velocity at (z, time); the cache's slots t-1.. are overwritten in place (prompt slots kept)."""
      z2 = jnp.concatenate([z, z])
      tokens, t_emb, skip = apply(JanusFlowModel.gen_inputs, z2, jnp.full((2 * p,), time, jnp.float32))
      gen_emb = jnp.concatenate([t_emb[:, None].astype(tokens.dtype), tokens], axis=1)
      if prompt_cache:
        hidden, cache = apply(JanusFlowModel.llm, gen_emb, gen_pos, gen_mask, cache, jnp.int32(t - 1))
      else:
        emb = jnp.concatenate([prompt_emb.astype(gen_emb.dtype), gen_emb], axis=1)
        hidden, _ = apply(JanusFlowModel.llm, emb, jnp.concatenate([prompt_pos, gen_pos], axis=1),
                          causal_mask(key_valid, t + n, 0))
      v = apply(JanusFlowModel.velocity, hidden[:, -n:], skip, t_emb)
      return cfg_combine(v[:p], v[p:], cfg_weight), cache

    def step(k, carry):
      z, cache = carry
      t0, t1 = grid[k], grid[k + 1]
      v, cache = velocity(z, t0, cache)
      if solver == "heun":
        v2, cache = velocity(z + (t1 - t0) * v, t1, cache)
        v = 0.5 * (v + v2)
      progress.maybe_tick(k + 1, progress_every)
      z_next = z + (t1 - t0) * v
      previews.maybe_emit(k + 1, preview_every, lambda: decode_to_uint8(model, params, z_next + (1.0 - t1) * v),
                          num_steps)
      return z_next, cache

    z, _ = jax.lax.fori_loop(0, num_steps, step, (z0.astype(jnp.float32), cache))
    return z

  return jax.jit(run)


@functools.lru_cache(maxsize=None)
def compiled_decode_latents(model: JanusFlowModel):
  """Jitted `decode(params, z float[B, h, w, C]) -> uint8[B, H, W, 3]` (VAE decode, clip to [-1, 1], to uint8 by
  the mode's `pixel_rounding`)."""

  def run(params, z):
    return decode_to_uint8(model, params, z)

  return jax.jit(run)


def latent_shape(cfg, batch: int) -> tuple[int, int, int, int]:
  """(batch, h, w, C) of the scaled latents the flow model generates."""
  return (batch, cfg.latent_size, cfg.latent_size, cfg.uvit.latent_channels)
