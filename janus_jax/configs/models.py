"""Model shapes of the released checkpoints, as nested dicts for `JanusConfig.from_dict` (janus_models.md 1.9).

The 7B's language_config only lists layers / vocab / max positions: the rest are transformers LlamaConfig
defaults (4096 hidden, 11008 intermediate, 32 heads), which these presets spell out.
"""
from __future__ import annotations

from typing import Any


def _janus(hidden: int, intermediate: int, layers: int, heads: int) -> dict[str, Any]:
  return dict(
      llm=dict(vocab_size=102400, hidden_size=hidden, intermediate_size=intermediate, num_layers=layers,
               num_heads=heads, num_kv_heads=heads, rms_norm_eps=1e-6, rope_theta=10000.0,
               max_position_embeddings=16384),
      vision=dict(image_size=384, patch_size=16, width=1024, depth=24, num_heads=16, mlp_dim=4096,
                  select_layer=-1),
      aligner=dict(kind="mlp_gelu", input_dim=1024, output_dim=hidden, depth=2),
      vq=dict(codebook_size=16384, codebook_dim=8, base_channels=128, channel_mult=(1, 1, 2, 2, 4),
              z_channels=256, num_res_blocks=2),
      gen_aligner=dict(kind="mlp_gelu", input_dim=8, output_dim=hidden, depth=2),
      gen_head=dict(n_embed=hidden, image_token_embed=hidden, image_token_size=16384),
      gen_embed_dim=8,
      generation_mode="ar_vq",
      und_encoder="siglip",  # or "vq" (the shared-encoder ablation; see janus_jax.models.und_encoder)
  )


def janus_1_3b() -> dict[str, Any]:
  """Janus-1.3B (DeepSeek-LLM-1.3B backbone; template `deepseek_old`)."""
  return _janus(2048, 5632, 24, 16)


def janus_pro_1b() -> dict[str, Any]:
  """Janus-Pro-1B (template `deepseek`)."""
  return _janus(2048, 5632, 24, 16)


def janus_pro_7b() -> dict[str, Any]:
  """Janus-Pro-7B (template `deepseek`)."""
  return _janus(4096, 11008, 30, 32)


def janus_tiny() -> dict[str, Any]:
  """A few-M-param model with the same structure, for tests and CPU smoke runs (32 px, 4x4 token grid)."""
  return dict(
      llm=dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=4,
               max_position_embeddings=256),
      vision=dict(image_size=32, patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=128),
      aligner=dict(kind="mlp_gelu", input_dim=64, output_dim=64, depth=2),
      vq=dict(codebook_size=256, codebook_dim=8, base_channels=32, channel_mult=(1, 1, 2), z_channels=32,
              num_res_blocks=1),
      gen_aligner=dict(kind="mlp_gelu", input_dim=8, output_dim=64, depth=2),
      gen_head=dict(n_embed=64, image_token_embed=64, image_token_size=256),
      gen_embed_dim=8,
      generation_mode="ar_vq",
      und_encoder="siglip",  # or "vq" (the shared-encoder ablation; see janus_jax.models.und_encoder)
  )


def janusflow_1_3b() -> dict[str, Any]:
  """JanusFlow-1.3B (template `deepseek_old`): SigLIP-L + Linear aligner, ShallowUViT around the 1.3B LLM, SDXL-VAE
  (bf16 in the official code; janus_models.md 1.6-1.8). REPA reads block 6 into 1024-d SigLIP space."""
  return dict(
      llm=dict(vocab_size=102400, hidden_size=2048, intermediate_size=5632, num_layers=24, num_heads=16,
               num_kv_heads=16, rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=16384),
      vision=dict(image_size=384, patch_size=16, width=1024, depth=24, num_heads=16, mlp_dim=4096,
                  select_layer=-1),
      aligner=dict(kind="linear", input_dim=1024, output_dim=2048, depth=1),
      uvit=dict(latent_channels=4, patch_size=2, channels=768, layers_in_middle=2, hidden_size=2048, norm_eps=1e-6),
      vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, norm_num_groups=32,
               scaling_factor=0.13025),
      repa=dict(layer=6, hidden_dim=2048, output_dim=1024, depth=3),
      generation_mode="flow",
      und_encoder="siglip",
  )


