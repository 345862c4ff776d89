"""JanusFlow ShallowUViT generation encoder and decoder (`janus/janusflow/models/uvit.py`), NHWC.

The encoder turns a (scaled SDXL-VAE) latent and a timestep into 2x2-patch features for the LLM plus the
conditioning vector t_emb; the decoder turns the LLM's aligned outputs (plus the encoder's long skip) back into a
velocity in latent space.

Param trees (mirror the DeepSeek keys under `vision_gen_enc_model.` / `vision_gen_dec_model.`; torch `name.N` is
Linen `name_N`; Linear/Conv `weight` -> `kernel` (transposed to [in, out] / HWIO), RMSNorm `weight` -> `scale`):
  encoder:
    time_embed/{linear_1, linear_2}             768 -> 2048 -> 2048 (SiLU between); `time_proj` has no params
    in_conv                                     conv k=s=patch_size, latent_channels -> channels (always biased)
    mid_block/res_blocks_I/...                  ConvNextBlock(channels), I < layers_in_middle
  decoder:
    input_norm                                  RMSNorm(channels)
    mid_block/res_blocks_I/...                  ConvNextBlock(2 * channels)
    out_convs_0/{norm, unpatch_conv}            Unpatchify: RMSNorm, 1x1 conv -> latent_channels * p * p
  ConvNextBlock children: depthwise (7x7, groups=C), norm (RMSNorm), channelwise_linear_1 (C -> 4C),
    channelwise_norm/{weight, bias} (GRN, float[1, 1, 1, 4C] as in torch), channelwise_linear_2 (4C -> C),
    cond_embeds_mapper (hidden_size -> 2C, AdaLN scale then shift).

Numerics follow the official module:
  * The sinusoidal time embedding is diffusers `Timesteps(C, flip_sin_to_cos=True, downscale_freq_shift=0)`,
    computed in float32 ([cos, sin] order) and cast to the compute dtype. The official sampler feeds bf16-rounded
    `t * 1000`; rounding t is the caller's business.
  * RMSNorm is LLaMA's (float32 variance, cast back, times the scale); GELU is exact.
  * ConvNextBlock applies the AdaLN modulation AFTER the residual add: x = (x + F(x)) * (1 + scale) + shift.
  * GRN statistics (L2 norm over H, W; mean over channels) are taken in float32 here (the reference takes them in
    the compute dtype; identical in float32). The norm has a safe gradient at an all-zero channel.
  * Unpatchify's pixel shuffle uses torch `PixelShuffle` channel order (input channel c * p * p + i * p + j
    becomes output channel c at sub-pixel (i, j)), so checkpoint conv weights map without permutation.
  * Dropout is 0 in the shipped config and is not built.
Init: torch-like for training from scratch: GRN weight/bias zero (GRN starts as the identity), norm scales one,
biases zero, `cond_embeds_mapper` kernel U(+-1/sqrt(fan_in)) (torch's default Linear init, which the official code
keeps), the other kernels the repo's lecun-normal default.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from janus_jax.models import layers
from janus_jax.models.configs import UViTConfig

_ACT = ("act_batch", None, None, "act_embed")
_MLP_ACT = ("act_batch", None, None, "act_mlp")
# torch nn.Linear's default weight init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_TORCH_LINEAR_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _dtypes(cfg: UViTConfig):
  """Conv / Dense keyword args: compute dtype, param dtype, matmul precision."""
  return layers.linear_args(cfg)


def _frequencies(dim: int, max_period: float) -> np.ndarray:
  """float32[dim // 2] sinusoid frequencies, a trace-time constant.

  The exponent -ln(max_period) * k / half is rounded to float32 exactly as torch computes it (float32 multiply,
  then true division: bit-identical to diffusers), then exponentiated in float64 and rounded once. This equals
  torch's float32 exp except where torch's is not correctly rounded (5 of 384 frequencies at dim 768, 1 ulp).
  Computing them with XLA's float32 divide and exp instead differs from torch on ~40% of the frequencies.
  Either way the float32 argument t * f carries ~6e-5 rounding at t ~ 1000, the inherent accuracy of the
  official embedding.
  """
  half = dim // 2
  exponent = (np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32)) / np.float32(half)
  return np.exp(exponent.astype(np.float64)).astype(np.float32)


def timestep_embedding(t, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal timestep embedding (diffusers `get_timestep_embedding`, flip_sin_to_cos, shift 0, scale 1).

  Args:
    t: float[B] (fractional) timesteps; JanusFlow feeds t * 1000 with t in [0, 1].
    dim: embedding width (odd widths get one zero column at the end).
  Returns:
    float32[B, dim] = [cos(t * f_k), sin(t * f_k)], f_k = exp(-ln(max_period) * k / (dim // 2)), k < dim // 2.
  """
  args = jnp.asarray(t, jnp.float32)[:, None] * _frequencies(dim, max_period)[None, :]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def pixel_shuffle(x, r: int) -> jax.Array:
  """torch `PixelShuffle(r)` on NHWC: float[B, H, W, C * r * r] -> float[B, H * r, W * r, C].

  Input channel c * r * r + i * r + j lands on output channel c at pixel (h * r + i, w * r + j).
  """
  b, h, w, c = x.shape
  if c % (r * r):
    raise ValueError(f"pixel_shuffle: {c} channels are not divisible by r*r = {r * r}.")
  co = c // (r * r)
  x = x.reshape(b, h, w, co, r, r).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, h * r, w * r, co)


