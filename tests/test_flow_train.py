"""JanusFlow training and sampling on the tiny flow model: the loss goes down, REPA is zero-gradient to the
understanding encoder, EMA follows its formula, flow-mode CFG dropout masks the prompt, per-stage trainable sets,
the intermediate-layer capture, and the compiled sampler (prompt cache == recompute, Heun, time shift, noise=)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus_jax.configs import models
from janus_jax.configs.common import load_config
from janus_jax.models import janus
from janus_jax.models.configs import JanusConfig
from janus_jax.models.janus_flow import JanusFlowModel
from janus_jax.models.llama import LlamaModel, causal_mask, positions_from_mask
from janus_jax.sampling import flow_image
from janus_jax.train import batch as batch_lib
from janus_jax.train import flow_losses, optim
from janus_jax.train import state as state_lib
from janus_jax.train import step as step_lib

B, T = 6, 40
FLOW = dict(t_location=0.0, t_scale=1.0, rf_weight=1.0, repa_weight=1.0, sample_posterior=False)
TRAIN = dict(pad_id=0, cfg_dropout=0.1, flow=FLOW)


@pytest.fixture(scope="module")
def cfg():
  return JanusConfig.from_dict(models.janusflow_tiny())


@pytest.fixture(scope="module")
def params(cfg):
  return janus.init_params(cfg, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def batch(cfg):
  return batch_lib.synthetic_batch(cfg, B, T, kinds=("und", "t2i", "text"), gen_pixels=True)


def test_flow_config_shapes(cfg):
  assert cfg.generation_mode == "flow" and cfg.latent_size == 8 and cfg.generated_image_size == 16
  assert JanusConfig.from_dict(cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match="generation_mode"):
    JanusConfig(generation_mode="diffusion")


def test_training_reduces_flow_loss(cfg, params, batch):
  oc = dict(lr=3e-3, **optim.stage_trainable(3, "flow"))
  st = state_lib.create_train_state(cfg, oc, params=params)
  run = jax.jit(step_lib.make_train_step(cfg, TRAIN))
  first = None
  rf = []
  for i in range(25):
    st, m = run(st, batch, jax.random.PRNGKey(0))
    first = first or {k: float(v) for k, v in m.items()}
    rf.append(float(m["loss_rf"]))
  last = {k: float(v) for k, v in m.items()}
  assert last["loss"] < 0.6 * first["loss"], (first, last)
  assert np.mean(rf[-5:]) < np.mean(rf[:5]), rf
  assert last["loss_repa"] < first["loss_repa"]  # cosine alignment improves (more negative)
  assert first["gen_rows"] == 2.0 and first["tokens_text"] > 0


def test_vae_must_stay_frozen(cfg, params, batch):
  st = state_lib.create_train_state(cfg, dict(lr=1e-3), params=params)
  with pytest.raises(ValueError, match="vae"):
    step_lib.make_train_step(cfg, TRAIN)(st, batch, jax.random.PRNGKey(0))


def test_repa_is_zero_gradient_to_understanding_encoder(cfg, params, batch):
  """Only the REPA term (rf 0, t2i rows only): SigLIP gets exactly zero gradient, the REPA head and the LLM blocks
  up to the captured one do not."""
  rows = np.asarray(batch["has_gen_image"])
  t2i = {k: v[rows] for k, v in batch.items()}
  model = JanusFlowModel(cfg)
  fc = dict(FLOW, rf_weight=0.0)

  def loss(p):
    sums = model.apply({"params": p}, t2i, jax.random.PRNGKey(3), fc, method=flow_losses.flow_loss_sums)
    return sums.repa_loss

  grads = jax.grad(loss)(params)
  norm = lambda tree: float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))
  assert norm(grads["vision_und_enc_model"]) == 0.0
  assert norm(grads["vae"]) == 0.0
  assert norm(grads["repa_projector"]) > 0
  assert norm(grads["vision_gen_enc_model"]) > 0
  layers = grads["language_model"]["model"]["layers"]["mlp"]["down_proj"]["kernel"]  # [L, ...] stacked
  assert float(jnp.abs(layers[0]).sum()) > 0  # block 1 feeds the captured hidden state (repa.layer = 1)
  assert float(jnp.abs(layers[1]).sum()) == 0.0  # block 2 is after it


def test_ema_follows_its_formula(cfg, params, batch):
  oc = dict(lr=1e-3, ema_decay=0.9, **optim.stage_trainable(3, "flow"))
  st0 = state_lib.create_train_state(cfg, oc, params=params)
  assert st0.ema_decay == 0.9
  st1, _ = jax.jit(step_lib.make_train_step(cfg, TRAIN))(st0, batch, jax.random.PRNGKey(0))
  for e, p0, p1 in zip(jax.tree.leaves(st1.ema_params), jax.tree.leaves(params), jax.tree.leaves(st1.params)):
    np.testing.assert_allclose(np.asarray(e), 0.9 * np.asarray(p0) + 0.1 * np.asarray(p1), atol=1e-7)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(st1.ema_params), jax.tree.leaves(st1.params)))
  assert state_lib.create_train_state(cfg, dict(lr=1e-3, **optim.stage_trainable(3, "flow")),
                                      params=params).ema_params is None


def test_flow_cfg_dropout_masks_prompt(batch):
  out, dropped = step_lib.apply_cfg_dropout(dict(batch), jax.random.PRNGKey(0), 1.0, 0, mask_dropped=True)
  drop = np.asarray(batch["cfg_drop_mask"])
  assert float(dropped) == float(drop.any(axis=1).sum())
  assert not np.asarray(out["valid"])[drop].any()
  np.testing.assert_array_equal(np.asarray(out["valid"])[~drop], np.asarray(batch["valid"])[~drop])
  assert (np.asarray(out["input_ids"])[drop] == 0).all()


def test_flow_stage_trainable_sets(cfg, params):
  for stage, trains_siglip, trains_llm in ((1, False, False), (2, False, True), (3, True, True)):
    st = state_lib.create_train_state(cfg, dict(lr=1e-3, **optim.stage_trainable(stage, "flow")), params=params)
    names = st.trainable
    assert not any(n.startswith("vae/") for n in names)
    assert any(n.startswith("vision_gen_enc_model/") for n in names)
    assert any(n.startswith("vision_und_enc_model/") for n in names) == trains_siglip
    assert any(n.startswith("language_model/") for n in names) == trains_llm


def test_capture_layer_equals_truncated_stack():
  cfg = JanusConfig.from_dict(models.janusflow_tiny()).llm
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, cfg.hidden_size))
  valid = jnp.ones((2, 5), bool)
  args = (x, positions_from_mask(valid), causal_mask(valid, 5))
  model = LlamaModel(cfg)
  p = model.init(jax.random.PRNGKey(1), *args)
  hidden, _, captured = model.apply(p, *args, capture_layer=1)
  one = dict(p["params"], layers=jax.tree.map(lambda a: a[:1], p["params"]["layers"]))
  import dataclasses  # pylint: disable=import-outside-toplevel
  cfg1 = dataclasses.replace(cfg, num_layers=1)
  # The truncated stack's pre-norm output: undo nothing, compare against a 1-layer model's layers directly.
  _, _, cap1 = LlamaModel(cfg1).apply({"params": one}, *args, capture_layer=1)
  np.testing.assert_allclose(np.asarray(captured), np.asarray(cap1), atol=1e-6)
  assert not np.allclose(np.asarray(captured), np.asarray(hidden), atol=1e-3)
  with pytest.raises(ValueError, match="capture_layer"):
    model.apply(p, *args, capture_layer=cfg.num_layers + 1)


def test_time_grid():
  np.testing.assert_allclose(flow_image.time_grid(4), [0, 0.25, 0.5, 0.75, 1.0])
  shifted = flow_image.time_grid(4, shift=3.0)
  assert shifted[0] == 0 and shifted[-1] == 1 and np.all(np.diff(shifted) > 0) and shifted[2] == pytest.approx(0.75)
  with pytest.raises(ValueError):
    flow_image.time_grid(0)


def test_sampler_prompt_cache_is_exact(cfg, params):
  model = JanusFlowModel(cfg)
  ids = np.array([[0, 0, 1, 9, 10, 11, 7], [1, 12, 13, 14, 15, 16, 7]], np.int32)
  valid = np.array([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]], bool)
  z0 = np.random.default_rng(0).normal(size=flow_image.latent_shape(cfg, 2)).astype(np.float32)
  for solver in ("euler", "heun"):
    run = lambda cache, s=solver: np.asarray(flow_image.compiled_flow_generate(
        model, num_steps=4, solver=s, prompt_cache=cache)(params, ids, valid, z0, 2.0, 0))
    cached, full = run(True), run(False)
    assert np.abs(cached - full).max() <= 1e-5
    assert np.abs(cached - z0).max() > 1e-3
  # One Euler step by hand: z1 = z0 + 1 * (w v_c - (w - 1) v_u) with the recompute path's velocity.
  one = np.asarray(flow_image.compiled_flow_generate(model, num_steps=1)(params, ids, valid, z0, 1.0, 0))
  two = np.asarray(flow_image.compiled_flow_generate(model, num_steps=1)(params, ids, valid, z0, 3.0, 0))
  zero = np.asarray(flow_image.compiled_flow_generate(model, num_steps=1)(params, ids, valid, z0, 0.0, 0))
  # v(w) is affine in w: v(3) - v(1) == 2 * (v(1) - v(0)).
  np.testing.assert_allclose(two - one, 2.0 * (one - zero), atol=1e-5)


def test_unconditional_rows_keep_only_bos():
  ids = jnp.array([[0, 0, 1, 9, 10, 7]])
  valid = jnp.array([[False, False, True, True, True, True]])
  un_ids, un_valid = flow_image.unconditional_rows(ids, valid, pad_id=3)
  np.testing.assert_array_equal(np.asarray(un_valid), [[False, False, True, False, False, False]])
  np.testing.assert_array_equal(np.asarray(un_ids), [[3, 3, 1, 3, 3, 3]])


def test_flow_stage_configs():
  for stage, lr, warmup, ratio in ((1, 1e-4, 2000, (50, 0, 50)), (2, 1e-4, 2000, (14, 6, 80)),
                                   (3, 2e-5, 1000, (21, 9, 70))):
    c = load_config(f"experiments/janus_stages.py:stage={stage},family=janusflow,size=1_3b")
    assert c.model.generation_mode == "flow" and c.optim.lr == lr and c.optim.warmup_steps == warmup
    assert c.optim.ema_decay == 0.99 and c.optim.schedule == "constant" and c.optim.weight_decay == 0.0
    assert (c.input.mixture.und, c.input.mixture.text, c.input.mixture.t2i) == ratio
    assert "vae/.*" in c.optim.frozen or c.optim.trainable is not None
  shipped = JanusConfig.from_dict(load_config("experiments/janusflow_1_3b.py").model.to_dict())
  assert shipped.generation_mode == "flow" and shipped.latent_size == 48 and shipped.generated_image_size == 384
  assert shipped.num_image_tokens == 576 and shipped.vae.scaling_factor == 0.13025
