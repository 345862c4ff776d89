"""Compute dtype and matmul precision by platform (janus_jax.precision): "auto" resolution, errors that name the
field, bf16 logits and one bf16 train step against fp32 on the tiny model, and `janus_jax.load` defaults."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import janus_jax
from janus_jax import precision
from janus_jax.configs import models
from janus_jax.configs.common import load_config
from janus_jax.models.configs import JanusConfig
from janus_jax.models.janus import JanusModel, dummy_inputs, init_params
from janus_jax.train import batch as batch_lib
from janus_jax.train import optim
from janus_jax.train import state as state_lib
from janus_jax.train import step as step_lib

# Stated tolerances: bf16 (8-bit mantissa) logits within 5% of the fp32 logits' range; one train step's loss within
# 1e-2 relative and its parameter update pointing the same way (cosine >= 0.99).
LOGITS_REL = 5e-2
LOSS_REL = 1e-2
UPDATE_COS = 0.99


def test_platform_defaults_and_resolution():
  assert precision.resolve("auto", "auto", for_platform="cpu") == ("float32", "highest")
  assert precision.resolve("auto", "auto", for_platform="gpu") == ("bfloat16", "default")
  assert precision.resolve("auto", "auto", for_platform="tpu") == ("bfloat16", "default")
  assert precision.resolve("float32", "high", for_platform="tpu") == ("float32", "high")
  # This machine: JanusConfig resolves "auto" for jax's default backend, in every component.
  d = models.janus_tiny()
  for part in ("llm", "vision", "vq"):
    d[part].update(dtype="auto", matmul_precision="auto")
  cfg = JanusConfig.from_dict(d)
  want = precision.defaults()
  assert (cfg.llm.dtype, cfg.llm.matmul_precision) == want and (cfg.vq.dtype, cfg.vq.matmul_precision) == want
  assert cfg.with_dtypes(matmul_precision="auto").gen_head.matmul_precision == want[1]


def test_bad_settings_name_the_field_to_fix():
  d = models.janus_tiny()
  d["llm"]["matmul_precision"] = "fast"
  with pytest.raises(ValueError, match=r"--config\.model\.llm\.matmul_precision.*highest"):
    JanusConfig.from_dict(d)
  d = models.janus_tiny()
  d["vision"]["dtype"] = "fp16"
  with pytest.raises(ValueError, match=r"--config\.model\.vision\.dtype.*bfloat16"):
    JanusConfig.from_dict(d)
  with pytest.raises(ValueError, match=r"janus_jax\.load\(matmul_precision=\.\.\.\)"):
    janus_jax.load("/nonexistent/checkpoint", matmul_precision="fast")  # before any file is read


def test_experiment_configs_default_to_the_platform():
  want = precision.defaults()
  for arg in ("experiments/janus_stages.py:stage=2,family=janus_pro,size=7b", "experiments/janus_pro_1b.py"):
    cfg = JanusConfig.from_dict(load_config(arg).model.to_dict())
    assert (cfg.llm.dtype, cfg.llm.matmul_precision) == want, arg
  c = load_config("experiments/janus_pro_1b.py:dtype=bfloat16,precision=high")
  assert c.model.llm.dtype == "bfloat16" and c.model.gen_head.matmul_precision == "high"


@pytest.fixture(scope="module")
def cfg():
  return JanusConfig.from_dict(models.janus_tiny())


def _logits(cfg, params):
  inputs = dummy_inputs(cfg, batch=2)
  ids = jax.random.randint(jax.random.key(3), inputs[0].shape, 0, cfg.llm.vocab_size)
  pixels = jax.random.uniform(jax.random.key(4), inputs[2].shape, minval=-1, maxval=1)
  return jax.jit(lambda p: JanusModel(cfg).apply({"params": p}, ids, inputs[1], pixels, *inputs[3:]))(params)


def test_bf16_logits_stay_close_to_fp32(cfg):
  params = init_params(cfg, jax.random.key(0))
  text32, image32 = _logits(cfg, params)
  text16, image16 = _logits(cfg.with_dtypes(dtype="bfloat16", matmul_precision="default"), params)
  for l16, l32 in ((text16, text32), (image16, image32)):
    assert l16.dtype == jnp.float32  # logits are float32 whatever the compute dtype
    l16, l32 = np.asarray(l16), np.asarray(l32)
    rel = np.abs(l16 - l32).max() / np.abs(l32).max()
    assert 0 < rel < LOGITS_REL, rel  # > 0: the bf16 path really computed in bf16


def test_bf16_train_step_matches_fp32(cfg):
  ocfg = dict(lr=1e-3, eps=1e-5, **optim.stage_trainable(3))
  train = dict(pad_id=0, cfg_dropout=0.0)
  state0 = state_lib.create_train_state(cfg, ocfg, jax.random.key(0))
  batch = batch_lib.synthetic_batch(cfg, 4, 40, 0, kinds=("und", "t2i", "text", "t2i"))
  run = lambda c: jax.jit(step_lib.make_train_step(c, train))(state0, batch, jax.random.key(1))
  new32, m32 = run(cfg)
  new16, m16 = run(cfg.with_dtypes(dtype="bfloat16", matmul_precision="default"))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new16.params))
  loss32, loss16 = float(m32["loss"]), float(m16["loss"])
  assert abs(loss16 - loss32) / loss32 < LOSS_REL, (loss16, loss32)
  flat = lambda new: np.concatenate([np.ravel(np.asarray(n) - np.asarray(o)) for n, o in
                                     zip(jax.tree.leaves(new.params), jax.tree.leaves(state0.params))])
  u32, u16 = flat(new32), flat(new16)
  cos = float(u32 @ u16 / (np.linalg.norm(u32) * np.linalg.norm(u16)))
  assert cos >= UPDATE_COS, cos
