"""Projectors between encoders and the LLM, and the image-token head.

* `Aligner` (DeepSeek `MlpProjector`): `mlp_gelu` = Sequential(Linear, GELU, Linear, ...) with children
  `layers_0`, `layers_2`, ... (torch Sequential indices; GELU takes the odd ones), or `linear` = one bare Linear
  whose `kernel`/`bias` live directly in the module (JanusFlow's `vision_und_enc_aligner`).
* `GenHead` (DeepSeek `vision_head`): `output_mlp_projector` -> GELU -> `vision_head` logits over the image vocab.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus_jax import precision as precision_lib
from janus_jax.models import layers
from janus_jax.models.configs import AlignerConfig, GenHeadConfig

ALIGNER_KINDS = ("mlp_gelu", "linear")


def _constrain_last(x: jax.Array, last: str) -> jax.Array:
  """Constrains float[..., F] as (act_batch, [act_seq,] last); other ranks are left alone."""
  if x.ndim == 3:
    return layers.constrain(x, ("act_batch", "act_seq", last))
  if x.ndim == 2:
    return layers.constrain(x, ("act_batch", last))
  return x


def _mlp_axes(depth: int) -> list[tuple[str | None, str]]:
  """Kernel logical names per Linear: the input of the first is replicated, outputs alternate so the last is
  `embed` (the LLM residual width); e.g. depth 2 -> [(None, 'mlp'), ('mlp', 'embed')]."""
  outs = ["embed" if (depth - 1 - j) % 2 == 0 else "mlp" for j in range(depth)]
  return [(None if j == 0 else outs[j - 1], outs[j]) for j in range(depth)]


class Aligner(nn.Module):
  """Encoder features float[..., input_dim] -> LLM embeddings float[..., output_dim]."""
  cfg: AlignerConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    if x.shape[-1] != cfg.input_dim:
      raise ValueError(f"Aligner expects features with last dim input_dim={cfg.input_dim}, got shape "
                       f"{tuple(x.shape)}. Check that the aligner config matches the encoder width.")
    if cfg.kind == "linear":
      y = self._linear(x, dtype, pdtype)
    elif cfg.kind == "mlp_gelu":
      if cfg.depth < 1:
        raise ValueError(f"Aligner kind 'mlp_gelu' needs depth >= 1, got depth={cfg.depth}.")
      y = x
      for j, axes in enumerate(_mlp_axes(cfg.depth)):
        if j:
          y = layers.gelu(y)
        y = layers.Dense(cfg.output_dim, axes, name=f"layers_{2 * j}", **layers.linear_args(cfg))(y)
    else:
      raise ValueError(f"Unknown aligner kind {cfg.kind!r}; valid kinds: {list(ALIGNER_KINDS)}.")
    return _constrain_last(y, "act_embed")

  def _linear(self, x, dtype, pdtype):
    """A bare Linear with `kernel` float[input_dim, output_dim] and `bias` in this module itself."""
    cfg = self.cfg
    kernel = self.param("kernel", layers.names(nn.initializers.lecun_normal(), (None, "embed")),
                        (cfg.input_dim, cfg.output_dim), pdtype)
    bias = self.param("bias", layers.names(nn.initializers.zeros_init(), ("embed",)), (cfg.output_dim,), pdtype)
    y = jnp.einsum("...i,io->...o", x.astype(dtype), kernel.astype(dtype), precision=precision_lib.lax_precision(cfg.matmul_precision))
    return y + bias.astype(dtype)


class GenHead(nn.Module):
  """LLM hidden states float[..., n_embed] -> image-token logits float[..., image_token_size]."""
  cfg: GenHeadConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    if x.shape[-1] != cfg.n_embed:
      raise ValueError(f"GenHead expects hidden states with last dim n_embed={cfg.n_embed}, got shape "
                       f"{tuple(x.shape)}.")
    h = layers.Dense(cfg.image_token_embed, ("embed", "mlp"), name="output_mlp_projector",
                     **layers.linear_args(cfg))(x)
    h = _constrain_last(layers.gelu(h), "act_mlp")
    logits = layers.Dense(cfg.image_token_size, ("mlp", "image_vocab"), name="vision_head", out_dtype=jnp.float32,
                          **layers.linear_args(cfg))(h)
    return _constrain_last(logits, "act_vocab")


__all__ = ["Aligner", "GenHead", "ALIGNER_KINDS"]
