"""LlamaGen VQ-16 image tokenizer (`vq_ds16`), as shipped with Janus as `gen_vision_model`.

Images are NHWC float in [-1, 1]; a 384x384 image becomes a 24x24 grid of codes in [0, codebook_size).

Param tree (mirrors the DeepSeek keys under `gen_vision_model.`; torch `name.N` is Linen `name_N`):
  encoder/conv_in                                     conv k3, 3 -> base
  encoder/conv_blocks_I/res_J/{norm1,conv1,norm2,conv2,nin_shortcut?}
  encoder/conv_blocks_I/attn_J/{norm,q,k,v,proj_out}  last (lowest-resolution) level only
  encoder/conv_blocks_I/downsample/conv               every level but the last
  encoder/mid_{0,1,2}                                 Res, Attn, Res
  encoder/{norm_out,conv_out}                         conv_out -> z_channels
  quant_conv                                          1x1, z_channels -> codebook_dim
  quantize/embedding/embedding                        codebook float[codebook_size, codebook_dim]
  post_quant_conv                                     1x1, codebook_dim -> z_channels
  decoder/{conv_in, mid_{0,1,2}, norm_out, conv_out}
  decoder/conv_blocks_I/{res_J, attn_J, upsample/conv}  I = 0 is the lowest resolution (reversed levels)
The checkpoint's `quantize.codebook_used` buffer (usage history, never read at inference) is not built.

Numerics follow the official module (janus/models/vq_model.py):
  * The quantizer L2-normalises both z and the codebook (torch `F.normalize`, eps 1e-12) and picks the argmin
    of the squared Euclidean distance; z_q comes from the normalised codebook. Note that transformers'
    `JanusVQVAE.encode` skips this normalisation and so returns different codes; its decode does normalise.
  * Train-mode losses are computed on the normalised tensors: codebook = mean((z_q - sg(z))^2),
    commit = beta * mean((sg(z_q) - z)^2); the entropy term has weight 0 in the shipped config and is omitted.
  * The quantizer, its distances and its losses run in float32 whatever the compute dtype.
  * Upsample quirk: the original code interpolates any non-fp32 input in fp32 and casts the result to bfloat16
    (whatever the input dtype). Nearest x2 is exact, so for fp32 and bf16 compute this equals a plain nearest x2
    in the compute dtype, which is what we do (only an fp16 run would differ: the reference silently switches
    to bf16 there).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from janus_jax.models import attention, layers
from janus_jax.models.configs import VQConfig

_HIGHEST = jax.lax.Precision.HIGHEST
_IMG_ACT = ("act_batch", None, None, None)


# ------------------------------------------------------------------------------------------------------------
# Pure helpers (jit-friendly).
# ------------------------------------------------------------------------------------------------------------

def swish(x):
  """x * sigmoid(x)."""
  return x * jax.nn.sigmoid(x)


def l2_normalize(x, axis: int = -1, eps: float = 1e-12):
  """torch `F.normalize(x, p=2, dim=axis)`: x / max(||x||, eps)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


def nearest_codes(z, codebook):
  """Nearest-code search as the official quantizer does it (no normalisation here; pass normalised inputs).

  Args:
    z: float[..., D] query vectors.
    codebook: float[K, D].
  Returns:
    int32[...] argmin over k of ||z - codebook[k]||^2 (computed as |z|^2 + |e|^2 - 2 z.e, float32).
  """
  z = z.astype(jnp.float32)
  e = codebook.astype(jnp.float32)
  d = (jnp.sum(jnp.square(z), axis=-1, keepdims=True) + jnp.sum(jnp.square(e), axis=-1)
       - 2.0 * jnp.einsum("...d,kd->...k", z, e, precision=_HIGHEST))
  return jnp.argmin(d, axis=-1).astype(jnp.int32)


