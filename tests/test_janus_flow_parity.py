"""JanusFlow end to end against the hand-written torch reference (tests/flow_reference.py), tiny, fp32, offline.

The reference's state_dict is written in the original JanusFlow checkpoint layout (model.safetensors + a JanusFlow
config.json carrying the shipped ignored keys), next to a tiny diffusers AutoencoderKL saved with save_pretrained;
both are imported by our converter's command line (`python -m janus_jax.checkpoint.convert --vae`) and loaded with
`janus_jax.load`, the path a user takes with JanusFlow-1.3B + SDXL-VAE.
"""
import dataclasses
import json
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
torch.set_num_threads(1)  # Tiny ops: extra OpenMP threads only spin against XLA's on a loaded 2-core machine.

import flow_reference as ref
import janus_jax
from janus_jax import api
from janus_jax.checkpoint import config_json, convert as convert_lib, janusflow_layout, store
from janus_jax.checkpoint.config_json import ConfigError, load_janus_config
from janus_jax.checkpoint.diffusers_vae import config_to_diffusers, load_diffusers_vae
from janus_jax.checkpoint.mapping import CheckpointMismatchError, flatten
from janus_jax.checkpoint.reader import read_state_dict
from janus_jax.configs import models
from janus_jax.models.configs import JanusConfig
from janus_jax.models.llama import causal_mask, positions_from_mask
from janus_jax.models.uvit import uvit_param_count
from janus_jax.processing import chat
from janus_jax.sampling import flow_image

PAD, BOS, EOS, IMG, EOI, BOI = 0, 1, 2, 5, 6, 7  # tiny_assets ids.
STEPS, WEIGHT = 30, 2.0  # The official sampling defaults.
VAE_SCALE = 0.5


def _max_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _nchw(a):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32).transpose(0, 3, 1, 2)))


def _nhwc(t):
  return t.detach().permute(0, 2, 3, 1).numpy()


def _write_source(root, cfg, state):
  return ref.write_janusflow_source(root, cfg, state)


@pytest.fixture(scope="module")
def tiny_cfg():
  return JanusConfig.from_dict(models.janusflow_tiny())


@pytest.fixture(scope="module")
def ref_model(tiny_cfg):
  return ref.build_reference_janusflow(tiny_cfg, seed=0)


@pytest.fixture(scope="module")
def files(tiny_cfg, ref_model, tmp_path_factory):
  """(source checkpoint dir, VAE dir, torch VAE) on disk."""
  from diffusers import AutoencoderKL
  root = tmp_path_factory.mktemp("janusflow")
  src = _write_source(root / "src", tiny_cfg, ref.state_numpy(ref_model))
  torch.manual_seed(5)
  vae = AutoencoderKL(**config_to_diffusers(dataclasses.replace(tiny_cfg.vae, scaling_factor=VAE_SCALE))).eval()
  vae.save_pretrained(root / "vae")
  return src, root / "vae", vae


@pytest.fixture(scope="module")
def converted(files, tmp_path_factory):
  """The source converted through the command-line entry point (`python -m janus_jax.checkpoint.convert`)."""
  src, vae_dir, _ = files
  dst = tmp_path_factory.mktemp("converted") / "ckpt"
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # The shipped ignored keys (elementwize_affine, num_extra_tensors) are silent.
    assert convert_lib.main(["--from", str(src), "--to", str(dst), "--vae", str(vae_dir), "--quiet"]) == 0
  return dst


@pytest.fixture(scope="module")
def pipe(converted):
  return janus_jax.load(str(converted))


# ------------------------------------------------------------------------------------------------- config.json