def _safe_l2(x, axis):
  """||x||_2 over `axis` (keepdims) with a zero (not NaN) gradient where the norm is zero."""
  ss = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  pos = ss > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, ss, 1.0)), 0.0)


class GlobalResponseNorm(nn.Module):
  """ConvNeXt-V2 GRN on NHWC: out = bias + (weight * nx + 1) * x, nx = ||x||_HW / (mean_C ||x||_HW + eps).

  float[B, H, W, D] -> float[B, H, W, D]; `weight`/`bias` are float[1, 1, 1, D] (the torch shapes), zero-init.
  """
  eps: float = 1e-6
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    axes = (None, None, None, "mlp")
    weight = self.param("weight", layers.names(nn.initializers.zeros_init(), axes), (1, 1, 1, d), self.param_dtype)
    bias = self.param("bias", layers.names(nn.initializers.zeros_init(), axes), (1, 1, 1, d), self.param_dtype)
    gx = _safe_l2(x.astype(jnp.float32), axis=(1, 2))
    nx = (gx / (jnp.mean(gx, axis=-1, keepdims=True) + self.eps)).astype(x.dtype)
    return bias.astype(x.dtype) + (weight.astype(x.dtype) * nx + 1) * x


class ConvNextBlock(nn.Module):
  """ConvNeXt-V2 block with AdaLN conditioning.

  x float[B, H, W, C], cond float[B, hidden_size] -> float[B, H, W, C]:
    y = x + Linear2(GRN(GELU(Linear1(RMSNorm(DWConv7x7(x))))))
    scale, shift = cond_embeds_mapper(SiLU(cond)).split(2)     (scale first)
    out = y * (1 + scale) + shift
  """
  cfg: UViTConfig
  channels: int

  @nn.compact
  def __call__(self, x, cond):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    c = self.channels
    if x.shape[-1] != c:
      raise ValueError(f"ConvNextBlock({c}) got input with {x.shape[-1]} channels (shape {tuple(x.shape)}).")
    dense = lambda n, axes, name, **kw: layers.Dense(n, axes, use_bias=cfg.use_bias, name=name, **dt, **kw)
    h = layers.Conv(c, 7, padding=3, groups=c, use_bias=cfg.use_bias, name="depthwise", **dt)(x)
    h = layers.RMSNorm(cfg.norm_eps, param_dtype=dt["param_dtype"], name="norm")(h)
    h = dense(4 * c, ("embed", "mlp"), "channelwise_linear_1")(h)
    h = layers.constrain(layers.gelu(h), _MLP_ACT)
    h = GlobalResponseNorm(param_dtype=dt["param_dtype"], name="channelwise_norm")(h)
    h = dense(c, ("mlp", "embed"), "channelwise_linear_2")(h)
    y = h + x.astype(h.dtype)
    mod = dense(2 * c, ("embed", None), "cond_embeds_mapper", kernel_init=_TORCH_LINEAR_INIT)(nn.silu(cond))
    scale, shift = mod[:, None, None, :c], mod[:, None, None, c:]
    return layers.constrain(y * (1 + scale) + shift, _ACT)


class UVitBlock(nn.Module):
  """`layers_in_middle` ConvNextBlocks (`res_blocks_I`): float[B, H, W, C], cond -> float[B, H, W, C]."""
  cfg: UViTConfig
  channels: int

  @nn.compact
  def __call__(self, x, cond):
    for i in range(self.cfg.layers_in_middle):
      x = ConvNextBlock(self.cfg, self.channels, name=f"res_blocks_{i}")(x, cond)
    return x


class TimestepEmbedding(nn.Module):
  """diffusers `TimestepEmbedding`: linear_1 -> SiLU -> linear_2, float[B, C] -> float[B, hidden_size]."""
  cfg: UViTConfig

  @nn.compact
  def __call__(self, x):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    h = layers.Dense(cfg.hidden_size, (None, "mlp"), use_bias=cfg.use_bias, name="linear_1", **dt)(x)
    return layers.Dense(cfg.hidden_size, ("mlp", "embed"), use_bias=cfg.use_bias, name="linear_2", **dt)(nn.silu(h))


class Unpatchify(nn.Module):
  """RMSNorm, 1x1 conv -> latent_channels * p * p, pixel shuffle: float[B, h, w, Cin] -> float[B, p*h, p*w, latent]."""
  cfg: UViTConfig

  @nn.compact
  def __call__(self, x):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    p = cfg.patch_size
    x = layers.RMSNorm(cfg.norm_eps, param_dtype=dt["param_dtype"], name="norm")(x)
    x = layers.Conv(cfg.latent_channels * p * p, 1, use_bias=cfg.use_bias, name="unpatch_conv", **dt)(x)
    return pixel_shuffle(x, p)


