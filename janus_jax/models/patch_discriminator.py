"""PatchGAN discriminator for the optional adversarial term of image-tokenizer training.

The taming-transformers / LlamaGen `NLayerDiscriminator` layout at a configurable width and depth: 4x4 convs,
stride 2 except the last hidden one, LeakyReLU(0.2), GroupNorm instead of BatchNorm (no batch statistics to carry
in a pure-functional step). float[B, H, W, 3] in [-1, 1] -> float32[B, H', W'] real-vs-fake logits, one per patch.
Training-only: it is not part of any released checkpoint.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from janus_jax.models import layers


class PatchDiscriminator(nn.Module):
  channels: int = 64
  num_layers: int = 3
  num_groups: int = 8

  @nn.compact
  def __call__(self, x):
    h = nn.leaky_relu(layers.Conv(self.channels, 4, strides=2, padding=1, name="conv_in")(x), 0.2)
    for i in range(1, self.num_layers):
      stride = 2 if i < self.num_layers - 1 else 1
      h = layers.Conv(self.channels * min(2 ** i, 8), 4, strides=stride, padding=1, use_bias=False,
                      name=f"conv_{i}")(h)
      h = nn.leaky_relu(layers.GroupNorm(self.num_groups, 1e-5, name=f"norm_{i}")(h), 0.2)
    return layers.Conv(1, 4, padding=1, name="conv_out")(h)[..., 0].astype(jnp.float32)