def codebook_stats(codes, codebook_size: int) -> dict[str, jax.Array]:
  """Usage statistics of a batch of codes (no gradient).

  Returns:
    perplexity: exp(entropy) of the batch's code histogram (1 = one code, codebook_size = uniform).
    codebook_usage: fraction of the codebook used at least once in this batch.
  """
  counts = jnp.bincount(codes.reshape(-1), length=codebook_size).astype(jnp.float32)
  p = counts / jnp.maximum(counts.sum(), 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return {"perplexity": jnp.exp(entropy), "codebook_usage": jnp.mean((counts > 0).astype(jnp.float32))}


def _concrete(x) -> np.ndarray | None:
  """The value of `x` as numpy when it is concrete, None while tracing (under jit)."""
  if isinstance(x, jax.core.Tracer):
    return None
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _dtypes(cfg: VQConfig):
  """Conv / Dense keyword args: compute dtype, param dtype, matmul precision."""
  return layers.linear_args(cfg)


def _norm_dtypes(cfg: VQConfig):
  return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))


# ------------------------------------------------------------------------------------------------------------
# Blocks.
# ------------------------------------------------------------------------------------------------------------

class ResnetBlock(nn.Module):
  """norm1, swish, conv1 (k3), norm2, swish, conv2 (k3) + skip (1x1 `nin_shortcut` when channels change).

  float[B, H, W, Cin] -> float[B, H, W, features]. Dropout is 0 in the shipped config and is not built.
  """
  cfg: VQConfig
  features: int

  @nn.compact
  def __call__(self, x):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    gn = lambda name: layers.GroupNorm(cfg.num_groups, cfg.norm_eps, name=name, **_norm_dtypes(cfg))
    h = swish(gn("norm1")(x))
    h = layers.Conv(self.features, 3, padding=1, name="conv1", **dt)(h)
    h = swish(gn("norm2")(h))
    h = layers.Conv(self.features, 3, padding=1, name="conv2", **dt)(h)
    if x.shape[-1] != self.features:
      x = layers.Conv(self.features, 1, name="nin_shortcut", **dt)(x)
    return x.astype(h.dtype) + h


class AttnBlock(nn.Module):
  """Single-head spatial self-attention with 1x1-conv q/k/v/proj_out and a residual.

  float[B, H, W, C] -> float[B, H, W, C]; scores over the H*W positions, scaled by C^-0.5, softmax in float32.
  """
  cfg: VQConfig

  @nn.compact
  def __call__(self, x):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    b, hh, ww, c = x.shape
    h = layers.GroupNorm(cfg.num_groups, cfg.norm_eps, name="norm", **_norm_dtypes(cfg))(x)
    q, k, v = (layers.Conv(c, 1, name=n, **dt)(h).reshape(b, hh * ww, c) for n in ("q", "k", "v"))
    out = attention.dot_product_attention(q[:, :, None], k[:, :, None], v[:, :, None], None,
                                          precision=cfg.matmul_precision).reshape(b, hh, ww, c)
    return x.astype(out.dtype) + layers.Conv(c, 1, name="proj_out", **dt)(out)


class Downsample(nn.Module):
  """Zero-pad one row/column at the bottom/right, then conv k3 s2 p0: float[B, H, W, C] -> [B, H/2, W/2, C]."""
  cfg: VQConfig

  @nn.compact
  def __call__(self, x):
    return layers.Conv(x.shape[-1], 3, strides=2, padding=((0, 1), (0, 1)), name="conv",
                       **_dtypes(self.cfg))(x)


class Upsample(nn.Module):
  """Nearest x2 (in the compute dtype; see the module docstring), then conv k3 p1: [B, H, W, C] -> [B, 2H, 2W, C]."""
  cfg: VQConfig

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return layers.Conv(x.shape[-1], 3, padding=1, name="conv", **_dtypes(self.cfg))(x)