class ShallowUViTEncoder(nn.Module):
  """JanusFlow `vision_gen_enc_model`.

  __call__(z float[B, H, W, latent_channels], t float[B] or scalar) ->
    (x_emb float[B, H/p, W/p, channels], t_emb float[B, hidden_size], skip float[B, H/p, W/p, channels]).
  `skip` is the decoder's long skip connection (the official `hs = [x_emb]`, the same tensor as x_emb). For the
  LLM, x_emb.reshape(B, -1, channels) is the official `view(B, C, h*w).permute(0, 2, 1)` (raster order).
  """
  cfg: UViTConfig

  @nn.compact
  def __call__(self, z, t):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    p = cfg.patch_size
    if z.ndim != 4 or z.shape[-1] != cfg.latent_channels:
      raise ValueError(f"ShallowUViTEncoder expects NHWC latents float[B, H, W, {cfg.latent_channels}], got shape "
                       f"{tuple(z.shape)}; transpose torch NCHW latents with z.transpose(0, 2, 3, 1).")
    if z.shape[1] % p or z.shape[2] % p:
      raise ValueError(f"Latent size {z.shape[1]}x{z.shape[2]} is not divisible by patch_size={p}.")
    b = z.shape[0]
    t = jnp.asarray(t)
    if t.ndim == 0:
      t = jnp.broadcast_to(t, (b,))
    if t.shape != (b,):
      raise ValueError(f"ShallowUViTEncoder expects timesteps float[B={b}] (or a scalar), got shape {tuple(t.shape)}.")
    t_emb = TimestepEmbedding(cfg, name="time_embed")(timestep_embedding(t, cfg.channels).astype(dt["dtype"]))
    t_emb = layers.constrain(t_emb, ("act_batch", "act_embed"))
    x = layers.Conv(cfg.channels, p, strides=p, padding=0, use_bias=True, name="in_conv", **dt)(
        layers.constrain(z.astype(dt["dtype"]), ("act_batch", None, None, None)))
    x = layers.constrain(x, _ACT)
    x = UVitBlock(cfg, cfg.channels, name="mid_block")(x, t_emb)
    return x, t_emb, x


class ShallowUViTDecoder(nn.Module):
  """JanusFlow `vision_gen_dec_model`.

  __call__(x float[B, h, w, channels] (LLM outputs after the dec aligner), skip float[B, h, w, channels] (from the
  encoder), t_emb float[B, hidden_size]) -> velocity float[B, p*h, p*w, latent_channels].
  input_norm(x) is concatenated with skip on channels ([x, skip] order), then ConvNeXt blocks at 2 * channels and
  the unpatchify head.
  """
  cfg: UViTConfig

  @nn.compact
  def __call__(self, x, skip, t_emb):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    if x.ndim != 4 or x.shape[-1] != cfg.channels or skip.shape != x.shape:
      raise ValueError(f"ShallowUViTDecoder expects x and skip float[B, h, w, {cfg.channels}] of equal shape, got "
                       f"x {tuple(x.shape)} and skip {tuple(skip.shape)}.")
    if t_emb.shape != (x.shape[0], cfg.hidden_size):
      raise ValueError(f"ShallowUViTDecoder expects t_emb float[B, {cfg.hidden_size}], got {tuple(t_emb.shape)}.")
    x = layers.RMSNorm(cfg.norm_eps, param_dtype=dt["param_dtype"], name="input_norm")(x.astype(dt["dtype"]))
    x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
    x = layers.constrain(x, _ACT)
    x = UVitBlock(cfg, 2 * cfg.channels, name="mid_block")(x, t_emb)
    return layers.constrain(Unpatchify(cfg, name="out_convs_0")(x), ("act_batch", None, None, None))


def abstract_params(cfg: UViTConfig) -> dict[str, Any]:
  """Boxed abstract params {"vision_gen_enc_model": ..., "vision_gen_dec_model": ...} (nothing allocated)."""
  p, c = cfg.patch_size, cfg.channels
  sds = jax.ShapeDtypeStruct
  key = jax.random.key(0)
  enc = jax.eval_shape(ShallowUViTEncoder(cfg).init, key, sds((1, p, p, cfg.latent_channels), jnp.float32),
                       sds((1,), jnp.float32))["params"]
  feats = sds((1, 1, 1, c), jnp.float32)
  dec = jax.eval_shape(ShallowUViTDecoder(cfg).init, key, feats, feats,
                       sds((1, cfg.hidden_size), jnp.float32))["params"]
  return {"vision_gen_enc_model": enc, "vision_gen_dec_model": dec}


def uvit_param_count(cfg: UViTConfig) -> int:
  """Encoder + decoder parameter count (72,175,632 for JanusFlow-1.3B)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(abstract_params(cfg))))


__all__ = ["ShallowUViTEncoder", "ShallowUViTDecoder", "ConvNextBlock", "GlobalResponseNorm", "UVitBlock",
           "TimestepEmbedding", "Unpatchify", "timestep_embedding", "pixel_shuffle", "abstract_params",
           "uvit_param_count"]