def test_shipped_janusflow_config():
  """JanusFlow-1.3B's config.json (janus_models.md 1.6-1.9: sparse language_config, the encoder's typo key and
  num_extra_tensors) -> the janusflow_1_3b architecture."""
  raw = {
      "architectures": ["MultiModalityCausalLM"], "model_type": "multi_modality", "torch_dtype": "bfloat16",
      "language_config": {"hidden_size": 2048, "intermediate_size": 5632, "num_attention_heads": 16,
                          "num_hidden_layers": 24, "num_key_value_heads": 16, "vocab_size": 102400,
                          "model_type": "llama", "torch_dtype": "bfloat16"},
      "vision_und_enc_config": {"cls": "CLIPVisionTower", "model_type": "vision_und_enc", "params": {
          "image_size": 384, "model_name": "siglip_large_patch16_384", "select_feature": "same",
          "select_layer": -1}},
      "vision_gen_enc_config": {"cls": "ShallowUViTEncoder", "model_type": "vision_gen_enc", "params": {
          "input_channels": 4, "kernel_size": 2, "stride": 2, "padding": 0, "block_out_channels": [768],
          "layers_in_middle": 2, "hidden_size": 2048, "norm_eps": 1e-6, "use_bias": True, "use_mid_block": True,
          "elementwize_affine": True, "num_extra_tensors": 5}},
      "vision_gen_dec_config": {"cls": "ShallowUViTDecoder", "model_type": "vision_gen_dec", "params": {
          "in_channels": 768, "out_channels": 4, "block_out_channels": [768], "upsamples": 1,
          "layers_in_middle": 2, "hidden_size": 2048, "norm_eps": 1e-6, "use_bias": True, "use_mid_block": True}},
  }
  cfg = janusflow_layout.parse(raw, used := [])
  want = JanusConfig.from_dict(models.janusflow_1_3b())
  arch = lambda c: {k: v for k, v in dataclasses.asdict(c).items() if k != "max_position_embeddings"}
  assert cfg.generation_mode == "flow"
  assert arch(cfg.llm) == arch(want.llm)
  assert (cfg.vision, cfg.aligner, cfg.uvit, cfg.repa) == (want.vision, want.aligner, want.uvit, want.repa)
  assert uvit_param_count(cfg.uvit) == 72_175_632
  assert (cfg.latent_size, cfg.num_image_tokens) == (48, 576)
  assert "language_config.rms_norm_eps=1e-06" in used and not any("elementwize" in u for u in used)


def test_config_roundtrip_and_layout(files, tiny_cfg):
  cfg, info = load_janus_config(files[0])
  assert info["layout"] == "janusflow" and info["torch_dtype"] == "float32"
  assert (cfg.llm, cfg.vision, cfg.aligner, cfg.uvit) == (tiny_cfg.llm, tiny_cfg.vision, tiny_cfg.aligner,
                                                          tiny_cfg.uvit)
  assert cfg.aligner.kind == "linear" and not info["defaults_used"]


def test_config_errors(files, tmp_path):
  raw = json.loads((files[0] / "config.json").read_text())

  def load(mutate, name):
    bad = json.loads(json.dumps(raw))
    mutate(bad)
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(json.dumps(bad))
    return load_janus_config(tmp_path / name)

  with pytest.raises(ConfigError, match=r"upsamples=2 != the shipped value 1"):
    load(lambda r: r["vision_gen_dec_config"]["params"].pop("upsamples"), "a")  # Official default 2.
  with pytest.raises(ConfigError, match=r"kernel_size=7, stride=4"):
    load(lambda r: [r["vision_gen_enc_config"]["params"].pop(k) for k in ("kernel_size", "stride", "padding")], "b")
  with pytest.raises(ConfigError, match=r"in_channels=16 != encoder width 32"):
    load(lambda r: r["vision_gen_dec_config"]["params"].update(in_channels=16), "c")
  with pytest.raises(ConfigError, match=r"UViT hidden_size=32 != LLM hidden_size=64"):
    load(lambda r: [r[s]["params"].update(hidden_size=32) for s in ("vision_gen_enc_config",
                                                                     "vision_gen_dec_config")], "d")
  with pytest.raises(ConfigError, match=r"mixes JanusFlow sections .* with Janus / Janus-Pro sections"):
    load(lambda r: r.update(gen_vision_config={"cls": "VQ-16", "params": {}}), "e")
  with pytest.raises(ConfigError, match=r"vision_gen_dec_config.*missing"):
    load(lambda r: r.pop("vision_gen_dec_config"), "f")


# ----------------------------------------------------------------------------------------------------- import


def test_converted_checkpoint(files, converted, pipe, ref_model):
  pool = [k for k in read_state_dict(files[0]) if k.startswith("vision_und_enc_model.vision_tower.attn_pool.")]
  assert pool  # In the source (as in the release), ignored by the import.
  info = store.load_info(converted)
  assert info["source_layout"] == "janusflow" and info["generation_mode"] == "flow"
  assert info["template"] == "deepseek_old" and pipe.template == "deepseek_old"
  assert pipe.cfg.generation_mode == "flow" and pipe.cfg.vae.scaling_factor == VAE_SCALE
  assert "repa_projector" not in pipe.params  # Training-only; not imported, not stored.
  vae_cfg, vae_params = load_diffusers_vae(files[1])
  assert pipe.cfg.vae == vae_cfg
  fa, fb = flatten(pipe.params["vae"]), flatten(vae_params)
  assert sorted(fa) == sorted(fb) and all(np.array_equal(np.asarray(fa[k]), fb[k]) for k in fa)
  beg = np.asarray(pipe.params["beg_of_und_embed"])
  np.testing.assert_array_equal(beg, ref_model.beg_of_und_embed.detach().numpy())


