"""KL autoencoder with diffusers `AutoencoderKL` semantics (SDXL-VAE for JanusFlow; small ones trained on Shapes).

Images are NHWC float in [-1, 1]; the latent is float[B, H/f, W/f, latent_channels], f = 2^(len(block_out_channels)-1)
(8 for SDXL-VAE: 384x384 -> 48x48x4). The flow model works on scaled latents: `to_latent` / `from_latent`.

Param tree (mirrors the diffusers state_dict keys; torch `name.N` is Linen `name_N`):
  encoder/conv_in                                            conv k3, in_channels -> block_out_channels[0]
  encoder/down_blocks_I/resnets_J/{norm1,conv1,norm2,conv2,conv_shortcut?}   J < layers_per_block
  encoder/down_blocks_I/downsamplers_0/conv                  every level but the last
  encoder/mid_block/resnets_{0,1}, encoder/mid_block/attentions_0/{group_norm,to_q,to_k,to_v,to_out_0}
  encoder/{conv_norm_out,conv_out}                           conv_out -> 2 * latent_channels (mean, logvar)
  quant_conv                                                 1x1, 2*latent -> 2*latent (when use_quant_conv)
  post_quant_conv                                            1x1, latent -> latent (when use_post_quant_conv)
  decoder/{conv_in, mid_block, conv_norm_out, conv_out}
  decoder/up_blocks_I/resnets_J (J <= layers_per_block), decoder/up_blocks_I/upsamplers_0/conv (all but the last)
Decoder level I = 0 is the lowest resolution (channels reversed(block_out_channels)[I]).

Numerics follow diffusers (models/autoencoders/vae.py, resnet.py, attention_processor.py):
  * ResnetBlock2D: norm1, silu, conv1, norm2, silu, conv2; skip through a 1x1 `conv_shortcut` when channels change;
    output scale factor 1, dropout 0 (not built).
  * Downsample2D (padding 0): zero-pad one row / column at the bottom / right, conv k3 s2.
  * Upsample2D: nearest x2, conv k3 p1.
  * Mid-block attention: GroupNorm, Linear to_q / to_k / to_v over channels, one head spanning all C channels,
    scores over the H*W positions scaled by C^-0.5, softmax in float32, Linear to_out.0, residual.
  * The posterior: moments split into (mean, logvar) along channels, logvar clipped to [-30, 20].
  * All GroupNorms use `norm_eps` (diffusers hard-codes 1e-6), statistics in float32; activations in `cfg.dtype`.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus_jax.models import attention, layers
from janus_jax.models.configs import KLVAEConfig

_IMG_ACT = ("act_batch", None, None, None)
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def silu(x):
  """x * sigmoid(x) (torch `nn.SiLU`)."""
  return x * jax.nn.sigmoid(x)


def _dtypes(cfg: KLVAEConfig):
  """Conv / Dense keyword args: compute dtype, param dtype, matmul precision."""
  return layers.linear_args(cfg)


def _norm_dtypes(cfg: KLVAEConfig):
  return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


def _norm(cfg: KLVAEConfig, name: str):
  return layers.GroupNorm(cfg.norm_num_groups, cfg.norm_eps, name=name, **_norm_dtypes(cfg))


# ------------------------------------------------------------------------------------------------------------
# Blocks.
# ------------------------------------------------------------------------------------------------------------

class ResnetBlock2D(nn.Module):
  """float[B, H, W, Cin] -> float[B, H, W, features] (see the module docstring)."""
  cfg: KLVAEConfig
  features: int

  @nn.compact
  def __call__(self, x):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    h = silu(_norm(cfg, "norm1")(x))
    h = layers.Conv(self.features, 3, padding=1, name="conv1", **dt)(h)
    h = silu(_norm(cfg, "norm2")(h))
    h = layers.Conv(self.features, 3, padding=1, name="conv2", **dt)(h)
    if x.shape[-1] != self.features:
      x = layers.Conv(self.features, 1, name="conv_shortcut", **dt)(x)
    return x.astype(h.dtype) + h


class Attention(nn.Module):
  """Single-head spatial self-attention with Linear projections: float[B, H, W, C] -> float[B, H, W, C]."""
  cfg: KLVAEConfig

  @nn.compact
  def __call__(self, x):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    b, hh, ww, c = x.shape
    h = _norm(cfg, "group_norm")(x).reshape(b, hh * ww, c)
    proj = lambda name: layers.Dense(c, ("conv_in", "conv_out"), name=name, **dt)
    q, k, v = proj("to_q")(h), proj("to_k")(h), proj("to_v")(h)
    out = attention.dot_product_attention(q[:, :, None], k[:, :, None], v[:, :, None], None,
                                          precision=cfg.matmul_precision)[:, :, 0]
    out = proj("to_out_0")(out).reshape(b, hh, ww, c)
    return x.astype(out.dtype) + out


class Downsample2D(nn.Module):
  """Pad (0, 1) bottom / right, conv k3 s2 p0: float[B, H, W, C] -> float[B, H/2, W/2, C]."""
  cfg: KLVAEConfig

  @nn.compact
  def __call__(self, x):
    return layers.Conv(x.shape[-1], 3, strides=2, padding=((0, 1), (0, 1)), name="conv", **_dtypes(self.cfg))(x)


class Upsample2D(nn.Module):
  """Nearest x2, conv k3 p1: float[B, H, W, C] -> float[B, 2H, 2W, C]."""
  cfg: KLVAEConfig

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
    return layers.Conv(c, 3, padding=1, name="conv", **_dtypes(self.cfg))(x)


class UNetMidBlock2D(nn.Module):
  """resnets_0, attentions_0 (when `mid_block_attention`), resnets_1; channels unchanged."""
  cfg: KLVAEConfig

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = ResnetBlock2D(self.cfg, c, name="resnets_0")(x)
    if self.cfg.mid_block_attention:
      x = Attention(self.cfg, name="attentions_0")(x)
    return ResnetBlock2D(self.cfg, c, name="resnets_1")(x)


class ResampleBlock(nn.Module):
  """`DownEncoderBlock2D` / `UpDecoderBlock2D`: `num_layers` ResnetBlock2D (`resnets_J`), then an optional
  `downsamplers_0` / `upsamplers_0`."""
  cfg: KLVAEConfig
  features: int
  num_layers: int
  resample: str | None  # None, "down" or "up".

  @nn.compact
  def __call__(self, x):
    for j in range(self.num_layers):
      x = ResnetBlock2D(self.cfg, self.features, name=f"resnets_{j}")(x)
    if self.resample == "down":
      x = Downsample2D(self.cfg, name="downsamplers_0")(x)
    elif self.resample == "up":
      x = Upsample2D(self.cfg, name="upsamplers_0")(x)
    return x


class Encoder(nn.Module):
  """float[B, H, W, in_channels] -> moments float[B, H/f, W/f, 2 * latent_channels] (before quant_conv)."""
  cfg: KLVAEConfig

  @nn.compact
  def __call__(self, x):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    chans = cfg.block_out_channels
    x = layers.Conv(chans[0], 3, padding=1, name="conv_in", **dt)(x)
    for i, c in enumerate(chans):
      last = i == len(chans) - 1
      x = ResampleBlock(cfg, c, cfg.layers_per_block, None if last else "down", name=f"down_blocks_{i}")(x)
      x = layers.constrain(x, _IMG_ACT)
    x = UNetMidBlock2D(cfg, name="mid_block")(x)
    x = silu(_norm(cfg, "conv_norm_out")(x))
    return layers.Conv(2 * cfg.latent_channels, 3, padding=1, name="conv_out", **dt)(x)


class Decoder(nn.Module):
  """float[B, h, w, latent_channels] -> float[B, h*f, w*f, out_channels]."""
  cfg: KLVAEConfig

  @nn.compact
  def __call__(self, z):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    rev = tuple(reversed(cfg.block_out_channels))
    x = layers.Conv(rev[0], 3, padding=1, name="conv_in", **dt)(z)
    x = UNetMidBlock2D(cfg, name="mid_block")(x)
    for i, c in enumerate(rev):
      last = i == len(rev) - 1
      x = ResampleBlock(cfg, c, cfg.layers_per_block + 1, None if last else "up", name=f"up_blocks_{i}")(x)
      x = layers.constrain(x, _IMG_ACT)
    x = silu(_norm(cfg, "conv_norm_out")(x))
    return layers.Conv(cfg.out_channels, 3, padding=1, name="conv_out", **dt)(x)


# ------------------------------------------------------------------------------------------------------------
# Posterior and latent scaling (pure functions).
# ------------------------------------------------------------------------------------------------------------

def posterior_sample(mean, logvar, rng: jax.Array | None):
  """z = mean + exp(logvar / 2) * eps with eps ~ N(0, 1) (float32); `rng=None` returns the mode (the mean)."""
  mean = mean.astype(jnp.float32)
  if rng is None:
    return mean
  eps = jax.random.normal(rng, mean.shape, jnp.float32)
  return mean + jnp.exp(0.5 * logvar.astype(jnp.float32)) * eps


def kl_divergence(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, 1)) per latent element: float32 of the inputs' shape (diffusers sums it)."""
  mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
  return 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