class Level(nn.Module):
  """One resolution level (`conv_blocks.I`): `num_res` ResnetBlocks (`res_J`), each followed by an AttnBlock
  (`attn_J`) when `attn`, then an optional `downsample` / `upsample`."""
  cfg: VQConfig
  features: int
  num_res: int
  attn: bool
  resample: str | None  # None, "down" or "up".

  @nn.compact
  def __call__(self, x):
    for j in range(self.num_res):
      x = ResnetBlock(self.cfg, self.features, name=f"res_{j}")(x)
      if self.attn:
        x = AttnBlock(self.cfg, name=f"attn_{j}")(x)
    if self.resample == "down":
      x = Downsample(self.cfg, name="downsample")(x)
    elif self.resample == "up":
      x = Upsample(self.cfg, name="upsample")(x)
    return x


def _mid(cfg: VQConfig, x, channels: int, attention: bool = True):
  """mid.{0,1,2}: Res, Attn, Res (called inside a compact module so the names attach to it); without
  `attention`, Res, Res (mid_0, mid_2)."""
  x = ResnetBlock(cfg, channels, name="mid_0")(x)
  if attention:
    x = AttnBlock(cfg, name="mid_1")(x)
  return ResnetBlock(cfg, channels, name="mid_2")(x)


class Encoder(nn.Module):
  """float[B, H, W, 3] -> float[B, H/f, W/f, z_channels], f = 2^(len(channel_mult) - 1)."""
  cfg: VQConfig

  @nn.compact
  def __call__(self, x):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    n = len(cfg.channel_mult)
    x = layers.Conv(cfg.base_channels, 3, padding=1, name="conv_in", **dt)(x)
    for i, mult in enumerate(cfg.channel_mult):
      last = i == n - 1
      x = Level(cfg, cfg.base_channels * mult, cfg.num_res_blocks, attn=last and cfg.encoder_attention,
                resample=None if last else "down", name=f"conv_blocks_{i}")(x)
      x = layers.constrain(x, _IMG_ACT)
    x = _mid(cfg, x, x.shape[-1], cfg.encoder_attention)
    x = swish(layers.GroupNorm(cfg.num_groups, cfg.norm_eps, name="norm_out", **_norm_dtypes(cfg))(x))
    return layers.Conv(cfg.z_channels, 3, padding=1, name="conv_out", **dt)(x)


class Decoder(nn.Module):
  """float[B, h, w, z_channels] -> float[B, h*f, w*f, 3]. Level I = 0 is the lowest resolution."""
  cfg: VQConfig

  @nn.compact
  def __call__(self, x):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    n = len(cfg.channel_mult)
    top = cfg.base_channels * cfg.channel_mult[-1]
    x = layers.Conv(top, 3, padding=1, name="conv_in", **dt)(x)
    x = _mid(cfg, x, top)
    for i, mult in enumerate(reversed(cfg.channel_mult)):
      x = Level(cfg, cfg.base_channels * mult, cfg.num_res_blocks + 1, attn=i == 0,
                resample=None if i == n - 1 else "up", name=f"conv_blocks_{i}")(x)
      x = layers.constrain(x, _IMG_ACT)
    x = swish(layers.GroupNorm(cfg.num_groups, cfg.norm_eps, name="norm_out", **_norm_dtypes(cfg))(x))
    return layers.Conv(3, 3, padding=1, name="conv_out", **dt)(x)


# ------------------------------------------------------------------------------------------------------------
# Quantizer.
# ------------------------------------------------------------------------------------------------------------

def _codebook_init(l2_norm: bool):
  """Official init: uniform(-1/K, 1/K), then L2-normalised rows when `l2_norm`."""
  def init(key, shape, dtype=jnp.float32):
    e = jax.random.uniform(key, shape, jnp.float32, -1.0 / shape[0], 1.0 / shape[0])
    return (l2_normalize(e) if l2_norm else e).astype(dtype)
  return init


class Codebook(nn.Module):
  """Holds the raw codebook float[codebook_size, codebook_dim] (torch `quantize.embedding.weight`)."""
  cfg: VQConfig

  @nn.compact
  def __call__(self):
    init = _codebook_init(self.cfg.codebook_l2_norm)
    return self.param("embedding", layers.names(init, ("codebook", "codebook_dim")),
                      (self.cfg.codebook_size, self.cfg.codebook_dim), jnp.dtype(self.cfg.param_dtype))


