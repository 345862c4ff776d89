"""The unified Janus / Janus-Pro model (generation mode `ar_vq`).

Submodules (names = DeepSeek checkpoint prefixes):
  vision_model      SigLIP ViT, images -> float[B, 576, 1024] understanding features (absent with
                    `und_encoder='vq'`: understanding then reads gen_vision_model's quantized latents [B, 576, 8])
  aligner           MLP 1024 -> D -> D (input: the understanding encoder's width, `janus_jax.models.und_encoder`)
  gen_vision_model  VQ-16 tokenizer (encode images -> codes, decode codes -> images)
  gen_embed         float[16384, 8] embedding of generated image tokens (separate from the VQ codebook)
  gen_aligner       MLP 8 -> D -> D
  gen_head          D -> D -> 16384 image-token logits
  language_model    LlamaForCausalLM (text logits from `lm_head`)

Every public method is meant to be called through `model.apply(variables, ..., method=JanusModel.<name>)`.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from janus_jax.models import layers
from janus_jax.models.aligners import Aligner, GenHead
from janus_jax.models.backbone import Backbone
from janus_jax.models.configs import JanusConfig
from janus_jax.models.llama import LlamaForCausalLM
from janus_jax.models.vq import VQModel


class JanusModel(Backbone):
  """Janus / Janus-Pro: two decoupled vision paths around one LLaMA decoder (`Backbone`: the shared methods)."""

  def setup(self):
    cfg = self.cfg
    self.vision_model = cfg.understanding_encoder.vision_model(cfg)  # SigLIP tower; None for und_encoder 'vq'
    self.aligner = Aligner(cfg.aligner)
    self.gen_vision_model = VQModel(cfg.vq)
    self.gen_embed = nn.Embed(
        cfg.image_token_size, cfg.gen_embed_dim, dtype=jnp.dtype(cfg.gen_aligner.dtype),
        param_dtype=jnp.dtype(cfg.gen_aligner.param_dtype),
        embedding_init=layers.names(nn.initializers.normal(1.0), ("image_vocab", "codebook_dim")))
    self.gen_aligner = Aligner(cfg.gen_aligner)
    self.gen_head = GenHead(cfg.gen_head)
    self.language_model = LlamaForCausalLM(cfg.llm)

  # --- understanding path ---------------------------------------------------------------------------------
  def image_features(self, pixel_values: jax.Array) -> jax.Array:
    """float[N, H, W, 3] in [-1, 1] -> aligned understanding features float[N, num_image_tokens, D] (the
    `cfg.und_encoder` features, e.g. SigLIP float[N, 576, 1024], through `aligner`)."""
    return self.aligner(self.cfg.understanding_encoder.features(self, pixel_values))

  # --- generation path ------------------------------------------------------------------------------------
  def embed_image_tokens(self, codes: jax.Array) -> jax.Array:
    """int[...] image-token ids -> float[..., D] LLM inputs (gen_embed then gen_aligner)."""
    return self.gen_aligner(self.gen_embed(codes))

  def image_logits(self, hidden: jax.Array) -> jax.Array:
    """float[..., D] final hidden states -> float32[..., image_token_size]."""
    return self.gen_head(hidden).astype(jnp.float32)

  def decode_image_tokens(self, codes: jax.Array) -> jax.Array:
    """int[B, 576] raster-order codes -> float[B, H, W, 3] images in about [-1, 1]."""
    return self.gen_vision_model.decode_code(codes, grid=self.cfg.gen_grid)

  def encode_image_tokens(self, images: jax.Array) -> jax.Array:
    """float[B, H, W, 3] in [-1, 1] -> int32[B, h*w] raster-order codes."""
    _, codes, _ = self.gen_vision_model.encode(images)
    return codes.reshape(codes.shape[0], -1)

  def __call__(self, ids, image_seq_mask, pixel_values, positions, mask):
    """Teacher-forced multimodal forward: returns (text logits float32[B, T, V], image logits [B, T, K]).

    Also touches every submodule so that `init` creates all parameters.
    """
    embeds = self.embed_multimodal(ids, image_seq_mask, pixel_values)
    hidden, _ = self.llm(embeds, positions, mask)
    if self.is_initializing():
      codes = jnp.zeros((1, self.cfg.num_image_tokens), jnp.int32)
      hidden = hidden + 0.0 * self.embed_image_tokens(codes[:, :1]).sum()
      self.decode_image_tokens(codes)
      self.gen_vision_model.encode(self.decode_image_tokens(codes))
    return self.text_logits(hidden), self.image_logits(hidden)


def dummy_inputs(cfg: JanusConfig, batch: int = 1, seq_len: int | None = None):
  """Smallest inputs that exercise every parameter (for `init` / `eval_shape`); a mode with `und_boi_slot` (flow)
  has one more image slot per image (JanusFlow's learned `<begin_of_image>` embedding)."""
  from janus_jax.models.llama import causal_mask, positions_from_mask
  n = cfg.num_image_tokens + int(cfg.mode.und_boi_slot)
  t = seq_len or n + 2
  ids = jnp.zeros((batch, t), jnp.int32)
  image_seq_mask = jnp.zeros((batch, t), bool).at[:, 1:1 + n].set(True)
  size = cfg.vision.image_size
  pixels = jnp.zeros((batch, 1, size, size, 3), jnp.float32)
  valid = jnp.ones((batch, t), bool)
  return ids, image_seq_mask, pixels, positions_from_mask(valid), causal_mask(valid, t)


def model_class(cfg: JanusConfig):
  """The Linen class of `cfg`'s generation mode (JanusModel for ar_vq, JanusFlowModel for flow)."""
  return cfg.mode.model_class()


def init_params(cfg: JanusConfig, rng: jax.Array, boxed: bool = False):
  """Random-initialised params of `cfg`'s mode (plain nested dict; `boxed=True` keeps the logical-axis boxes)."""
  return cfg.mode.init_params(cfg, rng, boxed)


def abstract_params(cfg: JanusConfig, boxed: bool = False):
  """Shapes and dtypes of every param (no memory, no compute): nested dict of jax.ShapeDtypeStruct."""
  return jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0), boxed=boxed))


def param_count(cfg: JanusConfig) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(abstract_params(cfg)))
