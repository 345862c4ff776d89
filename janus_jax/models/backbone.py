"""The part every generation mode's model shares: understanding inputs, the LLaMA decoder and the text head.

`Backbone` is the Linen base class of `JanusModel` (ar_vq) and `JanusFlowModel` (flow). A subclass builds, in its
`setup`, the LLM as `language_model` and its understanding path behind `image_features` (pixels -> aligned
features, under the param names of its checkpoints); the methods here are written once:
  embed_text        int[B, T] -> float[B, T, D]
  embed_multimodal  ids + understanding images -> float[B, T, D] (features scattered into the image slots)
  text_logits       float[..., D] -> float32[..., vocab]
  llm               the decoder stack (optionally with a KV cache)
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus_jax.models.configs import JanusConfig
from janus_jax.models.llama import KVCache


def scatter_image_features(text_embeds: jax.Array, image_seq_mask: jax.Array, features: jax.Array) -> jax.Array:
  """Places image features at the `<image_placeholder>` positions, in order, row by row.

  Args:
    text_embeds: float[B, T, D] token embeddings.
    image_seq_mask: bool[B, T], True where an image feature goes.
    features: float[B, M, D] the row's image features concatenated in image order (M >= number of True).
  Returns:
    float[B, T, D]: the k-th True position of row b receives features[b, k].
  """
  idx = jnp.cumsum(image_seq_mask.astype(jnp.int32), axis=1) - 1
  idx = jnp.clip(idx, 0, features.shape[1] - 1)
  gathered = jnp.take_along_axis(features, idx[..., None], axis=1)
  return jnp.where(image_seq_mask[..., None], gathered.astype(text_embeds.dtype), text_embeds)


class Backbone(nn.Module):
  """Understanding path + LLM + text head, shared by every mode's model (see the module docstring)."""
  cfg: JanusConfig

  def image_features(self, pixel_values: jax.Array) -> jax.Array:
    """float[N, H, W, 3] in [-1, 1] -> aligned understanding features float[N, slots per image, D]."""
    raise NotImplementedError

  def embed_text(self, ids: jax.Array) -> jax.Array:
    """int[B, T] -> float[B, T, D]. Negative ids (placeholders in some pipelines) embed as id 0."""
    return self.language_model.embed(jnp.maximum(ids, 0))

  def embed_multimodal(self, ids, image_seq_mask, pixel_values) -> jax.Array:
    """Text embeddings with every row's n images' `image_features` scattered into its image slots, in order.

    Args:
      ids: int[B, T]; image_seq_mask: bool[B, T] (the slots of each image: 576, or 577 with the mode's
        `und_boi_slot`); pixel_values: float[B, n, H, W, 3] (zero images allowed only if the mask is empty).
    Returns: float[B, T, D].
    """
    b, n = pixel_values.shape[:2]
    feats = self.image_features(pixel_values.reshape((b * n,) + pixel_values.shape[2:]))
    feats = feats.reshape(b, n * feats.shape[1], feats.shape[2])
    return scatter_image_features(self.embed_text(ids), image_seq_mask, feats)

  def text_logits(self, hidden: jax.Array) -> jax.Array:
    """float[..., D] final hidden states -> float32[..., vocab]."""
    return self.language_model.logits(hidden)

  def llm(self, inputs_embeds, positions, mask, cache: KVCache | None = None, cache_index=None,
          capture_layer: int | None = None):
    """LLaMA stack: (hidden float[B, T, D] after the final norm, updated cache[, hidden after block
    `capture_layer`])."""
    return self.language_model(inputs_embeds, positions, mask, cache, cache_index, capture_layer)


__all__ = ["Backbone", "scatter_image_features"]
