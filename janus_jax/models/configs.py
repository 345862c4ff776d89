"""Typed, frozen configs for every model component.

Experiments describe models as ml_collections ConfigDicts (see `experiments/`); `JanusConfig.from_dict` turns
that sub-config into these frozen dataclasses, rejecting unknown keys. Linen modules take the dataclass of the
component they build, never the whole experiment config.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from janus_jax import precision


def _dtype(name: str):
  return jnp.dtype(name)


def _build(cls, values: Mapping[str, Any] | None, where: str):
  """Builds dataclass `cls` from a mapping, naming any unknown key and the valid ones."""
  values = dict(values or {})
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(
        f"Unknown config key(s) {unknown} in `{where}`. Valid keys: {sorted(fields)}. "
        "Fix the spelling in your experiment config or --config override.")
  for k, v in list(values.items()):
    if isinstance(v, list):
      values[k] = tuple(v)
  return cls(**values)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """DeepSeek-LLM / LLaMA decoder (transformers `LlamaForCausalLM` semantics)."""
  vocab_size: int = 102400
  hidden_size: int = 2048
  intermediate_size: int = 5632
  num_layers: int = 24
  num_heads: int = 16
  num_kv_heads: int = 16
  head_dim: int = 0  # 0 means hidden_size // num_heads.
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  max_position_embeddings: int = 16384
  dtype: str = "float32"  # Compute dtype.
  matmul_precision: str = "highest"  # jax.lax.Precision of matmuls; "auto": by platform (janus_jax.precision).
  param_dtype: str = "float32"
  scan_layers: bool = True
  # Name of a `jax.checkpoint_policies` entry, or "none" (no remat) / "full" (save nothing).
  remat_policy: str = "none"

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
  """SigLIP ViT understanding encoder (timm `VisionTransformer` as shipped with Janus)."""
  image_size: int = 384
  patch_size: int = 16
  width: int = 1024
  depth: int = 24
  num_heads: int = 16
  mlp_dim: int = 4096
  layer_norm_eps: float = 1e-6
  # Official semantics: <= 0 keeps min(depth, depth + select_layer + 1) blocks, else min(depth, select_layer).
  select_layer: int = -1
  dtype: str = "float32"
  matmul_precision: str = "highest"  # jax.lax.Precision of matmuls; "auto": by platform (janus_jax.precision).
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat_policy: str = "none"
  # Initial pos_embed: "normal" (std 0.02, timm) or "sincos2d" (a 2-D sine-cosine table, then trained,
  # as big_vision's ViT; gives every patch its row and column from step 0). Only matters when training from scratch.
  pos_embed_init: str = "normal"

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def num_blocks(self) -> int:
    """Number of transformer blocks actually built and run (after `select_layer` truncation)."""
    if self.select_layer <= 0:
      return min(self.depth, self.depth + self.select_layer + 1)
    return min(self.depth, self.select_layer)


@dataclasses.dataclass(frozen=True)
class AlignerConfig:
  """Projector from an encoder to the LLM width: `mlp_gelu` (Linear, GELU, Linear, ...) or `linear`."""
  kind: str = "mlp_gelu"
  # For the understanding `aligner`, 0 means the understanding encoder's width (`JanusConfig` resolves it:
  # vision.width for und_encoder 'siglip', vq.codebook_dim for 'vq').
  input_dim: int = 1024
  output_dim: int = 2048
  depth: int = 2
  dtype: str = "float32"
  matmul_precision: str = "highest"  # jax.lax.Precision of matmuls; "auto": by platform (janus_jax.precision).
  param_dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class VQConfig:
  """LlamaGen VQ-16 image tokenizer."""
  codebook_size: int = 16384
  codebook_dim: int = 8
  codebook_l2_norm: bool = True
  commit_beta: float = 0.25
  base_channels: int = 128
  channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
  z_channels: int = 256
  num_res_blocks: int = 2  # Encoder; the decoder uses num_res_blocks + 1 per level.
  num_groups: int = 32
  norm_eps: float = 1e-6
  # False drops the encoder's self-attention blocks (lowest level and mid_1; the decoder keeps its own): each
  # code then sees a convolutional neighbourhood instead of the whole image (the released VQ-16 has them).
  encoder_attention: bool = True
  dtype: str = "float32"
  matmul_precision: str = "highest"  # jax.lax.Precision of matmuls; "auto": by platform (janus_jax.precision).
  param_dtype: str = "float32"

  @property
  def downsample(self) -> int:
    """Pixels per token side (16 for VQ-16)."""
    return 2 ** (len(self.channel_mult) - 1)


@dataclasses.dataclass(frozen=True)
class GenHeadConfig:
  """Image head: Linear(D -> image_token_embed), GELU, Linear(-> image_token_size)."""
  n_embed: int = 2048
  image_token_embed: int = 2048
  image_token_size: int = 16384
  dtype: str = "float32"
  matmul_precision: str = "highest"  # jax.lax.Precision of matmuls; "auto": by platform (janus_jax.precision).
  param_dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class KLVAEConfig:
  """KL autoencoder with diffusers `AutoencoderKL` semantics; defaults are SDXL-VAE (83.65M params, 8x down).

  Latents used by the flow model are scaled: z = sample * scaling_factor (no shift for SDXL-VAE).
  """
  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 4
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2  # Encoder resnets per level; the decoder uses layers_per_block + 1.
  norm_num_groups: int = 32
  norm_eps: float = 1e-6
  mid_block_attention: bool = True  # diffusers `mid_block_add_attention`.
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  scaling_factor: float = 0.13025
  shift_factor: float = 0.0
  dtype: str = "float32"
  matmul_precision: str = "highest"  # jax.lax.Precision of matmuls; "auto": by platform (janus_jax.precision).
  param_dtype: str = "float32"

  @property
  def downsample(self) -> int:
    """Pixels per latent side (8 for SDXL-VAE)."""
    return 2 ** (len(self.block_out_channels) - 1)


@dataclasses.dataclass(frozen=True)
class UViTConfig:
  """JanusFlow ShallowUViT generation encoder + decoder (`uvit.py`); defaults are JanusFlow-1.3B.

  Encoder: latent float[B, H, W, latent_channels] -> 2x2 patchify -> `channels` -> ConvNeXt blocks; decoder:
  LLM-aligned features [B, H/2, W/2, channels] + skip -> ConvNeXt blocks at 2*channels -> unpatchify -> velocity.
  """
  latent_channels: int = 4
  patch_size: int = 2
  channels: int = 768  # block_out_channels[0]; also the width of the sinusoidal time embedding.
  layers_in_middle: int = 2
  hidden_size: int = 2048  # LLM width: the time-embedding MLP output and the AdaLN conditioning input.
  norm_eps: float = 1e-6
  use_bias: bool = True
  dtype: str = "float32"
  matmul_precision: str = "highest"  # jax.lax.Precision of matmuls; "auto": by platform (janus_jax.precision).
  param_dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class RepaConfig:
  """REPA head (training only, not in released checkpoints): LLM hidden state after `layer` blocks -> MLP of
  `depth` Linear layers (SiLU between) -> `output_dim` (understanding-encoder width)."""
  layer: int = 6
  hidden_dim: int = 2048
  output_dim: int = 1024
  depth: int = 3
  dtype: str = "float32"
  matmul_precision: str = "highest"  # jax.lax.Precision of matmuls; "auto": by platform (janus_jax.precision).
  param_dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class ContinuousConfig:
  """Generation mode `ar_continuous`: the LLM reads and predicts continuous tokens, `patch_size` x `patch_size`
  patches of the KL-VAE latent in raster order (token width patch_size^2 * vae.latent_channels), each sampled by a
  small flow head: `head_depth` residual MLP blocks of width `head_width` with AdaLN conditioned on the LLM hidden
  state (through a Linear to `head_width`) and the flow time."""
  patch_size: int = 2
  head_width: int = 256
  head_depth: int = 3
  dtype: str = "float32"
  matmul_precision: str = "highest"  # jax.lax.Precision of matmuls; "auto": by platform (janus_jax.precision).
  param_dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class JanusConfig:
  """The unified Janus / Janus-Pro model (generation_mode `ar_vq`)."""
  llm: LlamaConfig = LlamaConfig()
  vision: SiglipConfig = SiglipConfig()
  aligner: AlignerConfig = AlignerConfig()
  vq: VQConfig = VQConfig()
  gen_aligner: AlignerConfig = AlignerConfig(input_dim=8)
  gen_head: GenHeadConfig = GenHeadConfig()
  gen_embed_dim: int = 8  # Width of the separate `gen_embed` table (16384 x 8), not the VQ codebook.
  # `janus_jax.modes`: "ar_vq" (Janus / Janus-Pro: VQ tokens, image head), "flow" (JanusFlow: rectified flow in
  # KL-VAE latents; uses `uvit`, `vae`, `repa`) or "ar_continuous" (continuous KL-VAE latent tokens with a per-token
  # flow head; uses `vae`, `cont`). A mode ignores the other modes' sections (`mode.config_parts` lists its own).
  generation_mode: str = "ar_vq"
  uvit: UViTConfig = UViTConfig()
  vae: KLVAEConfig = KLVAEConfig()
  repa: RepaConfig = RepaConfig()
  cont: ContinuousConfig = ContinuousConfig()
  # What understanding reads (`janus_jax.models.und_encoder`): "siglip" (the SigLIP ViT `vision_model`, Janus) or
  # "vq" (ar_vq only: the VQ tokenizer's quantized latents through `aligner`; no SigLIP params, one shared encoder).
  und_encoder: str = "siglip"

  def __post_init__(self):
    for part in COMPONENTS:  # frozen dataclass: "auto" compute dtype / matmul precision resolved once, here
      c = getattr(self, part)
      dtype, prec = precision.resolve(c.dtype, c.matmul_precision, where=f"--config.model.{part}.{{field}}")
      if (dtype, prec) != (c.dtype, c.matmul_precision):
        object.__setattr__(self, part, dataclasses.replace(c, dtype=dtype, matmul_precision=prec))
    mode = self.mode  # ValueError naming the valid modes
    enc = self.understanding_encoder
    if self.aligner.input_dim == 0:  # frozen dataclass: resolved once, here
      object.__setattr__(self, "aligner", dataclasses.replace(self.aligner, input_dim=enc.feature_dim(self)))
    problems = mode.problems(self) or enc.problems(self)
    if problems:
      raise ValueError(" ".join(problems))

  @property
  def understanding_encoder(self):
    """The `janus_jax.models.und_encoder.UndEncoder` named by `und_encoder` (ValueError for an unknown name)."""
    from janus_jax.models import und_encoder  # pylint: disable=import-outside-toplevel  # it imports this module
    return und_encoder.get(self.und_encoder)

  @property
  def mode(self):
    """The `janus_jax.modes.GenerationMode` named by `generation_mode` (ValueError for an unknown name)."""
    from janus_jax import modes  # pylint: disable=import-outside-toplevel  # the modes import this module
    return modes.get(self.generation_mode)

  @property
  def latent_size(self) -> int:
    """Modes generating KL-VAE latents: side of the latent (flow: 48 for 384 px with SDXL-VAE)."""
    return self.mode.latent_size(self)

  @property
  def generated_image_size(self) -> int:
    """Side in pixels of generated images (the mode's tokenizer decode: VQ codes or VAE latents)."""
    return self.mode.generated_image_size(self)

  @property
  def num_image_tokens(self) -> int:
    """Understanding features per image (SigLIP patches; with und_encoder 'vq' the VQ grid of a vision.image_size
    image) = generated tokens per image (VQ grid)."""
    return self.understanding_encoder.num_tokens(self)

  @property
  def gen_grid(self) -> int:
    """Side of the generated token grid (24 for 576 tokens); decoded images are gen_grid * vq.downsample px."""
    side = int(round(self.num_image_tokens ** 0.5))
    assert side * side == self.num_image_tokens, self.num_image_tokens
    return side

  @property
  def image_token_size(self) -> int:
    return self.gen_head.image_token_size

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "JanusConfig":
    """Builds from a (possibly nested) mapping, e.g. `config.model.to_dict()`; unknown keys raise."""
    d = dict(d)
    sub = {"llm": LlamaConfig, "vision": SiglipConfig, "aligner": AlignerConfig, "vq": VQConfig,
           "gen_aligner": AlignerConfig, "gen_head": GenHeadConfig, "uvit": UViTConfig, "vae": KLVAEConfig,
           "repa": RepaConfig, "cont": ContinuousConfig}
    kwargs = {}
    for k, v in d.items():
      if k in sub:
        kwargs[k] = _build(sub[k], v, f"model.{k}")
      else:
        kwargs[k] = v
    return _build(cls, kwargs, "model")

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def with_dtypes(self, dtype: str | None = None, param_dtype: str | None = None,
                  matmul_precision: str | None = None) -> "JanusConfig":
    """A copy whose every component computes in `dtype`, stores params in `param_dtype` and runs its matmuls at
    `matmul_precision` (None: keep; "auto": the platform's default, `janus_jax.precision`)."""
    changes = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype),
                                 ("matmul_precision", matmul_precision)) if v is not None}
    return dataclasses.replace(self, **{part: dataclasses.replace(getattr(self, part), **changes)
                                        for part in COMPONENTS})

  def with_dtype(self, dtype: str) -> "JanusConfig":
    """A copy computing in `dtype` (params stay as configured)."""
    return self.with_dtypes(dtype=dtype)


# How a run computes, not what the model is: component fields that a checkpoint's config does not pin.
RUN_SETTINGS = ("dtype", "param_dtype", "matmul_precision", "scan_layers", "remat_policy")
# The component sections of JanusConfig (each has dtype, param_dtype, matmul_precision).
COMPONENTS = ("llm", "vision", "aligner", "vq", "gen_aligner", "gen_head", "uvit", "vae", "repa", "cont")


__all__ = ["LlamaConfig", "SiglipConfig", "AlignerConfig", "VQConfig", "GenHeadConfig", "KLVAEConfig", "UViTConfig",
           "RepaConfig", "ContinuousConfig", "JanusConfig", "RUN_SETTINGS", "_dtype"]
