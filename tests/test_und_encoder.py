"""`model.und_encoder`: 'vq' (understanding reads the VQ's quantized latents, no SigLIP) next to the default 'siglip':
param trees, features, gradients through the real train step and its stage masks, config errors, config export, and
the main job end to end with `--config.model.und_encoder=vq`."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from janus_jax.checkpoint.config_json import load_janus_config, write_deepseek_config
from janus_jax.configs import models
from janus_jax.configs.common import load_config
from janus_jax.models import und_encoder
from janus_jax.models.aligners import Aligner
from janus_jax.models.configs import JanusConfig
from janus_jax.models.janus import JanusModel, abstract_params
from janus_jax.models.vq import VQModel, l2_normalize
from janus_jax.train import batch as batch_lib
from janus_jax.train import optim
from janus_jax.train import state as state_lib
from janus_jax.train import step as step_lib
from janus_jax.train.inputs import ConfigError, check_settings

RNG = jax.random.PRNGKey(1)
FAST = {"xla_backend_optimization_level": 0}


def _tiny(und: str = "vq") -> dict:
  """janus_tiny with an 8x-down VQ: 32 px -> 4x4 = 16 codes = the 16 SigLIP patches; aligner width from the encoder."""
  d = models.janus_tiny()
  d["vq"] = dict(d["vq"], channel_mult=(1, 1, 2, 2))
  d["aligner"] = dict(d["aligner"], input_dim=0)
  d["und_encoder"] = und
  return d


def _shapes(tree) -> dict:
  return {optim.path_str(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def cfg():
  return JanusConfig.from_dict(_tiny())


@pytest.fixture(scope="module")
def params(cfg):
  return state_lib.init_model_params(cfg, jax.random.PRNGKey(0))


def test_vq_tree_is_the_siglip_tree_without_vision_model(cfg):
  sig_cfg = JanusConfig.from_dict(_tiny("siglip"))
  sig, vq = _shapes(abstract_params(sig_cfg)), _shapes(abstract_params(cfg))
  assert any(k.startswith("vision_model/") for k in sig) and not any(k.startswith("vision_model/") for k in vq)
  want = {k: v for k, v in sig.items() if not k.startswith("vision_model/")}
  want["aligner/layers_0/kernel"] = (cfg.vq.codebook_dim, cfg.llm.hidden_size)
  assert vq == want
  assert (cfg.aligner.input_dim, sig_cfg.aligner.input_dim) == (8, 64)
  assert cfg.num_image_tokens == sig_cfg.num_image_tokens == 16 and cfg.generated_image_size == 32
  assert state_lib.param_logical_problems(cfg) == []
  # The default is siglip, and a config without the field (every older checkpoint) is the same model as before.
  old = models.janus_tiny()
  del old["und_encoder"]
  assert JanusConfig.from_dict(old) == JanusConfig.from_dict(models.janus_tiny()) == JanusConfig.from_dict(
      dict(models.janus_tiny(), aligner=dict(models.janus_tiny()["aligner"], input_dim=0)))
  assert JanusConfig().und_encoder == "siglip" and und_encoder.NAMES == ("siglip", "vq")
  assert und_encoder.absent_modules(cfg) == ("vision_model",) and und_encoder.absent_modules(sig_cfg) == ()


def test_vq_features_are_the_aligned_quantized_latents(cfg, params):
  px = jax.random.uniform(RNG, (2, 32, 32, 3), minval=-1.0, maxval=1.0)

  @jax.jit
  def run(p, x):  # one compile for both (eager Linen dispatch is slower on 2 cores)
    feats = JanusModel(cfg).apply({"params": p}, x, method=JanusModel.image_features)
    _, codes, _ = VQModel(cfg.vq).apply({"params": p["gen_vision_model"]}, x, method=VQModel.encode)
    return feats, codes

  feats, codes = (np.asarray(x) for x in run(params, px))
  codebook = l2_normalize(params["gen_vision_model"]["quantize"]["embedding"]["embedding"])
  latents = np.asarray(codebook)[codes.reshape(2, -1)]  # raster order, float[2, 16, 8]
  want = np.asarray(Aligner(cfg.aligner).apply({"params": params["aligner"]}, latents))
  assert feats.shape == (2, 16, cfg.llm.hidden_size)
  np.testing.assert_allclose(feats, want, atol=1e-5, rtol=1e-5)


def test_understanding_gradient_reaches_the_vq_encoder_only_when_trainable(cfg, params):
  """Understanding rows only (text loss): with the VQ trainable its encoder moves (decoder and codebook get no
  gradient through the straight-through estimator); with stage 3's `gen_vision_model/.*` frozen it is not even
  differentiated and stays bit-identical. Stage 2's `vision_model/.*` names a module this model does not build."""
  batch = batch_lib.synthetic_batch(cfg, 2, 32, 0, kinds=("und",))
  step = step_lib.make_train_step(cfg, dict(pad_id=0, cfg_dropout=0.0))
  vqp = lambda s: s.params["gen_vision_model"]
  moved = lambda a, b: {k for k in a if any(not np.array_equal(x, y) for x, y in zip(
      jax.tree.leaves(a[k]), jax.tree.leaves(b[k])))}

  everything = state_lib.create_train_state(cfg, dict(lr=1e-3), params=params)
  new, m = jax.jit(step, compiler_options=FAST)(everything, batch, RNG)
  assert float(m["tokens_text"]) > 0 and float(m["tokens_image"]) == 0
  assert moved(vqp(everything), vqp(new)) == {"encoder", "quant_conv"}

  frozen = state_lib.create_train_state(cfg, dict(lr=1e-3, **optim.stage_trainable(3)), params=params)
  assert not any(p.startswith("gen_vision_model/") for p in frozen.trainable)
  new, _ = jax.jit(step, compiler_options=FAST)(frozen, batch, RNG)
  assert moved(vqp(frozen), vqp(new)) == set()
  assert not np.array_equal(new.params["aligner"]["layers_0"]["kernel"], params["aligner"]["layers_0"]["kernel"])

  stage2 = state_lib.abstract_state(cfg, dict(lr=1e-3, **optim.stage_trainable(2)))  # frozen: vision_model/.* too
  assert stage2.trainable and not any(p.startswith("gen_vision_model/") for p in stage2.trainable)
  with pytest.raises(ValueError, match="'vison_model/.\\*' matches no parameter"):  # typos still raise
    state_lib.abstract_state(cfg, dict(lr=1e-3, frozen=["vison_model/.*"]))
  with pytest.raises(ValueError, match="'vision_model/typo' matches no parameter"):  # siglip: as before
    state_lib.abstract_state(JanusConfig.from_dict(_tiny("siglip")), dict(lr=1e-3, frozen=["vision_model/typo"]))


