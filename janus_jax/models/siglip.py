"""SigLIP-L/16-384 understanding encoder, as shipped with Janus (timm `VisionTransformer`, no pooling head).

Param tree (mirrors the DeepSeek keys under `vision_model.`):
  vision_tower/patch_embed/proj/{kernel, bias}     conv patchify, kernel = stride = patch_size
  vision_tower/pos_embed                           float[1, N, width], added after patchify (no class token)
  vision_tower/blocks/...  (scanned, leading `layers` axis)  or  vision_tower/blocks_0/... (unrolled)
      norm1, attn/qkv, attn/proj, norm2, mlp/fc1, mlp/fc2
  vision_tower/norm                                final LayerNorm (applied; Janus uses post-norm features)
The checkpoint's `attn_pool` weights are never run and are not built.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from janus_jax.models import attention, layers
from janus_jax.models.configs import SiglipConfig
from janus_jax.models.uvit import timestep_embedding

_ACT = ("act_batch", "act_seq", "act_embed")


class Attention(nn.Module):
  """Unmasked multi-head self-attention with a fused `qkv` projection: float[B, N, W] -> float[B, N, W]."""
  cfg: SiglipConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    b, n, w = x.shape
    if w % cfg.num_heads:
      raise ValueError(f"SigLIP width {w} is not divisible by num_heads={cfg.num_heads}.")
    hd = w // cfg.num_heads
    qkv = layers.Dense(3 * w, ("embed", "qkv"), name="qkv", **layers.linear_args(cfg))(x)
    # Column layout of the fused projection (torch rows): [q | k | v], each head-major.
    qkv = qkv.reshape(b, n, 3, cfg.num_heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q = layers.constrain(q, ("act_batch", "act_seq", "act_heads", None))
    k = layers.constrain(k, ("act_batch", "act_kv_seq", "act_heads", None))
    v = layers.constrain(v, ("act_batch", "act_kv_seq", "act_heads", None))
    out = attention.dot_product_attention(q, k, v, None, precision=cfg.matmul_precision).reshape(b, n, w)
    return layers.Dense(w, ("heads", "embed"), name="proj", **layers.linear_args(cfg))(out)


class Mlp(nn.Module):
  """timm Mlp: fc1 -> exact GELU -> fc2, float[B, N, W] -> float[B, N, W]."""
  cfg: SiglipConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    h = layers.Dense(cfg.mlp_dim, ("embed", "mlp"), name="fc1", **layers.linear_args(cfg))(x)
    h = layers.constrain(layers.gelu(h), ("act_batch", "act_seq", "act_mlp"))
    return layers.Dense(cfg.width, ("mlp", "embed"), name="fc2", **layers.linear_args(cfg))(h)


class Block(nn.Module):
  """Pre-LN transformer block `x += attn(norm1(x)); x += mlp(norm2(x))`.

  Scan-compatible: float[B, N, W] -> (float[B, N, W], None).
  """
  cfg: SiglipConfig

  @nn.compact
  def __call__(self, x, _=None):
    cfg = self.cfg
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    norm = lambda name: layers.LayerNorm(eps=cfg.layer_norm_eps, dtype=dtype, param_dtype=pdtype, name=name)
    x = x + Attention(cfg, name="attn")(norm("norm1")(x))
    x = x + Mlp(cfg, name="mlp")(norm("norm2")(x))
    return layers.constrain(x, _ACT), None


class PatchEmbed(nn.Module):
  """Non-overlapping conv patchify (with bias): float[B, H, W, 3] -> float[B, (H/p)*(W/p), width], raster order."""
  cfg: SiglipConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    y = layers.Conv(cfg.width, cfg.patch_size, strides=cfg.patch_size, padding=0, name="proj",
                    **layers.linear_args(cfg))(x)
    b, h, w, c = y.shape
    return y.reshape(b, h * w, c)


def sincos2d_pos_embed(grid: int, width: int) -> jnp.ndarray:
  """The 2-D sine-cosine position table float[1, grid*grid, width] in patch raster order (row-major): the
  sinusoidal embedding (`uvit.timestep_embedding`, width/2 channels) of each patch's column, then of its row."""
  if width % 4:
    raise ValueError(f"pos_embed_init='sincos2d' needs a vision width divisible by 4, got {width}; "
                     "use pos_embed_init='normal' or a width that is a multiple of 4.")
  rows, cols = jnp.divmod(jnp.arange(grid * grid), grid)
  return jnp.concatenate([timestep_embedding(cols, width // 2), timestep_embedding(rows, width // 2)], axis=1)[None]


def _pos_embed_init(kind: str, grid: int):
  """The pos_embed initializer for `SiglipConfig.pos_embed_init`."""
  if kind == "normal":
    return nn.initializers.normal(0.02)
  if kind == "sincos2d":
    return lambda _, shape, dtype=jnp.float32: sincos2d_pos_embed(grid, shape[-1]).astype(dtype)
  raise ValueError(f"Unknown vision pos_embed_init={kind!r}; valid: 'normal', 'sincos2d'.")


class VisionTransformer(nn.Module):
  """The timm ViT trunk: patchify + pos_embed, `cfg.num_blocks` blocks, final LayerNorm."""
  cfg: SiglipConfig

  @nn.compact
  def __call__(self, images):
    cfg = self.cfg
    if cfg.num_blocks < 1:
      raise ValueError(f"SigLIP select_layer={cfg.select_layer} with depth={cfg.depth} leaves no transformer block; "
                       "use -1 (all blocks, the shipped Janus setting) or a value in [-depth, depth].")
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    x = PatchEmbed(cfg, name="patch_embed")(images)
    pos_init = _pos_embed_init(cfg.pos_embed_init, cfg.image_size // cfg.patch_size)
    pos = self.param("pos_embed", layers.names(pos_init, (None, "pos", "embed")),
                     (1, cfg.num_patches, cfg.width), pdtype)
    x = layers.constrain(x + pos.astype(dtype), _ACT)

    policy = layers.remat_policy(cfg.remat_policy)
    block_cls = Block
    if policy is not None:
      block_cls = nn.remat(Block, policy=policy, prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                      length=cfg.num_blocks, metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(cfg, name="blocks")(x)
    else:
      for i in range(cfg.num_blocks):
        x, _ = block_cls(cfg, name=f"blocks_{i}")(x)

    x = layers.LayerNorm(eps=cfg.layer_norm_eps, dtype=dtype, param_dtype=pdtype, name="norm")(x)
    return layers.constrain(x, _ACT)


class SiglipVisionTower(nn.Module):
  """Janus `CLIPVisionTower` for SigLIP: images float[B, S, S, 3] (NHWC, in [-1, 1]) -> float[B, N, width].

  N = (S / patch_size)^2 features after the final LayerNorm. Instantiated by the unified model as `vision_model`;
  its only child is `vision_tower`, so param paths equal the DeepSeek `vision_model.vision_tower.*` keys.
  """
  cfg: SiglipConfig

  @nn.compact
  def __call__(self, images):
    cfg = self.cfg
    want = ("B", cfg.image_size, cfg.image_size, 3)
    if images.ndim != 4 or tuple(images.shape[1:]) != want[1:]:
      raise ValueError(
          f"SiglipVisionTower expects NHWC images of shape [B, {cfg.image_size}, {cfg.image_size}, 3] in [-1, 1], "
          f"got shape {tuple(images.shape)}. Resize/pad to {cfg.image_size}x{cfg.image_size} with the image "
          "processor, and transpose torch-style NCHW input with `x.transpose(0, 2, 3, 1)`.")
    if cfg.image_size % cfg.patch_size:
      raise ValueError(f"image_size={cfg.image_size} is not a multiple of patch_size={cfg.patch_size}.")
    return VisionTransformer(cfg, name="vision_tower")(images)


__all__ = ["SiglipVisionTower", "VisionTransformer", "Block", "Attention", "Mlp", "PatchEmbed"]
