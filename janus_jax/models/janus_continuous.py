"""The model of generation mode `ar_continuous`: an autoregressive LLM over continuous KL-VAE latent tokens, each
token sampled by a small flow head (MAR / Fluid's diffusion loss, with a rectified-flow objective; NextStep-1).

Submodules (param subtrees):
  vision_model, aligner  the understanding path (SigLIP ViT + MLP aligner, as Janus)
  vae                    the KL autoencoder (frozen): images <-> scaled latents float[B, h, w, C]
  gen_in                 Linear: latent patch float[..., P] -> LLM input float[..., D] (P = patch^2 * C)
  gen_boi                float[1, D], added at the `<begin_of_image>` position of a generated image
  gen_out                Linear: LLM hidden float[..., D] -> head condition float[..., head_width]
  flow_head              `FlowHead`: (x_t, t, condition) -> velocity float32[..., P]
  language_model         LlamaForCausalLM
A generated image is N = (h / patch)^2 tokens in raster order (N = the understanding token count, as in Janus); the
hidden state at the position before token k (`<begin_of_image>` for k = 0) conditions the head for token k.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus_jax.models import layers
from janus_jax.models.aligners import Aligner
from janus_jax.models.backbone import Backbone
from janus_jax.models.flow_head import FlowHead
from janus_jax.models.kl_vae import AutoencoderKL
from janus_jax.models.llama import LlamaForCausalLM


def patchify(z: jax.Array, p: int) -> jax.Array:
  """float[B, h, w, C] -> float[B, (h/p) * (w/p), p * p * C]: raster order over patches, (i, j, c) inside one."""
  b, h, w, c = z.shape
  z = z.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return z.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: jax.Array, p: int, side: int, channels: int) -> jax.Array:
  """The inverse of `patchify`: float[B, N, p * p * C] -> float[B, side, side, C] (side = sqrt(N) * p)."""
  b, g = tokens.shape[0], side // p
  z = tokens.reshape(b, g, g, p, p, channels).transpose(0, 1, 3, 2, 4, 5)
  return z.reshape(b, side, side, channels)


def token_dim(cfg) -> int:
  """Width P of one continuous token: patch_size^2 * vae.latent_channels."""
  return cfg.cont.patch_size ** 2 * cfg.vae.latent_channels


class JanusContinuousModel(Backbone):
  """Understanding path + LLM + continuous-token generation (`Backbone`: the shared methods)."""

  def setup(self):
    cfg = self.cfg
    d = cfg.llm.hidden_size
    pdt = jnp.dtype(cfg.llm.param_dtype)
    self.vision_model = cfg.understanding_encoder.vision_model(cfg)
    self.aligner = Aligner(cfg.aligner)
    self.vae = AutoencoderKL(cfg.vae)
    self.gen_in = layers.Dense(d, (None, "embed"), **layers.linear_args(cfg.llm))
    self.gen_boi = self.param("gen_boi", layers.names(nn.initializers.normal(0.02), (None, "embed")), (1, d), pdt)
    self.gen_out = layers.Dense(cfg.cont.head_width, ("embed", None), **layers.linear_args(cfg.llm))
    self.flow_head = FlowHead(cfg.cont, token_dim(cfg))
    self.language_model = LlamaForCausalLM(cfg.llm)

  # --- understanding path ---------------------------------------------------------------------------------
  def image_features(self, pixel_values: jax.Array) -> jax.Array:
    """float[N, H, W, 3] in [-1, 1] -> aligned understanding features float[N, num_image_tokens, D]."""
    return self.aligner(self.cfg.understanding_encoder.features(self, pixel_values))

  # --- generation path ------------------------------------------------------------------------------------
  def encode_tokens(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """float[B, H, W, 3] in [-1, 1] -> continuous tokens float32[B, N, P] (scaled latent patches; posterior mean
    if rng is None)."""
    return patchify(self.vae.encode_latent(images, rng), self.cfg.cont.patch_size)

  def decode_tokens(self, tokens: jax.Array) -> jax.Array:
    """float[B, N, P] -> images float[B, H, W, 3] in about [-1, 1]."""
    cfg = self.cfg
    z = unpatchify(tokens.astype(jnp.float32), cfg.cont.patch_size, cfg.latent_size, cfg.vae.latent_channels)
    return self.vae.decode_latent(z)

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """float[..., P] tokens -> float[..., D] LLM inputs."""
    return self.gen_in(tokens)

  def boi_embedding(self) -> jax.Array:
    """float[1, D]: added to the `<begin_of_image>` embedding of a generated image."""
    return self.gen_boi

  def head_condition(self, hidden: jax.Array) -> jax.Array:
    """float[..., D] LLM hidden states -> float[..., head_width] conditions of the flow head."""
    return self.gen_out(hidden)

  def velocity(self, x_t: jax.Array, t: jax.Array, cond: jax.Array) -> jax.Array:
    """x_t float[M, P] at time t float[M], condition float[M, W] -> velocity float32[M, P]."""
    return self.flow_head(x_t, t, cond)

  def __call__(self, ids, image_seq_mask, pixel_values, positions, mask):
    """Teacher-forced understanding forward -> text logits float32[B, T, V]; at init also builds the generation
    path so `init` creates every parameter."""
    embeds = self.embed_multimodal(ids, image_seq_mask, pixel_values)
    hidden, _ = self.llm(embeds, positions, mask)
    if self.is_initializing():
      cfg = self.cfg
      side = cfg.latent_size * cfg.vae.downsample
      tokens = self.encode_tokens(jnp.zeros((1, side, side, 3), jnp.float32))
      cond = self.head_condition(hidden[:, :1] + self.embed_tokens(tokens[:, :1]) + self.boi_embedding()[None])
      v = self.velocity(tokens[:, 0], jnp.zeros((1,), jnp.float32), cond[:, 0])
      hidden = hidden + 0.0 * (v.sum() + self.decode_tokens(tokens).sum())
    return self.text_logits(hidden)


__all__ = ["JanusContinuousModel", "patchify", "unpatchify", "token_dim"]
