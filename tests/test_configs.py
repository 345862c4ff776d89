"""Every experiment config builds abstractly; released shapes match transformers' Janus parameter counts."""
import glob

import pytest

from janus_jax.configs import models

from janus_jax.configs.common import load_config, parse_arg
from janus_jax.models.configs import JanusConfig
from janus_jax.models.janus import param_count

CONFIGS = sorted(glob.glob("experiments/*.py"))


def _hf_param_count(cfg: JanusConfig) -> int:
  torch = pytest.importorskip("torch")
  from transformers import JanusConfig as HFJanusConfig, JanusForConditionalGeneration
  llm, vis, vq = cfg.llm, cfg.vision, cfg.vq
  hf_cfg = HFJanusConfig(
      text_config=dict(model_type="llama", vocab_size=llm.vocab_size, hidden_size=llm.hidden_size,
                       intermediate_size=llm.intermediate_size, num_hidden_layers=llm.num_layers,
                       num_attention_heads=llm.num_heads, num_key_value_heads=llm.num_kv_heads,
                       max_position_embeddings=llm.max_position_embeddings, tie_word_embeddings=False),
      vision_config=dict(hidden_size=vis.width, num_hidden_layers=vis.num_blocks, num_attention_heads=vis.num_heads,
                         image_size=vis.image_size, patch_size=vis.patch_size, mlp_ratio=vis.mlp_dim / vis.width,
                         num_image_tokens=vis.num_patches, projection_dim=cfg.aligner.output_dim,
                         depth=cfg.aligner.depth),
      vq_config=dict(embed_dim=vq.codebook_dim, num_embeddings=vq.codebook_size, latent_channels=vq.z_channels,
                     base_channels=vq.base_channels, channel_multiplier=list(vq.channel_mult),
                     num_res_blocks=vq.num_res_blocks, projection_dim=cfg.gen_head.image_token_embed,
                     image_token_embed_dim=cfg.gen_aligner.output_dim, num_hidden_layers=cfg.gen_aligner.depth),
      tie_word_embeddings=False)
  with torch.device("meta"):
    model = JanusForConditionalGeneration(hf_cfg)
  return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_and_matches_transformers_param_count(path):
  c = load_config(path)
  cfg = JanusConfig.from_dict(c.model.to_dict())
  ours = param_count(cfg)
  if cfg.generation_mode == "flow":  # transformers has no JanusFlow: its LLM and SigLIP must equal Janus-1.3B's, its VAE SDXL's.
    import jax  # pylint: disable=import-outside-toplevel
    from janus_jax.models.janus import abstract_params  # pylint: disable=import-outside-toplevel
    flow, ar = abstract_params(cfg), abstract_params(JanusConfig.from_dict(models.janus_1_3b()))
    shapes = lambda t: [x.shape for x in jax.tree.leaves(t)]
    assert shapes(flow["language_model"]) == shapes(ar["language_model"])
    assert shapes(flow["vision_und_enc_model"]) == shapes(ar["vision_model"])
    assert sum(x.size for x in jax.tree.leaves(flow["vae"])) == 83_653_863
    print(f"{path}: {ours:,} params (incl. the SDXL-VAE and the REPA head)")
    return
  if not cfg.vq.encoder_attention:  # transformers' VQ always has encoder attention: compare the released layout,
    import dataclasses  # pylint: disable=import-outside-toplevel  # then check that only those blocks go
    with_attention = dataclasses.replace(cfg, vq=dataclasses.replace(cfg.vq, encoder_attention=True))
    top = cfg.vq.base_channels * cfg.vq.channel_mult[-1]
    attention_block = 2 * top + 4 * (top * top + top)  # GroupNorm + q, k, v, proj_out 1x1 convs
    assert ours == param_count(with_attention) - (cfg.vq.num_res_blocks + 1) * attention_block, path
    cfg = with_attention
    ours = param_count(cfg)
  assert ours == _hf_param_count(cfg), path
  print(f"{path}: {ours:,} params")


def test_released_param_counts():
  counts = {p: param_count(JanusConfig.from_dict(load_config(f"experiments/{p}.py").model.to_dict()))
            for p in ("janus_pro_1b", "janus_pro_7b")}
  assert 2.0e9 < counts["janus_pro_1b"] < 2.2e9
  assert 7.3e9 < counts["janus_pro_7b"] < 7.5e9


def test_unknown_config_key_is_named():
  bad = load_config("experiments/janus_tiny.py").model.to_dict()
  bad["llm"]["hiden_size"] = 3
  with pytest.raises(ValueError, match="hiden_size"):
    JanusConfig.from_dict(bad)
  with pytest.raises(ValueError, match="Unknown config argument 'dtyp'"):
    parse_arg("dtyp=bfloat16", dtype="float32")


def test_config_argument_overrides():
  c = load_config("experiments/janus_pro_1b.py:dtype=bfloat16,scan=false")
  assert c.model.llm.dtype == "bfloat16" and c.model.llm.scan_layers is False


@pytest.mark.parametrize("spec", ["experiments/shapes_demo.py", "experiments/janus_stages.py:stage=2,size=shapes"])
def test_command_line_overrides_of_data_and_input_fields(spec):
  """--config.data.data_dir / input.workers / train.max_rows_per_device overrides parse as on the command line (a
  None default cannot be overridden by ml_collections: every such field needs a typed default)."""
  from janus_jax.plan import parse_config
  c = parse_config([f"--config={spec}", "--config.data.data_dir=/data/shapes", "--config.input.workers=2",
                    "--config.input.prefetch=0", "--config.train.max_rows_per_device=1"])
  assert (c.data.data_dir, c.input.workers, c.input.prefetch, c.train.max_rows_per_device) == ("/data/shapes", 2, 0, 1)
