"""Checkpoint import: config.json parsing (both layouts), weight-file reading, our orbax store and `convert`."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import jax
import ml_dtypes
import numpy as np
import pytest

from janus_jax.checkpoint import hf_layout, reader, store
from janus_jax.checkpoint.config_json import ConfigError, load_janus_config, write_deepseek_config
from janus_jax.checkpoint.convert import convert
from janus_jax.checkpoint.mapping import CheckpointMismatchError, flatten
from janus_jax.models.configs import JanusConfig, VQConfig
from torch_reference import TINY_JANUS, build_tiny_hf_janus, hf_state_numpy

TOKENIZER_FILES = {"tokenizer.json": '{"model": {}}', "tokenizer_config.json": '{"model_max_length": 16384}',
                   "special_tokens_map.json": '{"bos_token": "<s>"}', "preprocessor_config.json": "{}"}

# Janus-Pro-7B config.json as published (janus_models.md 1.9): language_config lists only these four fields.
PRO_7B = {
    "architectures": ["MultiModalityCausalLM"], "model_type": "multi_modality", "torch_dtype": "bfloat16",
    "language_config": {"max_position_embeddings": 16384, "model_type": "llama", "num_hidden_layers": 30,
                        "torch_dtype": "bfloat16", "vocab_size": 102400},
    "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision",
                      "params": {"image_size": 384, "model_name": "siglip_large_patch16_384",
                                 "select_feature": "same", "select_layer": -1}},
    "aligner_config": {"cls": "MlpProjector", "model_type": "aligner",
                       "params": {"depth": 2, "input_dim": 1024, "n_embed": 4096, "projector_type": "mlp_gelu"}},
    "gen_vision_config": {"cls": "VQ-16", "model_type": "gen_vision",
                          "params": {"image_token_size": 16384, "n_embed": 8}},
    "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner",
                           "params": {"depth": 2, "input_dim": 8, "n_embed": 4096, "projector_type": "mlp_gelu"}},
    "gen_head_config": {"cls": "vision_head", "model_type": "gen_head",
                        "params": {"image_token_embed": 4096, "image_token_size": 16384, "n_embed": 4096}},
}


def _write_json(path, obj):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj))


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  """(directory of a saved tiny transformers Janus + tokenizer files, its float32 state dict)."""
  pytest.importorskip("transformers")
  model = build_tiny_hf_janus(seed=3)
  d = tmp_path_factory.mktemp("hf")
  model.save_pretrained(d)
  for name, text in TOKENIZER_FILES.items():
    (d / name).write_text(text)
  return d, hf_state_numpy(model)


@pytest.fixture(scope="module")
def tiny_cfg():
  return JanusConfig.from_dict(TINY_JANUS)


@pytest.fixture(scope="module")
def deepseek_state(hf):
  """The tiny model renamed to DeepSeek keys, plus the two tensors the official checkpoints carry but we ignore."""
  state = hf_layout.hf_to_deepseek(hf[1])
  state["vision_model.vision_tower.attn_pool.latent"] = np.ones((1, 1, 64), np.float32)
  state["gen_vision_model.quantize.codebook_used"] = np.zeros((65536,), np.float32)
  return state


def _deepseek_dir(root, cfg, state, fmt):
  """Writes a DeepSeek-layout checkpoint: config.json + weights as 'safetensors' or sharded 'bin'."""
  root.mkdir(parents=True)
  write_deepseek_config(cfg, root)
  for name, text in TOKENIZER_FILES.items():
    (root / name).write_text(text)
  if fmt == "safetensors":
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(root / reader.SAFETENSORS))
  else:
    _save_bin_shards(root, state, 2)
  return root


def _save_bin_shards(root, state, n):
  torch = pytest.importorskip("torch")
  keys = sorted(state)
  weight_map = {}
  for i in range(n):
    name = f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin"
    part = {k: torch.from_numpy(np.array(state[k])) for k in keys[i::n]}
    torch.save(part, root / name)
    weight_map.update({k: name for k in part})
  _write_json(root / reader.PYTORCH_INDEX, {"metadata": {}, "weight_map": weight_map})


def _assert_trees_equal(a, b):
  fa, fb = flatten(a), flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    x, y = np.asarray(fa[k]), np.asarray(fb[k])
    assert x.dtype == y.dtype and x.shape == y.shape, k
    assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), k


# ----------------------------------------------------------------------------------------------- config.json


def test_config_transformers_layout(hf, tiny_cfg):
  cfg, info = load_janus_config(hf[0])
  assert cfg == tiny_cfg
  assert info["layout"] == "transformers" and info["image_token_id"] == 5
  assert info["tie_word_embeddings"] is False and info["torch_dtype"] == "float32"
  assert (info["bos_token_id"], info["eos_token_id"], info["pad_token_id"]) == (1, 2, 0)


def test_config_transformers_old_rope_theta_and_defaults(hf, tmp_path):
  raw = json.loads((hf[0] / "config.json").read_text())
  tc = raw["text_config"]
  tc.pop("rope_parameters")
  tc["rope_theta"] = 50000.0
  raw.pop("tie_word_embeddings")
  del raw["vq_config"]["num_hidden_layers"]
  _write_json(tmp_path / "config.json", raw)
  cfg, info = load_janus_config(tmp_path)
  assert cfg.llm.rope_theta == 50000.0
  assert cfg.gen_aligner.depth == 2  # JanusVQVAEConfig.num_hidden_layers default.
  assert info["tie_word_embeddings"] is True  # JanusConfig default (parity_references quirk 3).
  assert "vq_config.num_hidden_layers=2" in info["defaults_used"]


def test_config_deepseek_roundtrip(tiny_cfg, tmp_path):
  for i, cfg in enumerate([tiny_cfg, JanusConfig()]):
    path = write_deepseek_config(cfg, tmp_path / str(i))
    raw = json.loads(path.read_text())
    back, info = load_janus_config(path.parent)
    assert back == cfg and info["layout"] == "deepseek" and not info["defaults_used"]
    standard = i == 1
    assert ("janus_jax_vq" in raw["gen_vision_config"]["params"]) != standard
    assert ("janus_jax_vit" in raw["vision_config"]) != standard


def test_config_deepseek_pro7b_llama_defaults(tmp_path):
  """Janus-Pro-7B's sparse language_config must mean transformers' LlamaConfig defaults (4096/11008/32 heads)."""
  _write_json(tmp_path / "config.json", PRO_7B)
  cfg, info = load_janus_config(tmp_path)
  l = cfg.llm
  assert (l.hidden_size, l.intermediate_size, l.num_layers, l.num_heads, l.num_kv_heads) == (4096, 11008, 30, 32, 32)
  assert (l.vocab_size, l.max_position_embeddings, l.resolved_head_dim) == (102400, 16384, 128)
  assert (l.rms_norm_eps, l.rope_theta) == (1e-6, 10000.0)
  transformers = pytest.importorskip("transformers")  # The reference the defaults must agree with.
  LlamaConfig = transformers.LlamaConfig
  ref = LlamaConfig(**{k: v for k, v in PRO_7B["language_config"].items() if k != "model_type"})
  assert (ref.hidden_size, ref.intermediate_size, ref.num_attention_heads, ref.num_key_value_heads,
          ref.rms_norm_eps, ref.rope_parameters["rope_theta"]) == (l.hidden_size, l.intermediate_size, l.num_heads,
                                                                    l.num_kv_heads, l.rms_norm_eps, l.rope_theta)
  v = cfg.vision
  assert (v.width, v.depth, v.num_heads, v.mlp_dim, v.patch_size, v.image_size, v.num_blocks) == (
      1024, 24, 16, 4096, 16, 384, 24)
  assert cfg.vq == VQConfig() and cfg.gen_embed_dim == 8 and cfg.image_token_size == 16384
  assert (cfg.aligner.output_dim, cfg.gen_aligner.output_dim, cfg.gen_head.n_embed) == (4096, 4096, 4096)
  assert info["torch_dtype"] == "bfloat16" and info["tie_word_embeddings"] is False
  assert "language_config.hidden_size=4096" in info["defaults_used"]
  assert "language_config.intermediate_size=11008" in info["defaults_used"]


def test_config_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_janus_config(tmp_path)
  _write_json(tmp_path / "a" / "config.json", {"model_type": "bert", "hidden_size": 3})
  with pytest.raises(ConfigError, match="unknown config layout"):
    load_janus_config(tmp_path / "a")
  flow = dict(PRO_7B, vision_und_enc_config={})
  _write_json(tmp_path / "b" / "config.json", flow)
  with pytest.raises(ConfigError, match="JanusFlow"):
    load_janus_config(tmp_path / "b")
  scaled = json.loads(json.dumps(PRO_7B))
  scaled["language_config"]["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0}
  _write_json(tmp_path / "c" / "config.json", scaled)
  with pytest.raises(ConfigError, match="rope_type"):
    load_janus_config(tmp_path / "c")
  bad = json.loads(json.dumps(PRO_7B))
  bad["aligner_config"]["params"]["n_embed"] = 2048
  _write_json(tmp_path / "d" / "config.json", bad)
  with pytest.raises(ConfigError, match="aligner output_dim=2048 != LLM hidden_size=4096"):
    load_janus_config(tmp_path / "d")


# ----------------------------------------------------------------------------------------------- weight files


def _small_state():
  rng = np.random.default_rng(0)
  return {"a.weight": rng.standard_normal((3, 4)).astype(np.float32), "b.bias": rng.standard_normal(5).astype(
      np.float32), "c.idx": np.arange(6, dtype=np.int64).reshape(2, 3), "d.weight": rng.standard_normal(
          (2, 2, 3)).astype(np.float32)}


def test_read_sharded_safetensors(tmp_path):
  from safetensors.numpy import save_file
  state = _small_state()
  keys = sorted(state)
  weight_map = {}
  for i, part in enumerate((keys[:2], keys[2:])):
    name = f"model-{i + 1:05d}-of-00002.safetensors"
    save_file({k: state[k] for k in part}, str(tmp_path / name))
    weight_map.update({k: name for k in part})
  _write_json(tmp_path / reader.SAFETENSORS_INDEX, {"metadata": {}, "weight_map": weight_map})
  got = reader.read_state_dict(tmp_path, progress=True)
  assert sorted(got) == keys
  for k in keys:
    assert got[k].dtype == state[k].dtype and np.array_equal(got[k], state[k])
  # An index that names a shard that is not there.
  weight_map["e.weight"] = "model-00003-of-00002.safetensors"
  _write_json(tmp_path / reader.SAFETENSORS_INDEX, {"weight_map": weight_map})
  with pytest.raises(reader.CheckpointReadError, match="model-00003-of-00002.safetensors"):
    reader.read_state_dict(tmp_path)


def test_read_bin_single_and_sharded(tmp_path):
  torch = pytest.importorskip("torch")
  state = _small_state()
  (tmp_path / "one").mkdir()
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "one" / reader.PYTORCH)
  (tmp_path / "two").mkdir()
  _save_bin_shards(tmp_path / "two", state, 2)
  for d in ("one", "two"):
    got = reader.read_state_dict(tmp_path / d, progress=(d == "two"))
    assert sorted(got) == sorted(state)
    for k in state:
      assert got[k].dtype == state[k].dtype and np.array_equal(got[k], state[k])


def test_read_bfloat16(tmp_path):
  torch = pytest.importorskip("torch")
  from safetensors.torch import save_file
  t = torch.randn(4, 6).bfloat16()
  expect = t.float().numpy()
  save_file({"w": t, "n": torch.arange(3)}, str(tmp_path / reader.SAFETENSORS))
  got = reader.read_state_dict(tmp_path)
  assert got["w"].dtype == np.dtype(ml_dtypes.bfloat16) and np.array_equal(got["w"].astype(np.float32), expect)
  got32 = reader.read_state_dict(tmp_path, dtype="float32")
  assert got32["w"].dtype == np.float32 and np.array_equal(got32["w"], expect)
  assert got32["n"].dtype == np.int64  # Integers are never cast.
  (tmp_path / "bin").mkdir()
  torch.save({"w": t}, tmp_path / "bin" / reader.PYTORCH)
  got = reader.read_state_dict(tmp_path / "bin")
  assert got["w"].dtype == np.dtype(ml_dtypes.bfloat16) and np.array_equal(got["w"].astype(np.float32), expect)


def test_read_errors(tmp_path, monkeypatch):
  from safetensors.numpy import save_file
  with pytest.raises(FileNotFoundError, match="does not exist"):
    reader.read_state_dict(tmp_path / "nope")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "config.json").write_text("{}")
  with pytest.raises(reader.CheckpointReadError, match=r"No weight files.*model.safetensors.*config.json"):
    reader.read_state_dict(tmp_path / "empty")
  (tmp_path / "trunc").mkdir()
  path = tmp_path / "trunc" / reader.SAFETENSORS
  save_file(_small_state(), str(path))
  path.write_bytes(path.read_bytes()[:-20])
  with pytest.raises(reader.CheckpointReadError, match=r"model.safetensors.*truncated"):
    reader.read_state_dict(tmp_path / "trunc")
  path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
  with pytest.raises(reader.CheckpointReadError, match=r"model.safetensors.*corrupt"):
    reader.read_state_dict(tmp_path / "trunc")
  (tmp_path / "bin").mkdir()
  (tmp_path / "bin" / reader.PYTORCH).write_bytes(b"PK\x03\x04 this is not a torch file")
  with pytest.raises(reader.CheckpointReadError, match="pytorch_model.bin"):
    reader.read_state_dict(tmp_path / "bin")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError.
  with pytest.raises(reader.CheckpointReadError, match=r"pip install 'janus_jax\[torch\]'"):
    reader.read_state_dict(tmp_path / "bin")


# ----------------------------------------------------------------------------------------------- our store


def test_store_roundtrip(tiny_cfg, tmp_path, hf):
  rng = np.random.default_rng(1)
  params = {"a": {"kernel": rng.standard_normal((3, 4)).astype(np.float32),
                  "bias": rng.standard_normal(4).astype(ml_dtypes.bfloat16)},
            "layers": {"scale": rng.standard_normal((2, 5)).astype(np.float32)},
            "count": np.arange(3, dtype=np.int32)}
  out = store.save_checkpoint(tmp_path / "ck", params, tiny_cfg, tokenizer_dir=hf[0], extra_info={"note": "x"})
  got, cfg = store.load_checkpoint(out)
  assert cfg == tiny_cfg == store.load_config(out)
  _assert_trees_equal(got, params)
  assert store.load_info(out)["note"] == "x"
  assert sorted(p.name for p in store.tokenizer_path(out).iterdir()) == sorted(TOKENIZER_FILES)
  dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  got_sharded, _ = store.load_checkpoint(out, sharding=jax.tree.map(lambda _: dev, params))
  _assert_trees_equal(got_sharded, params)
  assert got_sharded["a"]["kernel"].sharding == dev
  got16, cfg16 = store.load_checkpoint(out, dtype="bfloat16")
  assert got16["a"]["kernel"].dtype == np.dtype(ml_dtypes.bfloat16) and got16["count"].dtype == np.int32
  assert cfg16.llm.param_dtype == "bfloat16" and cfg16.vq.param_dtype == "bfloat16"
  with pytest.raises(FileExistsError, match="overwrite"):
    store.save_checkpoint(out, params, tiny_cfg)
  store.save_checkpoint(out, params, tiny_cfg, overwrite=True)
  assert store.tokenizer_path(out) is None
  with pytest.raises(store.NotAJanusCheckpointError, match="janus-jax convert"):
    store.load_checkpoint(hf[0])


# ----------------------------------------------------------------------------------------------- convert


@pytest.fixture(scope="module")
def converted_hf(hf, tmp_path_factory):
  return convert(hf[0], tmp_path_factory.mktemp("out") / "hf", progress=False)


def test_convert_hf_checkpoint(hf, tiny_cfg, converted_hf):
  params, cfg = store.load_checkpoint(converted_hf)
  assert cfg == tiny_cfg
  state = hf[1]
  np.testing.assert_array_equal(np.asarray(params["gen_embed"]["embedding"]),
                                state["model.generation_embeddings.weight"])
  np.testing.assert_array_equal(np.asarray(params["language_model"]["lm_head"]["kernel"]), state["lm_head.weight"].T)
  info = store.load_info(converted_hf)
  assert info["source_layout"] == "transformers" and info["image_token_id"] == 5
  assert info["num_params"] == sum(v.size for v in state.values())
  assert sorted(info["tokenizer_files"]) == sorted(TOKENIZER_FILES)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_convert_deepseek_matches_hf(fmt, tiny_cfg, deepseek_state, converted_hf, tmp_path):
  src = _deepseek_dir(tmp_path / "src", tiny_cfg, deepseek_state, fmt)
  out = convert(src, tmp_path / "out", progress=(fmt == "bin"))
  a, cfg_a = store.load_checkpoint(converted_hf)
  b, cfg_b = store.load_checkpoint(out)
  assert cfg_a == cfg_b
  _assert_trees_equal(a, b)
  assert store.load_info(out)["source_layout"] == "deepseek"


def test_convert_bfloat16_and_tied_head(hf, tiny_cfg, tmp_path):
  """bf16 output; and a transformers checkpoint saved with tied embeddings (no lm_head tensor)."""
  from safetensors.numpy import save_file
  src = tmp_path / "tied"
  src.mkdir()
  raw = json.loads((hf[0] / "config.json").read_text())
  raw["tie_word_embeddings"] = True
  _write_json(src / "config.json", raw)
  save_file({k: v for k, v in hf[1].items() if k != "lm_head.weight"}, str(src / reader.SAFETENSORS))
  out = convert(src, tmp_path / "out", dtype="bfloat16", progress=False)
  params, cfg = store.load_checkpoint(out)
  assert cfg == store.with_param_dtype(tiny_cfg, "bfloat16")
  kernel = np.asarray(params["language_model"]["lm_head"]["kernel"])
  assert kernel.dtype == np.dtype(ml_dtypes.bfloat16)
  embed = hf[1]["model.language_model.embed_tokens.weight"]
  np.testing.assert_array_equal(kernel, embed.T.astype(ml_dtypes.bfloat16))


def test_convert_strict_errors(tiny_cfg, deepseek_state, tmp_path):
  state = dict(deepseek_state)
  del state["language_model.model.norm.weight"]
  state["language_model.model.extra_proj.weight"] = np.zeros((2, 2), np.float32)
  state["gen_head.vision_head.bias"] = np.zeros((7,), np.float32)
  src = _deepseek_dir(tmp_path / "src", tiny_cfg, state, "safetensors")
  with pytest.raises(CheckpointMismatchError) as e:
    convert(src, tmp_path / "out", progress=False)
  msg = str(e.value)
  assert "language_model/model/norm/scale" in msg
  assert "language_model.model.extra_proj.weight" in msg
  assert "gen_head.vision_head.bias" in msg and "(7,)" in msg
  assert not (tmp_path / "out").exists()


def test_convert_config_architecture_mismatch(tiny_cfg, deepseek_state, tmp_path):
  """A config that disagrees with the weights (3 LLM layers, weights have 2) is reported as missing layers."""
  cfg = dataclasses.replace(tiny_cfg, llm=dataclasses.replace(tiny_cfg.llm, num_layers=3))
  src = _deepseek_dir(tmp_path / "src", cfg, deepseek_state, "safetensors")
  with pytest.raises(CheckpointMismatchError, match=r"layers \[2\]"):
    convert(src, tmp_path / "out", progress=False)
  shutil.rmtree(src)