def janusflow_tiny() -> dict[str, Any]:
  """A tiny JanusFlow for tests and CPU smoke runs (32 px understanding, 16 px generation, 4x4 token grid)."""
  return dict(
      llm=dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=4,
               max_position_embeddings=256),
      vision=dict(image_size=32, patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=128),
      aligner=dict(kind="linear", input_dim=64, output_dim=64, depth=1),
      uvit=dict(channels=32, hidden_size=64, layers_in_middle=1),
      vae=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, scaling_factor=1.0),
      repa=dict(layer=1, hidden_dim=64, output_dim=64, depth=3),
      generation_mode="flow",
      und_encoder="siglip",
  )


def janus_continuous_tiny() -> dict[str, Any]:
  """A tiny ar_continuous model for tests (32 px understanding; 16 px generation: 8x8x4 latents, 2x2 patches, a 4x4
  grid of 16-wide continuous tokens)."""
  return dict(
      llm=dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=4,
               max_position_embeddings=256),
      vision=dict(image_size=32, patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=128),
      aligner=dict(kind="mlp_gelu", input_dim=64, output_dim=64, depth=2),
      vae=dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, scaling_factor=1.0),
      cont=dict(patch_size=2, head_width=64, head_depth=2),
      generation_mode="ar_continuous",
      und_encoder="siglip",
  )


def compute_parts(model) -> tuple[str, ...]:
  """The model config sections whose `dtype` sets the compute dtype: the LLM and the generation mode's parts."""
  from janus_jax import modes  # pylint: disable=import-outside-toplevel
  return ("llm",) + modes.get(model.get("generation_mode", "ar_vq")).config_parts


def set_compute(model, dtype: str = "auto", matmul_precision: str = "auto") -> None:
  """Sets the compute dtype and matmul precision of the model config's compute parts (in place). "auto" is resolved
  by `JanusConfig` for the platform the run is on (`janus_jax.precision`: CPU float32 / highest, GPU and TPU
  bfloat16 / default)."""
  for part in compute_parts(model):
    model[part].dtype = dtype
    model[part].matmul_precision = matmul_precision


# Understanding sampling defaults (every mode): the official chat demos' settings.
UNDERSTAND_SAMPLING = dict(understand_max_new_tokens=512, understand_temperature=0.1, understand_top_p=0.95)


def inference_config(model: dict[str, Any], template: str, arg: str | None):
  """The experiment config of a released model: model shape, chat template, sampling defaults, mesh and rules.

  arg: "dtype=auto|float32|bfloat16,precision=auto|highest|high|default,scan=true|false,remat=<policy>" (see
  `janus_jax.configs.common.parse_arg`); "auto" is the platform's default (`janus_jax.precision`).
  """
  import ml_collections  # pylint: disable=import-outside-toplevel
  from janus_jax import sharding  # pylint: disable=import-outside-toplevel
  from janus_jax.configs import common  # pylint: disable=import-outside-toplevel
  arg = common.parse_arg(arg, dtype="auto", precision="auto", scan=True, remat="none")
  c = ml_collections.ConfigDict()
  c.model = model
  from janus_jax import modes  # pylint: disable=import-outside-toplevel
  set_compute(c.model, arg.dtype, arg.precision)
  for part in ("llm", "vision"):
    c.model[part].scan_layers = arg.scan
    c.model[part].remat_policy = arg.remat
  c.template = template
  c.sampling = dict(**modes.get(model.get("generation_mode", "ar_vq")).sampling, **UNDERSTAND_SAMPLING)
  c.mesh = tuple(sharding.DEFAULT_MESH)
  c.sharding_rules = list(sharding.DEFAULT_RULES)
  return c