def test_bad_configs_name_the_field_and_the_fix():
  with pytest.raises(ValueError, match=r"Unknown model.und_encoder 'clip'; valid: \['siglip', 'vq'\]"):
    JanusConfig.from_dict(_tiny("clip"))
  with pytest.raises(ValueError, match="und_encoder='vq' needs generation_mode 'ar_vq'.*und_encoder=siglip"):
    JanusConfig.from_dict(dict(models.janusflow_tiny(), und_encoder="vq"))
  bad = _tiny()
  bad["vision"] = dict(bad["vision"], image_size=36)
  with pytest.raises(ValueError, match=r"model.vision.image_size=36 to be a multiple of the VQ downsample factor 8.*"
                                       r"--config.model.vision.image_size=32"):
    JanusConfig.from_dict(bad)
  bad = _tiny()
  bad["aligner"]["input_dim"] = 64
  with pytest.raises(ValueError, match="model.aligner.input_dim=64 .* model.vq.codebook_dim=8.*input_dim=8"):
    JanusConfig.from_dict(bad)
  # At config-check time (before any work), as ConfigError.
  for arg, value, match in (("fast", "clip", "Unknown model.und_encoder"), ("fast,gen=flow", "vq", "needs generation")):
    config = load_config(f"experiments/shapes_demo.py:{arg}")
    config.model.und_encoder = value
    with pytest.raises(ConfigError, match=match):
      check_settings(config)


def test_config_export_round_trips(cfg, tmp_path):
  assert JanusConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # janus_config.json (store)
  path = write_deepseek_config(cfg, tmp_path / "vq")  # DeepSeek config.json with the janus_jax extension
  assert json.loads(path.read_text())["vision_config"]["janus_jax_und_encoder"] == "vq"
  assert load_janus_config(path.parent)[0] == cfg
  sig = JanusConfig.from_dict(_tiny("siglip"))
  path = write_deepseek_config(sig, tmp_path / "siglip")
  assert "janus_jax_und_encoder" not in json.loads(path.read_text())["vision_config"]
  assert load_janus_config(path.parent)[0] == sig


def test_main_job_trains_and_understands_with_und_encoder_vq(tmp_path):
  """`python -m janus_jax.main ... --config.model.und_encoder=vq` as a user runs it (2 VQ steps, 2 Janus steps),
  then `janus_jax.load(model).understand` on the exported checkpoint, which holds no SigLIP."""
  workdir = tmp_path / "w"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-m", "janus_jax.main", "--config=experiments/shapes_demo.py:fast",
                        f"--workdir={workdir}", "--mode=train", "--config.model.und_encoder=vq",
                        "--config.vq.steps=2", "--config.vq.num_images=32", "--config.train.num_steps=2",
                        "--config.optim.warmup_steps=1", "--config.input.batch_size=4"], capture_output=True, text=True, env=env, timeout=900)
  assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
  import janus_jax  # pylint: disable=import-outside-toplevel
  pipe = janus_jax.load(str(workdir / "model"))
  assert pipe.cfg.und_encoder == "vq" and "vision_model" not in pipe.params
  assert pipe.params["aligner"]["layers_0"]["kernel"].shape[0] == pipe.cfg.vq.codebook_dim
  image = np.zeros((32, 32, 3), np.uint8)
  image[8:24, 8:24] = (255, 0, 0)
  answers = pipe.understand([image], ["What shape is this?"], max_new_tokens=4)
  assert len(answers) == 1 and isinstance(answers[0], str)
