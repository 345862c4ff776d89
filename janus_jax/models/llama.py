"""DeepSeek-LLM / LLaMA decoder (transformers `LlamaForCausalLM` semantics) with a preallocated KV cache.

Param tree (mirrors the checkpoint keys `language_model.{model.{embed_tokens, layers.N.*, norm}, lm_head}`):
  model/embed_tokens/embedding                     float[V, D]
  model/layers/{input_layernorm, post_attention_layernorm}/scale, self_attn/{q,k,v,o}_proj/kernel,
      mlp/{gate,up,down}_proj/kernel               stacked on a leading `layers` axis when scanned
  model/norm/scale, lm_head/kernel                 float[D, V]

Masks and positions are built by the caller (`attention_mask` helpers below): `mask bool[B, T, S]` says which of
the S key slots each of the T queries may see; positions are per-token RoPE positions.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus_jax.models import attention, layers
from janus_jax.models.configs import LlamaConfig


class KVCache(NamedTuple):
  """Preallocated keys and values, head-major (the decode attention reads contiguous [S, Dh] panels per head).

  Two storage forms, matching the layer layout:
    scanned layers:  k, v float[L, B, H_kv, S_max, Dh] (one stacked array each);
    unrolled layers: k, v tuples of L arrays float[B, H_kv, S_max, Dh] — each layer owns its buffer, so a decode
      step never copies a layer's slice out of a stacked array (that copy cost ~40% of a CPU decode step).
  """
  k: Any
  v: Any

  @classmethod
  def zeros(cls, cfg: LlamaConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (batch, cfg.num_kv_heads, max_len, cfg.resolved_head_dim)
    if cfg.scan_layers:
      full = (cfg.num_layers,) + shape
      return cls(jnp.zeros(full, dtype), jnp.zeros(full, dtype))
    return cls(tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)),
               tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers)))

  @property
  def max_len(self) -> int:
    return jax.tree.leaves(self.k)[0].shape[-2]

  def grow(self, max_len: int) -> "KVCache":
    """Zero-pads the slot axis to `max_len` slots."""
    def pad(x):
      widths = [(0, 0)] * x.ndim
      widths[-2] = (0, max_len - x.shape[-2])
      return jnp.pad(x, widths)
    return jax.tree.map(pad, self)


def causal_mask(key_valid: jax.Array, query_len: int, cache_index: jax.Array | int = 0) -> jax.Array:
  """bool[B, T, S]: query i (at cache slot cache_index + i) sees slots <= its own that are valid.

  Args:
    key_valid: bool[B, S] — real (non-padding) token in each key slot.
    query_len: T, the number of new tokens.
    cache_index: slot of the first new token (0 without a cache).
  """
  s = key_valid.shape[1]
  q_slots = cache_index + jnp.arange(query_len)[:, None]
  k_slots = jnp.arange(s)[None, :]
  return (k_slots <= q_slots)[None] & key_valid[:, None, :]


def positions_from_mask(key_valid: jax.Array) -> jax.Array:
  """int32[B, S] RoPE positions for a left-padded batch (transformers: cumsum(mask) - 1, pads at 0)."""
  pos = jnp.cumsum(key_valid.astype(jnp.int32), axis=-1) - 1
  return jnp.maximum(pos, 0)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """float32[B, T, Dh] cos/sin tables for rotate-half RoPE."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x float[B, T, H, Dh]; rotate-half convention (first half / second half pairs), math in float32."""
  half = x.shape[-1] // 2
  xf = x.astype(jnp.float32)
  rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
  out = xf * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


def _write_and_read(cache: KVCache, layer, k, v, cache_index):
  """Writes new k/v [B, Hkv, T, Dh] at slot cache_index of `layer`; returns (all keys, all values, cache)."""
  if isinstance(cache.k, tuple):  # Unrolled: `layer` is a Python int and the layer owns its buffers.
    start = (0, 0, cache_index, 0)
    k_l = jax.lax.dynamic_update_slice(cache.k[layer], k.astype(cache.k[layer].dtype), start)
    v_l = jax.lax.dynamic_update_slice(cache.v[layer], v.astype(cache.v[layer].dtype), start)
    replace = lambda t, x: t[:layer] + (x,) + t[layer + 1:]
    return k_l, v_l, KVCache(replace(cache.k, k_l), replace(cache.v, v_l))
  start = (layer, 0, 0, cache_index, 0)
  cache = KVCache(jax.lax.dynamic_update_slice(cache.k, k[None].astype(cache.k.dtype), start),
                  jax.lax.dynamic_update_slice(cache.v, v[None].astype(cache.v.dtype), start))
  return (jax.lax.dynamic_index_in_dim(cache.k, layer, 0, keepdims=False),
          jax.lax.dynamic_index_in_dim(cache.v, layer, 0, keepdims=False), cache)