def test_strict_import_errors(files, ref_model, tmp_path):
  src, vae_dir, _ = files
  with pytest.raises(convert_lib.MissingVAEError, match=r"JanusFlow checkpoint.*stabilityai/sdxl-vae.*--vae DIR"):
    convert_lib.convert(str(src), str(tmp_path / "novae"), progress=False)
  with pytest.raises(convert_lib.MissingVAEError, match=r"--vae"):
    convert_lib.main(["--from", str(src), "--to", str(tmp_path / "novae2"), "--quiet"])
  assert not (tmp_path / "novae").exists()
  config_json.write_deepseek_config(JanusConfig.from_dict(models.janus_tiny()), tmp_path / "janus")
  with pytest.raises(ConfigError, match=r"applies to JanusFlow checkpoints only"):
    convert_lib.convert(str(tmp_path / "janus"), str(tmp_path / "j"), vae=str(vae_dir), progress=False)

  state = ref.state_numpy(ref_model)
  del state["vision_gen_dec_aligner_norm.weight"]
  state["vision_gen_enc_model.extra_head.weight"] = np.zeros((3, 3), np.float32)
  state["beg_of_und_embed"] = np.zeros((1, 32), np.float32)
  tiny = JanusConfig.from_dict(models.janusflow_tiny())
  bad = _write_source(tmp_path / "bad", tiny, state)
  with pytest.raises(CheckpointMismatchError) as e:
    convert_lib.convert(str(bad), str(tmp_path / "out"), vae=str(vae_dir), progress=False)
  msg = str(e.value)
  print(msg)
  assert "missing tensor(s)" in msg and "vision_gen_dec_aligner_norm/scale (64,)" in msg
  assert "1 unexpected tensor(s)" in msg and "vision_gen_enc_model.extra_head.weight (3, 3)" in msg
  assert "1 mis-shaped tensor(s)" in msg and "beg_of_und_embed: checkpoint (1, 32) -> expected (1, 64)" in msg
  assert "repa_projector" not in msg and "vae/" not in msg  # Neither is expected in a JanusFlow checkpoint.

  from diffusers import AutoencoderKL
  wide = dataclasses.replace(tiny.vae, latent_channels=8)
  AutoencoderKL(**config_to_diffusers(wide)).save_pretrained(tmp_path / "vae8")
  with pytest.raises(ConfigError, match=r"latent_channels=8 .* 4-channel latents"):
    convert_lib.convert(str(src), str(tmp_path / "out8"), vae=str(tmp_path / "vae8"), progress=False)


# ------------------------------------------------------------------------------------------------- numerics


def test_understanding_logits(pipe, ref_model):
  """Teacher-forced text logits with an image: 17 slots (`beg_of_und_embed` at <begin_of_image> + 16 features)."""
  n = pipe.cfg.num_image_tokens
  rows = [[BOS, 10, 11, BOI] + [IMG] * n + [EOI, 12, 13, 14], [BOS, 20, BOI] + [IMG] * n + [EOI, 21]]
  t = max(map(len, rows))
  ids = np.full((2, t), PAD, np.int32)
  valid = np.zeros((2, t), bool)
  for i, r in enumerate(rows):
    ids[i, t - len(r):], valid[i, t - len(r):] = r, True
  seq_mask = (ids == IMG) | (ids == BOI)
  assert seq_mask.sum(1).tolist() == [n + 1, n + 1]
  pixels = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  pos = np.maximum(np.cumsum(valid, 1) - 1, 0)
  with torch.no_grad():
    want = ref_model.understanding_logits(
        torch.from_numpy(ids).long(), _nchw(pixels)[:, None], torch.from_numpy(seq_mask),
        torch.ones(2, 1, n + 1, dtype=torch.bool), torch.from_numpy(valid).long(),
        torch.from_numpy(pos).long()).numpy()
  ours = np.asarray(pipe.model.apply({"params": pipe.params}, ids, seq_mask, pixels[:, None],
                                     positions_from_mask(valid), causal_mask(valid, t)))
  err = max(_max_err(ours[i][valid[i]], want[i][valid[i]]) for i in range(2))
  print(f"understanding text logits: max abs err {err:.3g} (|logits| <= {np.abs(want).max():.3g})")
  assert err <= 1e-4
  # The <begin_of_image> slot really holds beg_of_und_embed: a zero embedding there changes the logits.
  params = dict(pipe.params, beg_of_und_embed=jnp.zeros_like(pipe.params["beg_of_und_embed"]))
  other = np.asarray(pipe.model.apply({"params": params}, ids, seq_mask, pixels[:, None],
                                      positions_from_mask(valid), causal_mask(valid, t)))
  assert _max_err(other[0][valid[0]], want[0][valid[0]]) > 100 * err


def _prompt_rows(pipe, prompts):
  """The pipeline's own generation rows: (ids int32[P, T] left padded, valid bool[P, T])."""
  batch = chat.prepare_generation_batch(pipe.tokenizer, prompts, pipe.template,
                                        pad_to_multiple_of=api.PROMPT_BUCKET)
  return batch["input_ids"], batch["attention_mask"]


