"""The fused attention (jax.nn.dot_product_attention) equals the exact einsum form in fp32 on CPU: prefill with
causal + padding masks, packed-segment training masks, grouped KV heads, KV-cached decode, and gradients; the
LLM, SigLIP and VQ pick the form from their matmul precision."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus_jax.models import attention
from janus_jax.models.configs import LlamaConfig
from janus_jax.models.llama import KVCache, LlamaModel, causal_mask, positions_from_mask

TOL = 1e-5
B, T, H, HKV, D = 2, 12, 4, 2, 8


def _qkv(t=T, s=T, heads=H, kv=HKV, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(ks[0], (B, t, heads, D)), jax.random.normal(ks[1], (B, s, kv, D)),
          jax.random.normal(ks[2], (B, s, kv, D)))


def _masks():
  valid = jnp.ones((B, T), bool).at[1, :3].set(False)  # row 1 left-padded by 3
  causal = causal_mask(valid, T)
  seg = jnp.asarray(np.repeat([[0] * 5 + [1] * 4 + [2] * 3], B, 0))  # three packed rows
  packed = causal & (seg[:, :, None] == seg[:, None, :])
  return {"causal+padding": (causal, valid), "packed segments": (packed, jnp.ones((B, T), bool)), "none": (None, None)}


@pytest.mark.parametrize("name", ["causal+padding", "packed segments", "none"])
def test_fused_equals_einsum_forward_and_gradients(name):
  mask, valid_q = _masks()[name]
  q, k, v = _qkv()
  attn = lambda impl: lambda q, k, v: attention.dot_product_attention(q, k, v, mask, impl=impl)
  keep = jnp.ones((B, T), bool) if valid_q is None else valid_q  # fully masked (padding) queries are don't-care
  w = keep[:, :, None, None].astype(jnp.float32)
  ref, fused = attn("einsum")(q, k, v), attn("fused")(q, k, v)
  np.testing.assert_allclose(np.asarray(fused * w), np.asarray(ref * w), atol=TOL)
  loss = lambda impl: lambda q, k, v: jnp.sum(jnp.sin(attn(impl)(q, k, v)) * w)
  g_ref = jax.grad(loss("einsum"), argnums=(0, 1, 2))(q, k, v)
  g_fused = jax.grad(loss("fused"), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(g_fused, g_ref):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=TOL)


def test_kv_heads_first_layout_and_form_choice():
  q, k, v = _qkv()
  mask = _masks()["causal+padding"][0]
  a = attention.dot_product_attention(q, k, v, mask, impl="fused")
  b = attention.dot_product_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask, impl="einsum",
                                      kv_heads_first=True)
  np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b)[0], atol=TOL)
  assert attention.form("highest", 12) == "einsum" and attention.form("default", 1) == "einsum"
  assert attention.form("default", 12) == "fused"
  with pytest.raises(ValueError, match="impl"):
    attention.form("default", 12, impl="flash")


def test_llm_prefill_and_decode_fused_equal_einsum():
  """The LLM at precision "default" (fused prefill; cached decode keeps its one-query einsum) equals "highest"."""
  base = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
  fused = dataclasses.replace(base, matmul_precision="default")
  x = jax.random.normal(jax.random.key(1), (B, T, 32))
  valid = jnp.ones((B, T), bool).at[1, :2].set(False)
  pos, mask = positions_from_mask(valid), causal_mask(valid, T)
  params = LlamaModel(base).init(jax.random.key(0), x, pos, mask)
  s = T + 1
  outs = {}
  for name, c in (("einsum", base), ("fused", fused)):
    model = LlamaModel(c)
    cache = KVCache.zeros(c, B, s)
    kv_valid = jnp.concatenate([valid, jnp.ones((B, 1), bool)], 1)
    h, cache = model.apply(params, x, pos, causal_mask(kv_valid, T)[:, :, :], cache, jnp.int32(0))
    step_mask = causal_mask(kv_valid, 1, T)
    h1, _ = model.apply(params, x[:, -1:], pos[:, -1:] + 1, step_mask, cache, jnp.int32(T))
    outs[name] = (np.asarray(h) * np.asarray(valid)[:, :, None], np.asarray(h1))
  np.testing.assert_allclose(outs["fused"][0], outs["einsum"][0], atol=TOL)
  np.testing.assert_allclose(outs["fused"][1], outs["einsum"][1], atol=TOL)