class LlamaAttention(nn.Module):
  """Multi-head attention with optional grouped KV heads and an optional KV cache."""
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, cache: KVCache | None = None, layer=None, cache_index=None):
    """x float[B, T, D]; with a cache, writes this layer's new keys/values at [layer, :, :, cache_index:]."""
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    h, hkv, dh = cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
    b, t, _ = x.shape
    dense = lambda n, axes, name: layers.Dense(n, axes, use_bias=False, name=name, **layers.linear_args(cfg))
    q = dense(h * dh, ("embed", "heads"), "q_proj")(x).reshape(b, t, h, dh)
    k = dense(hkv * dh, ("embed", "kv_heads"), "k_proj")(x).reshape(b, t, hkv, dh)
    v = dense(hkv * dh, ("embed", "kv_heads"), "v_proj")(x).reshape(b, t, hkv, dh)
    q = apply_rope(q, cos, sin)  # [B, T, H, Dh]
    k = apply_rope(k, cos, sin).transpose(0, 2, 1, 3)  # [B, Hkv, T, Dh], the cache's head-major layout
    v = v.transpose(0, 2, 1, 3)
    q = layers.constrain(q, ("act_batch", "act_seq", "act_heads", None))
    if cache is not None:
      k_all, v_all, cache = _write_and_read(cache, layer, k, v, cache_index)
      k_all, v_all = k_all.astype(dt), v_all.astype(dt)
    else:
      k_all, v_all = k, v
    k_all = layers.constrain(k_all, ("act_batch", "act_heads", "act_kv_seq", None))
    v_all = layers.constrain(v_all, ("act_batch", "act_heads", "act_kv_seq", None))
    out = attention.dot_product_attention(q, k_all, v_all, mask, precision=cfg.matmul_precision,
                                          kv_heads_first=True)
    out = out.reshape(b, t, h * dh)
    out = dense(cfg.hidden_size, ("heads", "embed"), "o_proj")(out)
    return out, cache


class LlamaMLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dense = lambda n, axes, name: layers.Dense(n, axes, use_bias=False, name=name, **layers.linear_args(cfg))
    gate = dense(cfg.intermediate_size, ("embed", "mlp"), "gate_proj")(x)
    up = dense(cfg.intermediate_size, ("embed", "mlp"), "up_proj")(x)
    hidden = layers.constrain(jax.nn.silu(gate) * up, ("act_batch", "act_seq", "act_mlp"))
    return dense(cfg.hidden_size, ("mlp", "embed"), "down_proj")(hidden)


class LlamaDecoderLayer(nn.Module):
  """Pre-RMSNorm block. Signature fits `nn.scan`: ((x, cache), layer, *broadcast) -> ((x, cache), None)."""
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, carry, layer, cos, sin, mask, cache_index, capture_layer=None):
    """carry = (x, cache) or (x, cache, captured); with `capture_layer` (int32 scalar) the output of that layer
    index is kept in `captured` (REPA reads an intermediate hidden state)."""
    x, cache = carry[:2]
    cfg = self.cfg
    pdt = jnp.dtype(cfg.param_dtype)
    norm = lambda name: layers.RMSNorm(cfg.rms_norm_eps, axis_name="embed", param_dtype=pdt, name=name)
    attn_out, cache = LlamaAttention(cfg, name="self_attn")(
        norm("input_layernorm")(x), cos, sin, mask, cache, layer, cache_index)
    x = x + attn_out
    x = x + LlamaMLP(cfg, name="mlp")(norm("post_attention_layernorm")(x))
    x = layers.constrain(x, ("act_batch", "act_seq", "act_embed"))
    if len(carry) == 3:
      return (x, cache, jnp.where(layer == capture_layer, x, carry[2])), None
    return (x, cache), None


