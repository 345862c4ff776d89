"""Generation mode `ar_continuous` on the tiny model: the flow head's loss falls on a fixed batch, the KV-cached
sampler equals teacher forcing, CFG weight 1 is the conditional sample, a second call does not recompile, the
stage sets, and a checkpoint round trip."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus_jax.configs import models
from janus_jax.models import janus
from janus_jax.models.configs import JanusConfig
from janus_jax.models.janus_continuous import JanusContinuousModel, patchify, token_dim, unpatchify
from janus_jax.models.llama import causal_mask, positions_from_mask
from janus_jax.sampling import continuous_image
from janus_jax.train import batch as batch_lib
from janus_jax.train import continuous_losses, optim
from janus_jax.train import state as state_lib
from janus_jax.train import step as step_lib

B, T = 6, 40
TRAIN = dict(pad_id=0, cfg_dropout=0.1, continuous=dict(t_samples=4))
M = JanusContinuousModel


@pytest.fixture(scope="module")
def cfg():
  return JanusConfig.from_dict(models.janus_continuous_tiny())


@pytest.fixture(scope="module")
def params(cfg):
  return janus.init_params(cfg, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def live(params):
  """params whose flow head is not the adaLN-Zero init (which predicts zero velocity: every token = its noise)."""
  leaves, treedef = jax.tree.flatten(params["flow_head"])
  keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
  noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return dict(params, flow_head=treedef.unflatten(noisy))


@pytest.fixture(scope="module")
def prompts(cfg):
  """Two prompt rows ending in <begin_of_image> (left padded) and their unconditional twins."""
  rng = np.random.default_rng(0)
  ids = np.zeros((4, 10), np.int32)
  valid = np.zeros((4, 10), bool)
  for r, n in enumerate((7, 10)):
    row = np.concatenate([[batch_lib.BOS], rng.integers(batch_lib.FIRST_TEXT_ID, cfg.llm.vocab_size, n - 2),
                          [batch_lib.BEGIN_OF_IMAGE]])
    ids[r, 10 - n:], valid[r, 10 - n:] = row, True
    ids[r + 2, 10 - n:], valid[r + 2, 10 - n:] = [batch_lib.BOS] + [0] * (n - 2) + [batch_lib.BEGIN_OF_IMAGE], True
  return jnp.asarray(ids), jnp.asarray(valid)


def test_config_and_patches(cfg):
  assert cfg.mode.name == "ar_continuous" and cfg.latent_size == 8 and cfg.generated_image_size == 16
  assert token_dim(cfg) == 2 * 2 * 4 and cfg.num_image_tokens == 16
  assert JanusConfig.from_dict(cfg.to_dict()) == cfg
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 4))
  tokens = patchify(z, 2)
  assert tokens.shape == (2, 16, 16)
  np.testing.assert_array_equal(tokens[0, 1], z[0, 0:2, 2:4].reshape(-1))  # raster order over patches
  np.testing.assert_array_equal(unpatchify(tokens, 2, 8, 4), z)
  with pytest.raises(ValueError, match="und_encoder='vq' needs generation_mode 'ar_vq'"):
    JanusConfig.from_dict(dict(models.janus_continuous_tiny(), und_encoder="vq"))


def test_head_loss_falls_on_a_fixed_batch(cfg, params):
  batch = batch_lib.synthetic_batch(cfg, B, T, kinds=("und", "t2i", "text"), gen_pixels=True)
  st = state_lib.create_train_state(cfg, dict(lr=3e-3, **optim.stage_trainable(3, "ar_continuous")), params=params)
  run = jax.jit(step_lib.make_train_step(cfg, TRAIN))
  rf, first = [], None
  for _ in range(30):
    st, m = run(st, batch, jax.random.PRNGKey(0))
    first = first or {k: float(v) for k, v in m.items()}
    rf.append(float(m["loss_rf"]))
  assert first["gen_tokens"] == 2 * cfg.num_image_tokens and first["tokens_text"] > 0
  assert np.mean(rf[-5:]) < 0.7 * np.mean(rf[:5]), rf
  assert float(m["loss"]) < first["loss"]


def test_llm_gets_the_gradient_through_the_head_condition(cfg, live):
  batch = batch_lib.synthetic_batch(cfg, B, T, kinds=("t2i",), gen_pixels=True)
  model = M(cfg)
  c = continuous_losses.resolve_continuous_config(None)

  def rf(p):
    return model.apply({"params": p}, {k: jnp.asarray(v) for k, v in batch.items()}, jax.random.PRNGKey(2), c,
                       method=continuous_losses.continuous_loss_sums).rf_loss

  norm = lambda tree: float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))  # noqa: E731
  grads = jax.grad(rf)(live)
  assert norm(grads["language_model"]) > 0 and norm(grads["gen_out"]) > 0 and norm(grads["gen_in"]) > 0
  assert norm(grads["vae"]) == 0.0  # the tokens are stop_gradient targets


def test_cached_sampler_equals_teacher_forcing(cfg, live, prompts):
  params = live
  ids, valid = prompts
  run = continuous_image.compiled_continuous_generate(M(cfg), num_steps=3)
  tokens = np.asarray(run(params, ids, valid, jax.random.PRNGKey(7), 2.5, 0.8))
  assert tokens.shape == (2, cfg.num_image_tokens, token_dim(cfg)) and np.isfinite(tokens).all()
  first_noise = 0.8 * jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(7), 0), (2, token_dim(cfg)))
  assert not np.allclose(tokens[:, 0], first_noise, atol=1e-3)  # the head moved the token
  # Teacher forcing: one uncached forward over prompt + every sampled token gives each token's conditions; the same
  # ODE from the same noise must give the same tokens back.
  model = M(cfg)
  apply = lambda method, *a: model.apply({"params": params}, *a, method=method)  # noqa: E731
  n = cfg.num_image_tokens
  both = jnp.concatenate([tokens, tokens])
  emb = apply(M.embed_text, ids)
  emb = emb.at[:, -1].add(apply(M.boi_embedding)[0])
  emb = jnp.concatenate([emb, apply(M.embed_tokens, both)], axis=1)
  full_valid = jnp.concatenate([valid, jnp.ones((4, n), bool)], axis=1)
  hidden, _ = apply(M.llm, emb, positions_from_mask(full_valid), causal_mask(full_valid, emb.shape[1]))
  conds = apply(M.head_condition, hidden[:, ids.shape[1] - 1:-1])  # position before token k
  velocity = lambda x, t, c: apply(M.velocity, x, t, c)  # noqa: E731
  for k in range(n):
    noise = 0.8 * jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(7), k), (2, token_dim(cfg)))
    again = continuous_image.euler_token(velocity, conds[:, k], noise, 2.5, 3)
    np.testing.assert_allclose(np.asarray(again), tokens[:, k], rtol=1e-4, atol=1e-5)


def test_cfg_weight_one_is_the_conditional_sample(cfg, live, prompts):
  params = live
  ids, valid = prompts
  run = continuous_image.compiled_continuous_generate(M(cfg), num_steps=2)
  guided = np.asarray(run(params, ids, valid, jax.random.PRNGKey(3), 1.0, 1.0))
  cond_only = np.asarray(run(params, jnp.concatenate([ids[:2], ids[:2]]), jnp.concatenate([valid[:2], valid[:2]]),
                             jax.random.PRNGKey(3), 1.0, 1.0))
  np.testing.assert_allclose(guided, cond_only, rtol=1e-5, atol=1e-6)
  stronger = np.asarray(run(params, ids, valid, jax.random.PRNGKey(3), 4.0, 1.0))
  assert not np.allclose(stronger, guided)


def test_second_call_does_not_recompile(cfg, params, prompts):
  ids, valid = prompts
  run = continuous_image.compiled_continuous_generate(M(cfg), num_steps=2)
  run(params, ids, valid, jax.random.PRNGKey(0), 2.0, 1.0)
  before = run._cache_size()  # pylint: disable=protected-access
  run(params, ids, valid, jax.random.PRNGKey(5), 3.0, 0.5)  # other seed, weight and temperature: traced
  assert run._cache_size() == before == 1  # pylint: disable=protected-access
  assert continuous_image.compiled_continuous_generate(M(cfg), num_steps=2) is run


def test_stage_sets(cfg, params):
  for stage, trains, frozen in ((1, {"aligner", "gen_in", "gen_out", "gen_boi", "flow_head"},
                                 {"vision_model", "language_model", "vae"}),
                                (2, {"aligner", "language_model", "gen_in", "flow_head"}, {"vision_model", "vae"}),
                                (3, {"vision_model", "language_model", "flow_head"}, {"vae"})):
    st = state_lib.create_train_state(cfg, dict(lr=1e-3, **optim.stage_trainable(stage, "ar_continuous")),
                                      params=params)
    top = {}
    for path in st.trainable:
      top.setdefault(path.split("/")[0], True)
    assert trains <= set(top) and not frozen & set(top), (stage, sorted(top))
  st = state_lib.create_train_state(cfg, dict(lr=1e-3), params=params)
  with pytest.raises(ValueError, match="VAE must stay frozen"):
    step_lib.make_train_step(cfg, TRAIN)(st, batch_lib.synthetic_batch(cfg, 2, T, kinds=("t2i",), gen_pixels=True),
                                         jax.random.PRNGKey(0))


def test_checkpoint_round_trip(cfg, params, tmp_path):
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  store.save_checkpoint(tmp_path / "ckpt", params, cfg)
  loaded, cfg2 = store.load_checkpoint(tmp_path / "ckpt")
  assert cfg2 == cfg and cfg2.generation_mode == "ar_continuous"
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
