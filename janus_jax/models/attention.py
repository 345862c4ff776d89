"""Scaled dot-product attention shared by the LLM, SigLIP and the VQ / KL-VAE mid-blocks.

Two forms of one computation:
  "einsum": explicit fp32 scores, masked with the most negative float32, fp32 softmax, at the config's matmul
            precision — the exact reference form (CPU parity tests) and the KV-cached decode step (one query).
  "fused":  `jax.nn.dot_product_attention` (cuDNN flash attention on GPU for bf16/fp16, XLA elsewhere), with the
            causal / padding / packed-segment mask passed as the boolean mask it expects.
`impl="auto"` picks "einsum" for "highest" precision (the CPU default) or a single query, else "fused".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from janus_jax import precision as precision_lib

IMPLS = ("auto", "einsum", "fused")


def form(precision: str, query_len: int, impl: str = "auto") -> str:
  """The form `dot_product_attention` uses: "einsum" or "fused"."""
  if impl not in IMPLS:
    raise ValueError(f"Unknown attention impl {impl!r}: use one of {', '.join(IMPLS)}.")
  if impl != "auto":
    return impl
  return "einsum" if precision == "highest" or query_len == 1 else "fused"


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
                          precision: str = "highest", impl: str = "auto", kv_heads_first: bool = False) -> jax.Array:
  """Multi-head attention with grouped KV heads.

  Args:
    q: float[B, T, H, Dh] queries.
    k, v: float[B, S, Hkv, Dh] (or float[B, Hkv, S, Dh] with `kv_heads_first`, the KV cache's layout); H % Hkv == 0.
    mask: bool[B, T, S] (True: the query may see the key) or None (every key).
    precision: a `janus_jax.precision` name for the two matmuls.
    impl: "auto", "einsum" or "fused" (see the module docstring).
  Returns:
    float[B, T, H, Dh] in q's dtype.
  """
  b, t, h, dh = q.shape
  if form(precision, t, impl) == "fused":
    if kv_heads_first:
      k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    return jax.nn.dot_product_attention(q, k, v, mask=None if mask is None else mask[:, None],
                                        scale=dh ** -0.5).astype(q.dtype)
  if not kv_heads_first:
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, Hkv, S, Dh]
  hkv = k.shape[1]
  lax_precision = precision_lib.lax_precision(precision)
  qg = q.reshape(b, t, hkv, h // hkv, dh)
  scores = jnp.einsum("btkgd,bksd->bkgts", qg, k, preferred_element_type=jnp.float32,
                      precision=lax_precision) * (dh ** -0.5)
  if mask is not None:
    scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bksd->btkgd", probs, v, precision=lax_precision)
  return out.reshape(b, t, h, dh).astype(q.dtype)
