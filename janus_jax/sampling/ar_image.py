"""Text-to-image sampling for Janus / Janus-Pro (AR over VQ tokens with classifier-free guidance), compiled.

One jitted function runs the whole loop: the prompt prefill writes a preallocated KV cache, then a
`lax.fori_loop` produces the image tokens one by one, the same token being fed to the conditional and the
unconditional row. Rows are laid out blocked: [cond_0 .. cond_{P-1}, uncond_0 .. uncond_{P-1}].
Official loop (janus_models.md 3.1): guidance on logits before temperature, weight 5, temperature 1, full softmax.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from janus_jax import compile_options, quantization
from janus_jax.models.janus import JanusModel
from janus_jax.models.llama import KVCache, causal_mask, positions_from_mask
from janus_jax.processing import image as image_proc
from janus_jax.sampling import previews, progress
from janus_jax.sampling.sample import cfg_combine, sample_next

PHASES = 4  # Default number of KV-cache growth phases in the image loop (see `compiled_generate`).


def cache_phases(n_tokens: int, phases: int) -> list[int]:
  """Step boundaries [0, e_1, ..., n_tokens] of the cache-growth phases (equal thirds etc.)."""
  phases = max(1, min(phases, n_tokens))
  return [round(n_tokens * k / phases) for k in range(phases + 1)]


def compiled_generate(model: JanusModel, *, greedy: bool, top_k: int = 0, progress_every: int = 0,
                      phases: int = PHASES, preview_every: int = 0):
  """Returns `generate(params, ids, valid, rng, cfg_weight, temperature, top_p) -> int32[P, N]`, compiled.

  Args of the returned function:
    params: the model params.
    ids: int32[2P, T] prompt rows, conditional rows first, then their unconditional twins (left padded).
    valid: bool[2P, T] non-padding positions.
    rng: PRNG key (unused when greedy).
    cfg_weight, temperature, top_p: float scalars (traced: changing them does not recompile).
  Returns int32[P, num_image_tokens] raster-order VQ codes.
  `generate.for_params(params)` is the `jax.jit` it runs for such params: compiled with
  `compile_options.decode_compiler_options` of the LLM's dtype and of the weights (float, or int8 with int8 dots),
  cached per (model, greedy, top_k, progress_every, phases, preview_every, compiler options), so repeated calls
  with the same shapes reuse one executable. `progress_every > 0` reports the step to `progress.reporting` bars
  every that many tokens; `preview_every > 0` sends every that many tokens (and at the end) the partial grid
  decoded, positions not yet sampled shown neutral grey, to `previews.previewing` (`partial_images`).

  The KV cache grows in `phases` steps: during phase k it holds T + e_k slots (padded once between phases), so
  early tokens attend over a short array instead of all T + N slots. Decode is memory-bound; this cuts the
  cache bytes read per step by ~1/3 with 4 phases, at the price of compiling one loop body per phase. Exact:
  the extra slots are masked either way.
  """
  key = (model, bool(greedy), int(top_k), int(progress_every), int(phases), int(preview_every))

  def for_params(params):
    options = compile_options.decode_compiler_options(
        model.cfg.llm.dtype, integer_dots=quantization.has_integer_dots(params))
    return _compiled_generate(*key, compile_options.options_key(options))

  def generate(params, *args):
    return for_params(params)(params, *args)

  generate.for_params = for_params
  return generate


def block_mask(cfg, count, patch_pixels: int) -> jax.Array:
  """bool[H, W]: True on the pixel blocks of the first `count` tokens of the raster-order grid (traced count)."""
  g = cfg.gen_grid
  done = (jnp.arange(g * g) < count).reshape(g, g)
  return jnp.repeat(jnp.repeat(done, patch_pixels, axis=0), patch_pixels, axis=1)


def partial_images(images: jax.Array, mask: jax.Array, rounding: str) -> jax.Array:
  """float[P, H, W, 3] decoded images -> uint8 frames with the pixels outside `mask` bool[H, W] neutral grey."""
  return image_proc.to_uint8(jnp.where(mask[None, :, :, None], images, 0.0), rounding, xp=jnp)


@functools.lru_cache(maxsize=None)
def _compiled_generate(model: JanusModel, greedy: bool, top_k: int, progress_every: int, phases: int,
                       preview_every: int = 0, options: tuple | None = None):
  cfg = model.cfg
  n_tokens = cfg.num_image_tokens

  def frame(params, codes, count):
    images = model.apply({"params": params}, codes, method=JanusModel.decode_image_tokens)
    return partial_images(images, block_mask(cfg, count, cfg.vq.downsample), cfg.mode.pixel_rounding)

  def run(params, ids, valid, rng, cfg_weight, temperature, top_p):
    apply = lambda method, *a: model.apply({"params": params}, *a, method=method)
    rows, t = ids.shape
    p = rows // 2
    bounds = cache_phases(n_tokens, phases)
    cache = KVCache.zeros(cfg.llm, rows, t + bounds[1])
    key_valid = jnp.concatenate([valid, jnp.ones((rows, n_tokens), bool)], axis=1)
    positions = positions_from_mask(valid)
    next_position = positions[:, -1] + 1
    hidden, cache = apply(JanusModel.llm, apply(JanusModel.embed_text, ids), positions,
                          causal_mask(key_valid[:, :t + bounds[1]], t, 0), cache, jnp.int32(0))

    def pick(last_hidden, step):
      logits = apply(JanusModel.image_logits, last_hidden)
      logits = cfg_combine(logits[:p], logits[p:], cfg_weight)
      return sample_next(logits, jax.random.fold_in(rng, step), greedy=greedy, temperature=temperature,
                         top_k=top_k, top_p=top_p)

    codes = jnp.zeros((p, n_tokens), jnp.int32).at[:, 0].set(pick(hidden[:, -1], 0))
    previews.maybe_emit(1, preview_every, lambda: frame(params, codes, 1), total=n_tokens)

    def make_step(slots_valid):
      def step(i, carry):
        codes, cache = carry
        prev = jax.lax.dynamic_slice_in_dim(codes, i - 1, 1, axis=1)[:, 0]
        emb = apply(JanusModel.embed_image_tokens, jnp.concatenate([prev, prev])[:, None])
        slot = t + i - 1
        hidden, cache = apply(JanusModel.llm, emb, (next_position + i - 1)[:, None],
                              causal_mask(slots_valid, 1, slot), cache, slot)
        tok = pick(hidden[:, 0], i)
        progress.maybe_tick(i + 1, progress_every)
        codes = jax.lax.dynamic_update_slice_in_dim(codes, tok[:, None], i, axis=1)
        previews.maybe_emit(i + 1, preview_every, lambda: frame(params, codes, i + 1), total=n_tokens)
        return codes, cache
      return step

    for k in range(1, len(bounds)):
      length = t + bounds[k]
      if cache.max_len < length:
        cache = cache.grow(length)
      # Phase k produces tokens bounds[k-1] .. bounds[k]-1; token i's input sits at slot t + i - 1 < length.
      codes, cache = jax.lax.fori_loop(max(bounds[k - 1], 1), bounds[k], make_step(key_valid[:, :length]),
                                       (codes, cache))
    return codes

  return jax.jit(run, compiler_options=dict(options) if options else None)


@functools.lru_cache(maxsize=None)
def compiled_decode(model: JanusModel):
  """Jitted `decode(params, codes int32[B, N]) -> uint8[B, H, W, 3]` (official post-processing)."""

  def run(params, codes):
    images = model.apply({"params": params}, codes, method=JanusModel.decode_image_tokens)
    return image_proc.to_uint8(images, model.cfg.mode.pixel_rounding, xp=jnp)

  return jax.jit(run)


def teacher_forced_logits(model: JanusModel, params, ids: jax.Array, codes: jax.Array) -> jax.Array:
  """The image logits the AR loop sees, from one uncached forward over prompt + codes (teacher forcing).

  ids int32[R, T] prompt rows (all valid), codes int32[R, N] -> float32[R, N, image_token_size]: position k
  predicts code k from the prompt and codes 0..k-1. For checks of the compiled loop (same argmax, same logits)."""
  apply = lambda method, *a: model.apply({"params": params}, *a, method=method)
  t = ids.shape[1]
  embeds = jnp.concatenate([apply(JanusModel.embed_text, ids), apply(JanusModel.embed_image_tokens, codes[:, :-1])],
                           axis=1)
  valid = jnp.ones(embeds.shape[:2], bool)
  hidden, _ = apply(JanusModel.llm, embeds, positions_from_mask(valid), causal_mask(valid, embeds.shape[1]))
  return apply(JanusModel.image_logits, hidden[:, t - 1:])
