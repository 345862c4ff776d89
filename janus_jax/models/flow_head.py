"""The per-token flow head of generation mode `ar_continuous` (MAR's diffusion loss, with a rectified-flow target).

  FlowHead(cfg.cont, token_dim)(x_t float[M, P], t float[M], cond float[M, W]) -> velocity float32[M, P]

One token at a time: `x_t` is the token (a KL-VAE latent patch, P = patch_size^2 * latent_channels) at flow time t
(0 = noise, 1 = data), `cond` the LLM's hidden state at the position that predicts it, mapped to the head width W.
The head is `head_depth` residual blocks (LayerNorm without affine, AdaLN shift / scale / gate from cond + time
embedding, a SiLU MLP) and an AdaLN output layer; the modulations and the output start at zero (DiT's adaLN-Zero),
so at initialisation the head predicts zero velocity.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus_jax.models import layers
from janus_jax.models.configs import ContinuousConfig
from janus_jax.models.uvit import timestep_embedding

# The flow time t in [0, 1] enters the sinusoidal embedding as t * TIME_SCALE (as JanusFlow's).
TIME_SCALE = 1000.0


def _norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """LayerNorm over the last axis without learned scale / bias (statistics in float32)."""
  xf = x.astype(jnp.float32)
  mean = xf.mean(-1, keepdims=True)
  var = jnp.square(xf - mean).mean(-1, keepdims=True)
  return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class FlowHead(nn.Module):
  """Velocity of one continuous token given the LLM's condition (see the module docstring)."""
  cfg: ContinuousConfig
  token_dim: int

  @nn.compact
  def __call__(self, x_t: jax.Array, t: jax.Array, cond: jax.Array) -> jax.Array:
    c = self.cfg
    w = c.head_width
    dt = jnp.dtype(c.dtype)
    dense = lambda n, name, init=nn.initializers.lecun_normal(): layers.Dense(  # pylint: disable=unnecessary-lambda-assignment
        n, (None, None), kernel_init=init, name=name, **layers.linear_args(c))
    zeros = nn.initializers.zeros_init()
    h = dense(w, "input_proj")(x_t)
    temb = timestep_embedding(jnp.reshape(t, (-1,)) * TIME_SCALE, w).astype(dt)
    temb = dense(w, "time_embed_2")(nn.silu(dense(w, "time_embed_1")(temb)))
    temb = jnp.reshape(temb, cond.shape[:-1] + (w,))
    y = nn.silu(cond.astype(dt) + temb)
    for i in range(c.head_depth):
      shift, scale, gate = jnp.split(dense(3 * w, f"block_{i}_modulation", zeros)(y), 3, axis=-1)
      u = _norm(h) * (1.0 + scale) + shift
      u = dense(w, f"block_{i}_mlp_2")(nn.silu(dense(w, f"block_{i}_mlp_1")(u)))
      h = h + gate * u
    shift, scale = jnp.split(dense(2 * w, "final_modulation", zeros)(y), 2, axis=-1)
    out = dense(self.token_dim, "output_proj", zeros)(_norm(h) * (1.0 + scale) + shift)
    return out.astype(jnp.float32)


__all__ = ["FlowHead", "TIME_SCALE"]