def to_latent(cfg: KLVAEConfig, mean, logvar, rng: jax.Array | None = None):
  """Posterior (mean, logvar) -> scaled latent (z - shift_factor) * scaling_factor, float32.

  z is the posterior mean when `rng` is None, else a sample.
  """
  z = posterior_sample(mean, logvar, rng)
  return (z - cfg.shift_factor) * cfg.scaling_factor


def from_latent(cfg: KLVAEConfig, z_scaled):
  """Scaled latent -> VAE latent for `decode`: z_scaled / scaling_factor + shift_factor (float32)."""
  return z_scaled.astype(jnp.float32) / cfg.scaling_factor + cfg.shift_factor


# ------------------------------------------------------------------------------------------------------------
# The model.
# ------------------------------------------------------------------------------------------------------------

class AutoencoderKL(nn.Module):
  """diffusers-compatible KL autoencoder. `init` with images (`__call__`); other methods via `apply(method=...)`:

    encode(x)         -> (mean, logvar) float32[B, H/f, W/f, latent_channels]   logvar clipped to [-30, 20]
    decode(z)         -> images float[B, h*f, w*f, out_channels]               z unscaled
    encode_latent(x, rng=None) -> scaled latent float32 (`to_latent` of the posterior; mean when rng is None)
    decode_latent(z_scaled)    -> images (`decode(from_latent(z_scaled))`)
    __call__(x, rng=None, sample_posterior=False) -> (reconstruction, mean, logvar)
  """
  cfg: KLVAEConfig

  def setup(self):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    self.encoder = Encoder(cfg)
    self.decoder = Decoder(cfg)
    self.quant_conv = layers.Conv(2 * cfg.latent_channels, 1, **dt) if cfg.use_quant_conv else None
    self.post_quant_conv = layers.Conv(cfg.latent_channels, 1, **dt) if cfg.use_post_quant_conv else None

  def _check(self, x, channels: int, what: str, multiple: int):
    if x.ndim != 4 or x.shape[-1] != channels:
      raise ValueError(f"AutoencoderKL.{what} expects NHWC float[B, H, W, {channels}], got shape {tuple(x.shape)}. "
                       "Convert NCHW with x.transpose(0, 2, 3, 1).")
    h, w = x.shape[1:3]
    if h % multiple or w % multiple:
      raise ValueError(f"AutoencoderKL.{what}: size {h}x{w} is not divisible by {multiple} (the VAE downsamples by "
                       f"{self.cfg.downsample}); resize or pad the input.")

  def encode(self, x):
    """float[B, H, W, in_channels] in [-1, 1] -> (mean, logvar) float32[B, H/f, W/f, latent_channels]."""
    self._check(x, self.cfg.in_channels, "encode", self.cfg.downsample)
    x = layers.constrain(x.astype(jnp.dtype(self.cfg.dtype)), _IMG_ACT)
    moments = self.encoder(x)
    if self.quant_conv is not None:
      moments = self.quant_conv(moments)
    moments = moments.astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)

  def decode(self, z):
    """Unscaled latent float[B, h, w, latent_channels] -> images float[B, h*f, w*f, out_channels]."""
    self._check(z, self.cfg.latent_channels, "decode", 1)
    z = z.astype(jnp.dtype(self.cfg.dtype))
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return layers.constrain(self.decoder(z), _IMG_ACT)

  def encode_latent(self, x, rng: jax.Array | None = None):
    """Images -> scaled latent float32[B, H/f, W/f, latent_channels] (posterior mean when rng is None)."""
    mean, logvar = self.encode(x)
    return to_latent(self.cfg, mean, logvar, rng)

  def decode_latent(self, z_scaled):
    """Scaled latent (as the flow model produces it) -> images float[B, H, W, out_channels]."""
    return self.decode(from_latent(self.cfg, z_scaled))

  def __call__(self, x, rng: jax.Array | None = None, sample_posterior: bool = False):
    """float[B, H, W, C] -> (reconstruction float[B, H, W, out_channels], mean, logvar float32 latents).

    Decodes a posterior sample when `sample_posterior` (needs `rng`), else the posterior mean.
    """
    if sample_posterior and rng is None:
      raise ValueError("AutoencoderKL(sample_posterior=True) needs an `rng` key.")
    mean, logvar = self.encode(x)
    z = posterior_sample(mean, logvar, rng if sample_posterior else None)
    return self.decode(z), mean, logvar