class VectorQuantizer(nn.Module):
  """L2-normalised nearest-code quantizer with a straight-through estimator (all in float32)."""
  cfg: VQConfig

  def setup(self):
    self.embedding = Codebook(self.cfg)

  def codebook(self):
    """The codebook used for lookups: float32[K, D], L2-normalised rows when `codebook_l2_norm`."""
    e = self.embedding().astype(jnp.float32)
    return l2_normalize(e) if self.cfg.codebook_l2_norm else e

  def __call__(self, z):
    """float[B, h, w, D] -> (z_q float32[B, h, w, D], codes int32[B, h, w], aux dict of float32 scalars).

    z_q carries the straight-through gradient to (normalised) z; aux has `codebook_loss`, `commit_loss`,
    `quant_loss` (their sum), `perplexity` and `codebook_usage` (batch statistics, no gradient).
    """
    z = z.astype(jnp.float32)
    emb = self.codebook()
    if self.cfg.codebook_l2_norm:
      z = l2_normalize(z)
    codes = nearest_codes(z, emb)
    z_q = jnp.take(emb, codes, axis=0)
    sg = jax.lax.stop_gradient
    codebook_loss = jnp.mean(jnp.square(z_q - sg(z)))
    commit_loss = self.cfg.commit_beta * jnp.mean(jnp.square(sg(z_q) - z))
    aux = {"codebook_loss": codebook_loss, "commit_loss": commit_loss, "quant_loss": codebook_loss + commit_loss}
    aux.update(jax.tree.map(sg, codebook_stats(codes, self.cfg.codebook_size)))
    return z + sg(z_q - z), codes, aux

  def lookup(self, codes):
    """int[...] -> float32[..., D] entries of the (normalised) codebook. Out-of-range codes give NaN (under jit
    no error can be raised; eager callers are checked in `VQModel.decode_code`)."""
    emb = self.codebook()
    n = self.cfg.codebook_size
    valid = (codes >= 0) & (codes < n)
    z_q = jnp.take(emb, jnp.clip(codes, 0, n - 1), axis=0)
    return jnp.where(valid[..., None], z_q, jnp.nan)


# ------------------------------------------------------------------------------------------------------------
# The model.
# ------------------------------------------------------------------------------------------------------------

