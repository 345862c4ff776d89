"""Choosing the next token from logits: greedy, temperature, top-k, top-p (transformers warper order)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30


def cfg_combine(cond: jax.Array, uncond: jax.Array, weight: jax.Array | float) -> jax.Array:
  """Classifier-free guidance, one rule for every mode: uncond + w * (cond - uncond) (logits or velocities).

  JanusFlow writes it w * cond - (w - 1) * uncond: the same value, up to rounding (its parity test holds at 1e-6)."""
  return uncond + weight * (cond - uncond)


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
  """Keeps the k largest logits per row (k <= 0 keeps all). float[B, V] -> float[B, V]."""
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, NEG_INF, logits)


def top_p_filter(logits: jax.Array, top_p: jax.Array | float) -> jax.Array:
  """Nucleus filter: keeps the smallest set of tokens whose probability mass reaches top_p (>= 1 token)."""
  order = jnp.argsort(-logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep_sorted = mass_before < top_p
  keep_sorted = keep_sorted.at[..., 0].set(True)
  keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
  return jnp.where(keep, logits, NEG_INF)


def sample_next(logits: jax.Array, rng: jax.Array, *, greedy: bool, temperature=1.0, top_k: int = 0,
                top_p=1.0) -> jax.Array:
  """float32[B, V] -> int32[B]. `greedy` and `top_k` are static; temperature and top_p may be traced."""
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  logits = top_k_filter(logits, top_k)
  logits = jax.lax.cond(jnp.asarray(top_p) < 1.0, lambda l: top_p_filter(l, top_p), lambda l: l, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
