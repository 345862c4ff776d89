"""Multimodal understanding: images + question -> answer tokens, compiled end to end.

Prefill of the multimodal prompt (left padded) into a preallocated KV cache, then a `lax.while_loop` that stops
when every row has produced EOS or `max_new_tokens` is reached. Greedy or sampled (temperature, top-k, top-p).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from janus_jax.models.janus import JanusModel
from janus_jax.models.llama import KVCache, causal_mask, positions_from_mask
from janus_jax.sampling.sample import sample_next


def compiled_understand(model: JanusModel, *, greedy: bool, max_new_tokens: int, top_k: int = 0):
  """Returns jitted `run(params, ids, valid, image_seq_mask, pixels, rng, temperature, top_p, eos_id)`.

  Args of the returned function:
    ids: int32[B, T] left-padded prompt ids; valid: bool[B, T]; image_seq_mask: bool[B, T];
    pixels: float32[B, n, H, W, 3]; rng: PRNG key; temperature, top_p: float scalars; eos_id: int32 scalar.
  Returns:
    (tokens int32[B, max_new_tokens] — EOS-filled after the end, lengths int32[B] — tokens before EOS).
  """
  return _compiled_understand(model, bool(greedy), int(max_new_tokens), int(top_k))


@functools.lru_cache(maxsize=None)
def _compiled_understand(model: JanusModel, greedy: bool, max_new_tokens: int, top_k: int):
  cfg = model.cfg

  def run(params, ids, valid, image_seq_mask, pixels, rng, temperature, top_p, eos_id):
    apply = lambda method, *a: model.apply({"params": params}, *a, method=method)
    b, t = ids.shape
    cache = KVCache.zeros(cfg.llm, b, t + max_new_tokens)
    key_valid = jnp.concatenate([valid, jnp.ones((b, max_new_tokens), bool)], axis=1)
    positions = positions_from_mask(valid)
    next_position = positions[:, -1] + 1
    embeds = apply("embed_multimodal", ids, image_seq_mask, pixels)
    hidden, cache = apply("llm", embeds, positions, causal_mask(key_valid, t, 0), cache, jnp.int32(0))

    def pick(last_hidden, step):
      logits = apply("text_logits", last_hidden)
      return sample_next(logits, jax.random.fold_in(rng, step), greedy=greedy, temperature=temperature,
                         top_k=top_k, top_p=top_p)

    tok = pick(hidden[:, -1], 0)
    out = jnp.full((b, max_new_tokens), eos_id, jnp.int32).at[:, 0].set(tok)
    done = tok == eos_id

    def cond(state):
      i, _, done, _, _ = state
      return (i < max_new_tokens) & ~jnp.all(done)

    def body(state):
      i, tok, done, out, cache = state
      slot = t + i - 1
      emb = apply("embed_text", tok[:, None])
      hidden, cache = apply("llm", emb, (next_position + i - 1)[:, None],
                            causal_mask(key_valid, 1, slot), cache, slot)
      new = jnp.where(done, eos_id, pick(hidden[:, 0], i))
      out = jax.lax.dynamic_update_slice_in_dim(out, new[:, None], i, axis=1)
      return i + 1, new, done | (new == eos_id), out, cache

    _, _, _, out, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), tok, done, out, cache))
    is_eos = out == eos_id
    lengths = jnp.where(is_eos.any(axis=1), jnp.argmax(is_eos, axis=1), max_new_tokens).astype(jnp.int32)
    return out, lengths

  return jax.jit(run)