def _dummy_images(cfg: KLVAEConfig):
  f = cfg.downsample
  return jnp.zeros((1, f, f, cfg.in_channels), jnp.float32)


@functools.lru_cache(maxsize=None)
def _jitted_init(cfg: KLVAEConfig):
  """One compiled init per config (eager init would compile every initializer op separately)."""
  model = AutoencoderKL(cfg)
  return jax.jit(lambda rng: model.init(rng, _dummy_images(cfg))["params"])


def init_vae_params(cfg: KLVAEConfig, rng: jax.Array, boxed: bool = False) -> Any:
  """Random-initialised params (plain nested dict; `boxed=True` keeps the logical-axis metadata boxes)."""
  params = _jitted_init(cfg)(rng)
  return params if boxed else nn.unbox(params)


def abstract_vae_params(cfg: KLVAEConfig, boxed: bool = False) -> Any:
  """Shapes and dtypes of every param (no memory, no compute): nested dict of jax.ShapeDtypeStruct."""
  return jax.eval_shape(lambda: init_vae_params(cfg, jax.random.PRNGKey(0), boxed=boxed))


def vae_param_count(cfg: KLVAEConfig) -> int:
  """Parameter count (83,653,863 for the SDXL-VAE default config)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_vae_params(cfg)))


__all__ = ["AutoencoderKL", "Encoder", "Decoder", "ResnetBlock2D", "Attention", "UNetMidBlock2D", "posterior_sample",
           "kl_divergence", "to_latent", "from_latent", "init_vae_params", "abstract_vae_params", "vae_param_count",
           "LOGVAR_MIN", "LOGVAR_MAX"]