def _ref_latents(ref_model, ids, valid, z0, num_steps, pad_id):
  """The torch loop per prompt (the official loop batches copies of one prompt, never padded)."""
  out = []
  for i in range(ids.shape[0]):
    z = ref_model.generate_latents(ids[i][valid[i]].tolist(), _nchw(z0[i:i + 1]), num_steps, WEIGHT, pad_id)
    out.append(_nhwc(z))
  return np.concatenate(out)


@pytest.fixture(scope="module")
def noise(pipe):
  return np.asarray(np.random.default_rng(7).standard_normal(flow_image.latent_shape(pipe.cfg, 2)), np.float32)


def test_one_euler_step_velocity(pipe, ref_model, noise):
  """The guided velocity of the first step (t = 0), ours (cached and recompute samplers, N = 1: z1 = z0 + v)."""
  ids, valid = _prompt_rows(pipe, ["a red circle", "two green triangles left of a blue square"])
  pad = pipe.tokenizer.pad_id
  with torch.no_grad():
    want = []
    for i in range(2):
      embeds, mask = ref_model.cfg_prompt(ids[i][valid[i]].tolist(), 1, pad)
      want.append(_nhwc(ref_model.guided_velocity(embeds, mask, _nchw(noise[i:i + 1]), 0.0, WEIGHT)))
    want = np.concatenate(want)
  scale = float(np.abs(want).max())
  for cached in (True, False):
    run = flow_image.compiled_flow_generate(pipe.model, num_steps=1, prompt_cache=cached)
    z1 = np.asarray(run(pipe.params, jnp.asarray(ids), jnp.asarray(valid), jnp.asarray(noise), jnp.float32(WEIGHT),
                        jnp.int32(pad)))
    rel = _max_err(z1 - noise, want) / scale
    print(f"one Euler step, guided velocity ({'cached' if cached else 'recompute'}): max abs err / max |v| = "
          f"{rel:.3g} (max |v| {scale:.3g})")
    assert rel <= 1e-5


def test_full_sampler_and_pipeline(pipe, ref_model, noise, files):
  prompts = ["a red circle", "two green triangles left of a blue square"]
  ids, valid = _prompt_rows(pipe, prompts)
  pad = pipe.tokenizer.pad_id
  with torch.no_grad():
    want = _ref_latents(ref_model, ids, valid, noise, STEPS, pad)
  args = (pipe.params, jnp.asarray(ids), jnp.asarray(valid), jnp.asarray(noise), jnp.float32(WEIGHT), jnp.int32(pad))
  cached = np.asarray(flow_image.compiled_flow_generate(pipe.model, num_steps=STEPS)(*args))
  recompute = np.asarray(flow_image.compiled_flow_generate(pipe.model, num_steps=STEPS, prompt_cache=False)(*args))
  errs = dict(cached=_max_err(cached, want), recompute=_max_err(recompute, want),
              cached_vs_recompute=_max_err(cached, recompute))
  print(f"{STEPS}-step Euler sampler vs torch (max |z| {np.abs(want).max():.3g}, moved by "
        f"{_max_err(want, noise):.3g}): " + ", ".join(f"{k} {v:.3g}" for k, v in errs.items()))
  assert errs["cached"] <= 1e-4 and errs["recompute"] <= 1e-4 and errs["cached_vs_recompute"] <= 1e-5

  out = pipe.generate(prompts, noise=noise, num_steps=STEPS, cfg_weight=WEIGHT)
  again = pipe.generate(prompts, noise=noise, num_steps=STEPS, cfg_weight=WEIGHT)
  np.testing.assert_array_equal(out.latents, again.latents)
  np.testing.assert_array_equal(out.images, again.images)
  np.testing.assert_array_equal(out.latents, cached)  # The pipeline is the cached sampler on its own rows.
  assert out.tokens is None and out.prompts == prompts
  assert out.images.shape == (2, 16, 16, 3) and out.images.dtype == np.uint8
  with torch.no_grad():  # The official decode: vae.decode(z / scaling_factor), clip, (x + 1) / 2, uint8.
    img = files[2].decode(_nchw(out.latents) / VAE_SCALE).sample.clamp(-1, 1)
  want_img = np.round((_nhwc(img) + 1) / 2 * 255)
  print(f"decoded images vs diffusers: max abs err {_max_err(out.images, want_img):.3g} (uint8 levels)")
  assert _max_err(out.images, want_img) <= 1


def test_understand_runs(pipe):
  image = np.random.default_rng(0).integers(0, 255, (40, 24, 3), np.uint8)
  answers = pipe.understand([image], ["what colour is the circle?"], max_new_tokens=4)
  assert len(answers) == 1 and isinstance(answers[0], str)
