"""JanusFlow (generation mode `flow`): rectified flow in KL-VAE latent space around the shared LLM.

Submodules (names = JanusFlow checkpoint prefixes, janus_models.md 1.6):
  vision_und_enc_model          SigLIP ViT, images -> float[B, 576, 1024]
  vision_und_enc_aligner        one Linear 1024 -> D
  beg_of_und_embed              float[1, D], replaces the `<begin_of_image>` embedding of understanding inputs
                                (so an understanding image fills 577 slots: this embedding + 576 features)
  vision_gen_enc_model          ShallowUViT encoder: noisy latent + t -> float[B, 24, 24, 768], t_emb [B, D], skip
  vision_gen_enc_aligner        Linear 768 -> D (the 576 latent tokens fed to the LLM)
  vision_gen_dec_aligner_norm   RMSNorm(D) on the LLM outputs at the latent positions
  vision_gen_dec_aligner        Linear D -> 768
  vision_gen_dec_model          ShallowUViT decoder -> velocity float[B, 48, 48, 4]
  language_model                LlamaForCausalLM
  repa_projector                training only (not in released checkpoints): MLP D -> ... -> 1024 for REPA
  vae                           the KL autoencoder (SDXL-VAE for the release; always frozen). It is not in the
                                JanusFlow checkpoint: `janus-jax convert --vae=DIR` imports a diffusers directory.
The understanding API (`embed_text`, `embed_multimodal`, `text_logits`, `llm`) is `Backbone`'s, shared with
`JanusModel`; this model supplies `image_features` (its 577 understanding slots per image).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus_jax.models import layers
from janus_jax.models.aligners import Aligner
from janus_jax.models.configs import AlignerConfig, JanusConfig
from janus_jax.models.backbone import Backbone
from janus_jax.models.kl_vae import AutoencoderKL
from janus_jax.models.llama import LlamaForCausalLM
from janus_jax.models.siglip import SiglipVisionTower
from janus_jax.models.uvit import ShallowUViTDecoder, ShallowUViTEncoder

# The diffusion-style timestep scale: the ODE time t in [0, 1] is fed to the time embedding as t * 1000.
TIME_SCALE = 1000.0


class RepaProjector(nn.Module):
  """REPA head: float[..., D] -> float[..., output_dim]; Linear layers `layers_0`, `layers_2`, ... with SiLU."""
  cfg: JanusConfig

  @nn.compact
  def __call__(self, x):
    rc = self.cfg.repa
    for j in range(rc.depth):
      last = j == rc.depth - 1
      # Kernel names: first (embed, mlp), second (mlp, None), later ones replicated (the head is small).
      axes = ("embed", None if last else "mlp") if j == 0 else (("mlp", None) if j == 1 else (None, None))
      x = layers.Dense(rc.output_dim if last else rc.hidden_dim, axes, name=f"layers_{2 * j}",
                       **layers.linear_args(rc))(x if j == 0 else nn.silu(x))
    return x


class JanusFlowModel(Backbone):
  """JanusFlow: SigLIP understanding path + ShallowUViT rectified-flow generation path around one LLaMA
  (`Backbone`: the shared methods)."""

  def setup(self):
    cfg = self.cfg
    d = cfg.llm.hidden_size
    pdt = jnp.dtype(cfg.llm.param_dtype)
    if cfg.uvit.hidden_size != d:
      raise ValueError(f"model.uvit.hidden_size={cfg.uvit.hidden_size} must equal the LLM width "
                       f"model.llm.hidden_size={d} (the time embedding is an LLM token).")
    self.vision_und_enc_model = SiglipVisionTower(cfg.vision)
    self.vision_und_enc_aligner = Aligner(cfg.aligner)
    self.beg_of_und_embed = self.param("beg_of_und_embed", layers.names(nn.initializers.zeros_init(),
                                                                        (None, "embed")), (1, d), pdt)
    self.vision_gen_enc_model = ShallowUViTEncoder(cfg.uvit)
    lin = lambda i, o: AlignerConfig(kind="linear", input_dim=i, output_dim=o, depth=1, dtype=cfg.llm.dtype,
                                     param_dtype=cfg.llm.param_dtype, matmul_precision=cfg.llm.matmul_precision)
    self.vision_gen_enc_aligner = Aligner(lin(cfg.uvit.channels, d))
    self.vision_gen_dec_aligner_norm = layers.RMSNorm(cfg.llm.rms_norm_eps, axis_name="embed", param_dtype=pdt)
    self.vision_gen_dec_aligner = layers.Dense(cfg.uvit.channels, ("embed", None), **layers.linear_args(cfg.llm))
    self.vision_gen_dec_model = ShallowUViTDecoder(cfg.uvit)
    self.language_model = LlamaForCausalLM(cfg.llm)
    self.repa_projector = RepaProjector(cfg)
    self.vae = AutoencoderKL(cfg.vae)

  # --- understanding path (same API as JanusModel) --------------------------------------------------------
  def vision_features(self, pixel_values: jax.Array) -> jax.Array:
    """float[N, H, W, 3] in [-1, 1] -> raw SigLIP features float[N, 576, 1024] (REPA targets)."""
    return self.vision_und_enc_model(pixel_values)

  def image_features(self, pixel_values: jax.Array) -> jax.Array:
    """float[N, H, W, 3] -> float[N, 577, D]: `beg_of_und_embed` followed by the 576 aligned features."""
    feats = self.vision_und_enc_aligner(self.vision_features(pixel_values))
    boi = jnp.broadcast_to(self.beg_of_und_embed.astype(feats.dtype)[None], (feats.shape[0], 1, feats.shape[2]))
    return jnp.concatenate([boi, feats], axis=1)

  # --- generation path ------------------------------------------------------------------------------------
  def gen_inputs(self, z_t: jax.Array, t: jax.Array):
    """Noisy latents -> LLM inputs.

    Args: z_t float[B, h, w, C] scaled latents at time t; t float[B] ODE time in [0, 1] (0 = noise, 1 = data).
    Returns: (tokens float[B, N, D] for the N = (h/2)*(w/2) latent positions, t_emb float[B, D] (the token
      placed just before them), skip float[B, h/2, w/2, 768] for the decoder).
    """
    x_emb, t_emb, skip = self.vision_gen_enc_model(z_t, t * TIME_SCALE)
    b, gh, gw, c = x_emb.shape
    tokens = self.vision_gen_enc_aligner(x_emb.reshape(b, gh * gw, c))
    return tokens, t_emb, skip

  def velocity(self, hidden: jax.Array, skip: jax.Array, t_emb: jax.Array) -> jax.Array:
    """LLM outputs at the N latent positions float[B, N, D] -> velocity float32[B, h, w, C]."""
    b, gh, gw, _ = skip.shape
    x = self.vision_gen_dec_aligner(self.vision_gen_dec_aligner_norm(hidden))
    v = self.vision_gen_dec_model(x.reshape(b, gh, gw, x.shape[-1]), skip, t_emb)
    return v.astype(jnp.float32)

  def repa_features(self, hidden_at_layer: jax.Array) -> jax.Array:
    """float[B, N, D] hidden states after block `repa.layer` -> float32[B, N, repa.output_dim]."""
    return self.repa_projector(hidden_at_layer).astype(jnp.float32)

  def encode_latents(self, images: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """float[B, H, W, 3] in [-1, 1] -> scaled latents float32[B, H/8, W/8, C] (posterior mean if rng is None)."""
    return self.vae.encode_latent(images, rng)

  def decode_latents(self, z: jax.Array) -> jax.Array:
    """Scaled latents float[B, h, w, C] -> images float[B, 8h, 8w, 3] in about [-1, 1]."""
    return self.vae.decode_latent(z)

  def __call__(self, ids, image_seq_mask, pixel_values, positions, mask):
    """Teacher-forced understanding forward -> text logits float32[B, T, V]; at init also builds the generation
    path and the REPA head so `init` creates every parameter."""
    embeds = self.embed_multimodal(ids, image_seq_mask, pixel_values)
    hidden, _ = self.llm(embeds, positions, mask)
    if self.is_initializing():
      side = self.cfg.latent_size
      z = jnp.zeros((1, side, side, self.cfg.uvit.latent_channels), jnp.float32)
      tokens, t_emb, skip = self.gen_inputs(z, jnp.zeros((1,), jnp.float32))
      v = self.velocity(tokens, skip, t_emb)
      r = self.repa_features(tokens)
      img = self.decode_latents(z)
      hidden = hidden + 0.0 * (v.sum() + r.sum() + self.encode_latents(img).sum())
    return self.text_logits(hidden)