class VQModel(nn.Module):
  """VQ-16 tokenizer. `init` with images (`__call__`); use the other methods via `apply(..., method=...)`:

    encode_features(images) -> float32[B, h, w, D]          pre-quantisation features (quant_conv output)
    encode(images)          -> (z_q, codes int32[B, h, w], aux)
    decode(z_q)             -> images float[B, H, W, 3]
    decode_code(codes, grid=None) -> images float[B, H, W, 3]   codes int[B, h*w] (raster order) or int[B, h, w]
    __call__(images)        -> (recon, codes, aux)             reconstruction, for tokenizer training
  """
  cfg: VQConfig

  def setup(self):
    cfg, dt = self.cfg, _dtypes(self.cfg)
    self.encoder = Encoder(cfg)
    self.quant_conv = layers.Conv(cfg.codebook_dim, 1, **dt)
    self.quantize = VectorQuantizer(cfg)
    self.post_quant_conv = layers.Conv(cfg.z_channels, 1, **dt)
    self.decoder = Decoder(cfg)

  def _check_images(self, images):
    f = self.cfg.downsample
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"VQModel expects NHWC RGB images float[B, H, W, 3] in [-1, 1], got shape "
                       f"{tuple(images.shape)}. Convert NCHW with x.transpose(0, 2, 3, 1) and drop any alpha channel.")
    h, w = images.shape[1:3]
    if h % f or w % f:
      raise ValueError(f"Image size {h}x{w} is not divisible by the VQ downsample factor {f}; resize or pad the "
                       f"image to a multiple of {f} px (Janus uses 384x384 -> a 24x24 token grid).")

  def encode_features(self, images):
    """float[B, H, W, 3] in [-1, 1] -> float32[B, H/f, W/f, codebook_dim] (encoder + quant_conv, unnormalised)."""
    self._check_images(images)
    x = layers.constrain(images, _IMG_ACT)
    return self.quant_conv(self.encoder(x)).astype(jnp.float32)

  def encode(self, images):
    """float[B, H, W, 3] -> (z_q float32[B, h, w, D] (straight-through), codes int32[B, h, w], aux dict)."""
    return self.quantize(self.encode_features(images))

  def decode(self, z_q):
    """float[B, h, w, codebook_dim] -> images float[B, h*f, w*f, 3] (approximately in [-1, 1])."""
    if z_q.ndim != 4 or z_q.shape[-1] != self.cfg.codebook_dim:
      raise ValueError(f"VQModel.decode expects quantised latents float[B, h, w, {self.cfg.codebook_dim}], got "
                       f"shape {tuple(z_q.shape)}; to decode token ids use `decode_code`.")
    x = self.post_quant_conv(z_q.astype(jnp.dtype(self.cfg.dtype)))
    return layers.constrain(self.decoder(x), _IMG_ACT)

  def decode_code(self, codes, grid: int | None = None):
    """int[B, h*w] (raster order: token k is row k // w, col k % w) or int[B, h, w] -> images float[B, H, W, 3].

    `grid` is the side of a square token grid; None infers it from a square number of tokens.
    """
    codes = jnp.asarray(codes)
    if not jnp.issubdtype(codes.dtype, jnp.integer):
      raise ValueError(f"decode_code expects integer token ids, got dtype {codes.dtype}.")
    if codes.ndim == 2:
      n = codes.shape[1]
      side = grid if grid is not None else math.isqrt(n)
      if side * side != n:
        raise ValueError(f"decode_code got {n} tokens per image, which is not a square grid"
                         + (f" of side grid={grid}" if grid is not None else "")
                         + "; pass codes as int[B, h, w] or a matching `grid`.")
      codes = codes.reshape(codes.shape[0], side, side)
    elif codes.ndim == 3:
      if grid is not None and codes.shape[1:] != (grid, grid):
        raise ValueError(f"decode_code got a {codes.shape[1]}x{codes.shape[2]} code grid but grid={grid}.")
    else:
      raise ValueError(f"decode_code expects codes int[B, h*w] or int[B, h, w], got shape {tuple(codes.shape)}.")
    vals = _concrete(codes)
    k = self.cfg.codebook_size
    if vals is not None and vals.size and (vals.min() < 0 or vals.max() >= k):
      raise ValueError(f"VQ codes must lie in [0, {k}) (codebook_size={k}); got values in "
                       f"[{int(vals.min())}, {int(vals.max())}]. Image-token ids from the LLM head index the VQ "
                       "codebook directly; do not add a text-vocabulary offset.")
    return self.decode(self.quantize.lookup(codes))

  def __call__(self, images):
    """float[B, H, W, 3] -> (reconstruction float[B, H, W, 3], codes int32[B, h, w], aux dict)."""
    z_q, codes, aux = self.encode(images)
    return self.decode(z_q), codes, aux


def abstract_params(cfg: VQConfig) -> Any:
  """Boxed abstract params (ShapeDtypeStructs with logical names) without allocating anything."""
  f = cfg.downsample
  images = jax.ShapeDtypeStruct((1, f, f, 3), jnp.float32)
  return jax.eval_shape(VQModel(cfg).init, jax.random.key(0), images)["params"]


def num_params(cfg: VQConfig) -> int:
  """Parameter count (71,883,403 for the shipped VQ-16 config)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(abstract_params(cfg))))


__all__ = ["VQModel", "VectorQuantizer", "Encoder", "Decoder", "ResnetBlock", "AttnBlock", "l2_normalize",
           "nearest_codes", "codebook_stats", "abstract_params", "num_params", "swish"]