class LlamaModel(nn.Module):
  """Embedding table, decoder stack and final norm (transformers `LlamaModel`)."""
  cfg: LlamaConfig

  def setup(self):
    cfg = self.cfg
    self.embed_tokens = nn.Embed(
        cfg.vocab_size, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
        embedding_init=layers.names(nn.initializers.normal(0.02), ("vocab", "embed")))
    block = LlamaDecoderLayer
    policy = layers.remat_policy(cfg.remat_policy)
    if policy is not None:
      block = nn.remat(block, policy=policy, prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                      length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
      self.layers = stack(cfg)
    else:
      self.layers = [block(cfg, name=f"layers_{i}") for i in range(cfg.num_layers)]
    self.norm = layers.RMSNorm(cfg.rms_norm_eps, axis_name="embed", param_dtype=jnp.dtype(cfg.param_dtype))

  def embed(self, ids: jax.Array) -> jax.Array:
    """int[B, T] -> float[B, T, D]."""
    return self.embed_tokens(ids)

  def __call__(self, inputs_embeds, positions, mask, cache: KVCache | None = None, cache_index=None,
               capture_layer: int | None = None):
    """Runs the stack.

    Args:
      inputs_embeds: float[B, T, D].
      positions: int[B, T] RoPE positions.
      mask: bool[B, T, S] (S = T without cache, S = cache length with one).
      cache: optional KVCache; the new keys/values are written at slots [cache_index, cache_index + T).
      cache_index: int32 scalar, slot of the first new token.
      capture_layer: optional Python int k (1 <= k <= num_layers): also return the hidden state after block k
        (before the final norm), e.g. JanusFlow's REPA reads block 6.
    Returns:
      (hidden float[B, T, D] after the final norm, updated cache or None), plus `captured` float[B, T, D] as a
      third element when `capture_layer` is given.
    """
    cfg = self.cfg
    x = layers.constrain(inputs_embeds.astype(jnp.dtype(cfg.dtype)), ("act_batch", "act_seq", "act_embed"))
    cos, sin = rope_cos_sin(positions, cfg.resolved_head_dim, cfg.rope_theta)
    if cache_index is None:
      cache_index = jnp.int32(0)
    # The cache travels as loop state and is updated in place at [layer, :, :, cache_index:] (no per-step copies).
    if capture_layer is not None and not 1 <= capture_layer <= cfg.num_layers:
      raise ValueError(f"capture_layer={capture_layer} must be in [1, num_layers={cfg.num_layers}] (the hidden state "
                       "after that many blocks); fix e.g. model.repa.layer.")
    captured = None
    if cfg.scan_layers:
      carry = (x, cache) if capture_layer is None else (x, cache, jnp.zeros_like(x))
      idx = None if capture_layer is None else jnp.int32(capture_layer - 1)
      carry, _ = self.layers(carry, jnp.arange(cfg.num_layers), cos, sin, mask, cache_index, idx)
      x, cache = carry[:2]
      captured = carry[2] if capture_layer is not None else None
    else:
      for i, layer in enumerate(self.layers):
        (x, cache), _ = layer((x, cache), i, cos, sin, mask, cache_index)
        if capture_layer is not None and i == capture_layer - 1:
          captured = x
    x = self.norm(x)
    return (x, cache) if capture_layer is None else (x, cache, captured)


class LlamaForCausalLM(nn.Module):
  """`model` (LlamaModel) plus an untied `lm_head`."""
  cfg: LlamaConfig

  def setup(self):
    cfg = self.cfg
    self.model = LlamaModel(cfg)
    self.lm_head = layers.Dense(cfg.vocab_size, ("embed", "vocab"), use_bias=False,
                                kernel_init=nn.initializers.normal(0.02), out_dtype=jnp.float32,
                                **layers.linear_args(cfg))

  def embed(self, ids):
    return self.model.embed(ids)

  def logits(self, hidden):
    """float[..., D] -> float32[..., V]."""
    return self.lm_head(hidden).astype(jnp.float32)

  def __call__(self, inputs_embeds, positions, mask, cache=None, cache_index=None, capture_layer=None):
    return self.model(inputs_embeds, positions, mask, cache, cache_index, capture_layer)
