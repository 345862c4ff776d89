"""Tiny random transformers Janus models used as the independent numerical reference (offline, no weights).

Only tests import this module; it needs torch and transformers (the `[dev]` extra).
"""
from __future__ import annotations

import numpy as np

from janus_jax.configs import models

TINY_HF = dict(
    text_config=dict(model_type="llama", vocab_size=1000, hidden_size=64, intermediate_size=128,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                     max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                     tie_word_embeddings=False),
    vision_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8,
                       num_image_tokens=16, projection_dim=64, mlp_ratio=2.0),
    vq_config=dict(embed_dim=8, num_embeddings=256, latent_channels=32, base_channels=32,
                   channel_multiplier=[1, 1, 2], num_res_blocks=1, projection_dim=64, image_token_embed_dim=64),
    image_token_id=5, tie_word_embeddings=False)

# The same architecture as TINY_HF, in janus_jax's config vocabulary (`JanusConfig.from_dict`).
TINY_JANUS = models.janus_tiny()


def build_tiny_hf_janus(seed: int = 0, randomize_norms: bool = True):
  """Returns an eval-mode transformers `JanusForConditionalGeneration` with random weights.

  With `randomize_norms`, norm scales/biases and zero-initialised biases are perturbed too, so that a parity test
  would notice a mis-mapped norm or bias (fresh models have all-ones / all-zeros there).
  """
  import torch
  from transformers import JanusConfig, JanusForConditionalGeneration
  torch.manual_seed(seed)
  model = JanusForConditionalGeneration(JanusConfig(**TINY_HF)).eval()
  if randomize_norms:
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
      for name, p in model.named_parameters():
        if p.ndim == 1:
          p.add_(0.1 * torch.randn(p.shape, generator=g))
  return model


def hf_state_numpy(model) -> dict[str, np.ndarray]:
  """transformers state dict as float32 numpy arrays."""
  return {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
