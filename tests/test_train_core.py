"""Training core on the tiny model: loss goes down, grad accumulation == full batch, per-stage freezing, VQ code
filling, CFG dropout, sharded == single-device training on 8 fake CPU devices, partition-spec ranks, bad inputs."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janus_jax import sharding
from janus_jax.configs import hyper, models
from janus_jax.configs.common import load_config
from janus_jax.models.configs import JanusConfig
from janus_jax.models.janus import JanusModel, abstract_params
from janus_jax.train import batch as batch_lib
from janus_jax.train import losses, optim
from janus_jax.train import state as state_lib
from janus_jax.train import step as step_lib

B, T = 8, 40
KINDS = ("und", "t2i", "text", "t2i")
RNG = jax.random.PRNGKey(1)
TRAIN = dict(pad_id=0, cfg_dropout=0.1)
# eps=1e-5 rather than 1e-8: Adam turns float-noise gradients of params whose true gradient is ~0 (e.g. SigLIP's
# key bias) into +-lr updates, which would make sharded and single-device runs differ by ~lr on those entries.
# Steps are compiled without LLVM optimisation: ~30% faster compiles, same numerics class (tests only).
FAST = {"xla_backend_optimization_level": 0}
OPTIM = dict(lr=1e-3, weight_decay=0.1, eps=1e-5, **optim.stage_trainable(3))


def _max_diff(a, b) -> float:
  """Largest absolute difference between two pytrees of arrays (numpy: no per-shape compiles)."""
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def cfg():
  return JanusConfig.from_dict(models.janus_tiny())


@pytest.fixture(scope="module")
def state0(cfg):
  return state_lib.create_train_state(cfg, OPTIM, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def batch(cfg):
  return batch_lib.synthetic_batch(cfg, B, T, 0, kinds=KINDS)


@pytest.fixture(scope="module")
def step(cfg):
  """The single-device reference step (stage-3 trainable set, no accumulation), compiled once."""
  return jax.jit(step_lib.make_train_step(cfg, TRAIN), compiler_options=FAST)


@pytest.fixture(scope="module")
def one_step(step, state0, batch):
  return step(state0, batch, RNG)


def test_synthetic_batch_is_valid(cfg, batch):
  assert batch_lib.check_batch(batch, B, T, cfg) == (B, T)
  n = cfg.num_image_tokens
  assert (batch["und_image_mask"].sum(1) == np.array([n, 0, 0, 0] * 2)).all()
  assert (batch["image_loss_mask"].sum(1) == np.array([0, n, 0, n] * 2)).all()
  # The <begin_of_image> position predicts code 0, code k's position predicts code k + 1.
  row = 1
  first = np.argmax(batch["image_loss_mask"][row])
  assert batch["input_ids"][row, first] == batch_lib.BEGIN_OF_IMAGE
  np.testing.assert_array_equal(batch["targets"][row][batch["image_loss_mask"][row]],
                                batch["input_ids"][row][batch["gen_image_mask"][row]])
  assert not (batch["text_loss_mask"] & ~batch["valid"]).any()


def test_loss_decreases(step, one_step, batch):
  state, m = one_step
  assert set(m) >= {"loss", "loss_text", "loss_image", "grad_norm", "param_norm", "lr", "tokens_text",
                    "tokens_image"}
  assert float(m["tokens_text"]) == batch["text_loss_mask"].sum()
  assert float(m["tokens_image"]) == batch["image_loss_mask"].sum()
  n = batch["text_loss_mask"].sum() + batch["image_loss_mask"].sum()
  total = (float(m["loss_text"]) * float(m["tokens_text"]) + float(m["loss_image"]) * float(m["tokens_image"])) / n
  assert abs(float(m["loss"]) - total) < 1e-5  # One CE over all supervised tokens, no task weights.
  assert float(m["lr"]) == pytest.approx(1e-3) and int(state.step) == 1
  losses_seen = [float(m["loss"])]
  for _ in range(19):
    state, m = step(state, batch, RNG)
    losses_seen.append(float(m["loss"]))
  assert np.isfinite(losses_seen).all()
  assert losses_seen[-1] < 0.75 * losses_seen[0], losses_seen


def test_grad_accumulation_equals_full_batch(cfg, state0, batch, one_step):
  accum = jax.jit(step_lib.make_train_step(cfg, dict(TRAIN, grad_accum_steps=2)), compiler_options=FAST)
  state_a, m_a = accum(state0, batch, RNG)
  state_f, m_f = one_step
  for k in ("loss", "loss_text", "loss_image", "tokens_text", "tokens_image", "grad_norm"):
    assert abs(float(m_a[k]) - float(m_f[k])) <= 1e-5 * max(1.0, abs(float(m_f[k]))), k
  assert _max_diff(state_a.params, state_f.params) < 1e-5
  assert _max_diff(state_a.opt_state, state_f.opt_state) < 1e-5


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_freezes_exactly_its_params(cfg, state0, batch, step, stage):
  ocfg = dict(OPTIM, **optim.stage_trainable(stage))
  state = state_lib.create_train_state(cfg, ocfg, params=state0.params)
  run = step if stage == 3 else jax.jit(step_lib.make_train_step(cfg, TRAIN), compiler_options=FAST)
  new = state
  for _ in range(2):
    new, m = run(new, batch, RNG)
  assert np.isfinite(float(m["loss"]))
  frozen = {1: ("language_model", "vision_model", "gen_vision_model"), 2: ("vision_model", "gen_vision_model"),
            3: ("gen_vision_model",)}[stage]
  paths = optim.param_paths(state.params)
  for path, old, upd in zip(paths, jax.tree.leaves(state.params), jax.tree.leaves(new.params)):
    if path.split("/")[0] in frozen:
      assert path not in state.trainable
      assert np.array_equal(np.asarray(old), np.asarray(upd)), f"frozen {path} changed"
    else:
      assert path in state.trainable
      assert not np.array_equal(np.asarray(old), np.asarray(upd)), f"trainable {path} did not change"
  # Frozen params have no optimizer state: the Adam moments cover exactly the trainable params.
  n_moment_leaves = len(jax.tree.leaves(state.opt_state)) - 2  # minus the adam and schedule counts
  assert n_moment_leaves == 2 * len(state.trainable)


def test_gen_pixels_are_encoded_and_filled(cfg, state0, batch, step, one_step):
  gb = batch_lib.synthetic_batch(cfg, B, T, 3, kinds=KINDS, gen_pixels=True)
  model = JanusModel(cfg)
  filled = jax.jit(lambda p, b: step_lib.prepare_batch(model, p, b, RNG, dict(TRAIN, cfg_dropout=0.0)))(
      state0.params, gb)
  codes = np.asarray(model.apply({"params": state0.params}, jnp.asarray(gb["gen_pixels"]),
                                 method=JanusModel.encode_image_tokens))
  assert codes.shape == (B, cfg.num_image_tokens)
  for b in range(B):
    ids, tg = np.asarray(filled["input_ids"][b]), np.asarray(filled["targets"][b])
    if gb["has_gen_image"][b]:
      np.testing.assert_array_equal(ids[gb["gen_image_mask"][b]], codes[b])
      np.testing.assert_array_equal(tg[gb["image_loss_mask"][b]], codes[b])
      other = ~gb["gen_image_mask"][b]
      np.testing.assert_array_equal(ids[other], gb["input_ids"][b][other])
    else:
      np.testing.assert_array_equal(ids, gb["input_ids"][b])
      np.testing.assert_array_equal(tg, gb["targets"][b])
  # The step encodes gen_pixels itself: same result as training on the pre-filled batch.
  new_g, m_g = jax.jit(step_lib.make_train_step(cfg, TRAIN), compiler_options=FAST)(state0, gb, RNG)
  new_f, m_f = step(state0, {k: v for k, v in filled.items()}, RNG)
  assert abs(float(m_g["loss"]) - float(m_f["loss"])) < 1e-6
  assert float(m_g["tokens_image"]) == gb["image_loss_mask"].sum()
  assert _max_diff(new_g.params, new_f.params) < 1e-6


def test_packed_segments_do_not_see_each_other(cfg, state0):
  """A document packed after another (segment_ids, restarted positions) has the same loss as alone in its row."""
  rng = np.random.default_rng(5)
  doc1, doc2 = rng.integers(8, 1000, 9), rng.integers(8, 1000, 12)

  def row(docs):
    ids = np.concatenate(docs)
    seg = np.concatenate([np.full(len(d), i) for i, d in enumerate(docs)])
    pos = np.concatenate([np.arange(len(d)) for d in docs])
    b = batch_lib.synthetic_batch(cfg, 1, T, 0, kinds=("text",), segments=True)
    for k in ("valid", "text_loss_mask", "image_loss_mask", "und_image_mask", "gen_image_mask", "cfg_drop_mask"):
      b[k][:] = False
    b["input_ids"][:] = 0
    b["input_ids"][0, :len(ids)], b["valid"][0, :len(ids)], b["positions"][0, :len(ids)] = ids, True, pos
    b["segment_ids"][0, :] = 9
    b["segment_ids"][0, :len(ids)] = seg
    b["targets"][0, :len(ids) - 1] = ids[1:]
    b["text_loss_mask"][0, len(ids) - len(docs[-1]):len(ids) - 1] = True  # Inside the last document only.
    return b

  model = JanusModel(cfg)
  fwd = jax.jit(lambda p, b: model.apply({"params": p}, b, method=losses.loss_sums))
  alone, packed = fwd(state0.params, row([doc2])), fwd(state0.params, row([doc1, doc2]))
  assert float(alone.text_tokens) == float(packed.text_tokens) == 11
  assert abs(float(alone.text_loss) - float(packed.text_loss)) < 1e-4


def test_cfg_dropout_replaces_exactly_the_prompt(batch):
  pad = 99
  b = {k: jnp.asarray(v) for k, v in batch.items()}
  out, n = step_lib.apply_cfg_dropout(b, RNG, 1.0, pad)
  drop = batch["cfg_drop_mask"]
  ids = np.asarray(out["input_ids"])
  assert (ids[drop] == pad).all() and drop.sum() > 0
  np.testing.assert_array_equal(ids[~drop], batch["input_ids"][~drop])
  np.testing.assert_array_equal(np.asarray(out["valid"]), batch["valid"])  # Dropped prompts stay attended.
  assert int(n) == drop.any(1).sum()
  out, n = step_lib.apply_cfg_dropout(b, RNG, 0.0, pad)
  np.testing.assert_array_equal(np.asarray(out["input_ids"]), batch["input_ids"]) and int(n) == 0
  # Per-row rate: about 10% of 4000 rows are dropped, each row all or nothing.
  many = {"input_ids": jnp.ones((4000, 6), jnp.int32), "cfg_drop_mask": jnp.ones((4000, 6), bool).at[:, 0].set(False)}
  out, n = step_lib.apply_cfg_dropout(many, RNG, 0.1, pad)
  rows = (np.asarray(out["input_ids"])[:, 1:] == pad)
  assert (rows.all(1) | ~rows.any(1)).all() and (np.asarray(out["input_ids"])[:, 0] == 1).all()
  assert 0.085 < rows.all(1).mean() < 0.115 and int(n) == rows.all(1).sum()
  with pytest.raises(ValueError, match="pad_id"):
    step_lib.apply_cfg_dropout(b, RNG, 0.1, None)


@pytest.mark.parametrize("layout,accum", [
    ([("data", 8), ("fsdp", 1), ("tensor", 1)], 1),
    ([("data", 1), ("fsdp", 8), ("tensor", 1)], 1),
    ([("data", 2), ("fsdp", 1), ("tensor", 4)], 2),
], ids=["data8", "fsdp8", "data2_tensor4_accum2"])
def test_sharded_training_matches_single_device(cfg, state0, batch, step, one_step, layout, accum):
  mesh = sharding.make_mesh(layout)
  shardings = state_lib.state_shardings(cfg, OPTIM, mesh, sharding.DEFAULT_RULES)
  train_cfg = dict(TRAIN, grad_accum_steps=accum)
  run = step_lib.compile_train_step(step_lib.make_train_step(cfg, train_cfg), shardings,
                                    step_lib.batch_sharding(mesh), mesh, sharding.DEFAULT_RULES,
                                    compiler_options=FAST)
  if dict(layout)["fsdp"] == 8:  # Initialised directly sharded from the same rng: the same state.
    state = state_lib.create_sharded_train_state(cfg, OPTIM, shardings, rng=jax.random.PRNGKey(0))
    assert _max_diff(state, state0) <= 1e-6
  elif accum == 1:
    state = jax.device_put(jax.tree.map(jnp.copy, state0), shardings)  # A copy: the run donates its input.
  else:
    state = state_lib.create_sharded_train_state(cfg, OPTIM, shardings, params=state0.params)
  if dict(layout)["fsdp"] == 8:
    emb = state.params["language_model"]["model"]["embed_tokens"]["embedding"]
    assert "fsdp" in emb.sharding.spec and len(emb.sharding.device_set) == 8
    assert emb.addressable_shards[0].data.shape == (cfg.llm.vocab_size, cfg.llm.hidden_size // 8)
  ref, ref_m = one_step
  state, m = run(state, batch, RNG)
  assert abs(float(m["loss"]) - float(ref_m["loss"])) < 1e-5
  state, m = run(state, batch, RNG)
  ref, ref_m = step(ref, batch, RNG)
  assert abs(float(m["loss"]) - float(ref_m["loss"])) < 1e-5
  assert _max_diff(state.params, ref.params) < 1e-5
  assert _max_diff(state.opt_state, ref.opt_state) < 1e-5


def test_every_partition_spec_matches_its_rank(cfg):
  assert state_lib.param_logical_problems(cfg) == []
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 2), ("tensor", 2)])
  for stage in (1, 2, 3):
    ocfg = dict(OPTIM, **optim.stage_trainable(stage))
    shardings = state_lib.state_shardings(cfg, ocfg, mesh)
    abstract = state_lib.abstract_state(cfg, ocfg)
    assert state_lib.spec_rank_problems(abstract, shardings) == []
    # Adam moments take their param's sharding.
    mu = abstract.opt_state.inner_states["trainable"].inner_state[1].mu
    mu_sh = shardings.opt_state.inner_states["trainable"].inner_state[1].mu
    assert mu_sh["gen_head"]["vision_head"]["kernel"] == shardings.params["gen_head"]["vision_head"]["kernel"]
    assert mu["gen_head"]["vision_head"]["kernel"].shape == (64, 256)


def test_bf16_compute_keeps_float32_params(cfg, state0, batch, one_step):
  cfg16 = cfg.with_dtype("bfloat16")
  new, m = jax.jit(step_lib.make_train_step(cfg16, TRAIN), compiler_options=FAST)(state0, batch, RNG)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new.params))
  assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(new.opt_state))
  assert abs(float(m["loss"]) - float(one_step[1]["loss"])) < 0.05


def test_loss_gathering_equals_dense():
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(3, 10, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(4, 7)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 7, (3, 10)))
  mask = jnp.asarray(rng.random((3, 10)) < 0.5)
  head = lambda h: h @ w
  dense = losses.head_xent(hidden, targets, mask, head)
  gathered = losses.head_xent(hidden, targets, mask, head, max_tokens=10)
  np.testing.assert_allclose(np.array(dense), np.array(gathered), rtol=1e-6)
  capped = losses.head_xent(hidden, targets, mask, head, max_tokens=2)
  assert float(capped[2]) == np.minimum(np.asarray(mask).sum(1), 2).sum()
  assert float(capped[3]) == np.maximum(np.asarray(mask).sum(1) - 2, 0).sum()


def test_schedules_and_weight_decay_mask(cfg):
  warm = optim.make_schedule(dict(lr=1.0, warmup_steps=4))
  np.testing.assert_allclose([float(warm(s)) for s in (0, 1, 3, 100)], [0.25, 0.5, 1.0, 1.0])
  cos = optim.make_schedule(dict(lr=1.0, schedule="cosine", warmup_steps=2, total_steps=12, end_lr_factor=0.1))
  np.testing.assert_allclose([float(cos(s)) for s in (0, 1, 7, 12, 50)], [0.5, 1.0, 0.55, 0.1, 0.1], atol=1e-6)
  params = abstract_params(cfg)
  decay = dict(zip(optim.param_paths(params), jax.tree.leaves(optim.decay_mask_fn(r".*/kernel")(params))))
  assert decay["language_model/model/layers/mlp/up_proj/kernel"] and decay["gen_head/vision_head/kernel"]
  for p in ("language_model/model/embed_tokens/embedding", "gen_embed/embedding", "language_model/model/norm/scale",
            "language_model/model/layers/input_layernorm/scale", "aligner/layers_0/bias",
            "vision_model/vision_tower/pos_embed"):
    assert not decay[p], p


def test_lr_mults_scale_updates_per_param_group(cfg):
  params = {"language_model": {"w": jnp.ones(3)}, "aligner": {"w": jnp.ones(2)}, "gen_head": {"w": jnp.ones(2)},
            "gen_vision_model": {"w": jnp.ones(2)}}
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), params)
  def first_update(**kw):
    tx, _ = optim.make_optimizer(dict(lr=1e-2, frozen=["gen_vision_model/.*"], **kw), params)
    return tx.update(grads, tx.init(params), params)[0]
  base = first_update()
  # The first pattern a path matches wins: the aligner is scaled by 0.25 although '.*' (x3) would match it too.
  scaled = first_update(lr_mults=[("language_model/.*", 0.5), ("aligner/.*", 0.25), (".*", 3.0)])
  for name, mult in (("language_model", 0.5), ("aligner", 0.25), ("gen_head", 3.0), ("gen_vision_model", 0.0)):
    np.testing.assert_allclose(scaled[name]["w"], mult * base[name]["w"] if mult else 0.0, rtol=1e-6)
  assert float(jnp.abs(base["gen_head"]["w"]).min()) > 0
  tree = abstract_params(cfg)
  (mult, mask_fn), = optim.lr_multiplier_masks([("language_model/.*", 0.5)], tree)
  flags = dict(zip(optim.param_paths(tree), jax.tree.leaves(mask_fn(tree))))
  assert mult == 0.5 and all(v == k.startswith("language_model/") for k, v in flags.items())
  with pytest.raises(ValueError, match="'languge_model/.*' matches no parameter"):
    optim.make_optimizer(dict(lr=1e-3, lr_mults=[("languge_model/.*", 0.5)]), params)
  with pytest.raises(ValueError, match="must be > 0; to freeze params list them in optim.frozen"):
    optim.make_optimizer(dict(lr=1e-3, lr_mults=[("aligner/.*", 0.0)]), params)
  with pytest.raises(ValueError, match=r"\(regex, multiplier\) pairs"):
    optim.make_optimizer(dict(lr=1e-3, lr_mults=["aligner/.*"]), params)


def test_stage_configs_build(cfg):
  params = abstract_params(cfg)
  counts = {}
  for stage in (1, 2, 3):
    for family in ("janus", "janus_pro"):
      c = load_config(f"experiments/janus_stages.py:stage={stage},family={family}")
      tx, schedule = optim.make_optimizer(c.optim, params)
      assert float(schedule(10_000_000)) >= 0.0
      step_lib.resolve_train_config(c.train)
      assert set(c.keys()) == {"model", "optim", "train", "input", "mesh", "sharding_rules", "mode", "seed",
                               "template", "init_from", "required", "data", "vq"}  # size=shapes: data + VQ
      counts[stage] = sum(jax.tree.leaves(optim.trainable_mask(c.optim, params)))
  assert counts[1] < counts[2] < counts[3] < len(jax.tree.leaves(params))
  pro = load_config("experiments/janus_stages.py:stage=3,family=janus_pro,size=7b")
  assert (pro.optim.lr, pro.optim.total_steps, pro.input.batch_size) == (4e-5, 40_000, 128)
  assert pro.train.pad_id is None and pro.required == ("init_from",)  # pad id: the tokenizer's
  assert "data" not in pro and "vq" not in pro  # released sizes train on the sources you name
  janus1 = load_config("experiments/janus_stages.py:stage=1,family=janus,size=1_3b")
  assert (janus1.optim.schedule, janus1.optim.warmup_steps, dict(janus1.input.mixture)) == \
      ("cosine", 300, dict(und=1, text=0, t2i=1))
  spec = importlib.util.spec_from_file_location("janus_stages", "experiments/janus_stages.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  runs = module.get_hyper(hyper)
  assert [r["config.optim.lr"] for r in runs] == [1e-3, 2e-3, 4e-3]
  c = hyper.apply_overrides(load_config("experiments/janus_stages.py:" + runs[0]["config_arg"]), runs[2])
  assert c.optim.lr == 4e-3
  with pytest.raises(KeyError, match="lrr"):
    hyper.apply_overrides(c, {"config.optim.lrr": 1.0})
  assert hyper.zipit([hyper.sweep("a", [1, 2]), hyper.sweep("b", [3, 4])]) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
  assert hyper.chainit([hyper.fixed("a", 1), hyper.fixed("a", 2)]) == [{"a": 1}, {"a": 2}]
  with pytest.raises(ValueError, match="swept twice"):
    hyper.product([hyper.fixed("a", 1), hyper.fixed("a", 2)])


def test_bad_inputs_are_explained(cfg, state0, batch):
  mesh = sharding.make_mesh([("data", 8), ("fsdp", 1), ("tensor", 1)])
  small = {k: v[:4] for k, v in batch.items()}
  run = step_lib.compile_train_step(step_lib.make_train_step(cfg, TRAIN), state_lib.state_shardings(cfg, OPTIM, mesh),
                                    step_lib.batch_sharding(mesh), mesh)
  with pytest.raises(ValueError, match=r"Global batch size 4 is not divisible by the data-parallel size 8"):
    run(state0, small, RNG)
  with pytest.raises(ValueError, match="multiple of 16"):
    step_lib.check_batch_divisible(batch, mesh, accum=2)
  with pytest.raises(ValueError, match="divisible by train.grad_accum_steps=3"):
    jax.eval_shape(step_lib.make_train_step(cfg, dict(TRAIN, grad_accum_steps=3)), state0, batch, RNG)
  with pytest.raises(ValueError, match="does not divide"):
    sharding.make_mesh([("data", 3), ("tensor", 1)])
  with pytest.raises(ValueError, match=r"Unknown optim config key\(s\) \['weight_decy'\]"):
    optim.make_optimizer(dict(lr=1e-3, weight_decy=0.1), state0.params)
  with pytest.raises(ValueError, match="did you mean 'grad_accum_steps'"):
    step_lib.make_train_step(cfg, dict(grad_acum_steps=2))
  with pytest.raises(ValueError, match="'languge_model/.*' matches no parameter"):
    state_lib.create_train_state(cfg, dict(lr=1e-3, frozen=["languge_model/.*"]), params=state0.params)
  with pytest.raises(ValueError, match="Unknown Janus training stage 4"):
    optim.stage_trainable(4)
  with pytest.raises(ValueError, match="missing key"):
    batch_lib.check_batch({k: v for k, v in batch.items() if k != "targets"})
  with pytest.raises(ValueError, match="text_loss_mask.*dtype int32"):
    batch_lib.check_batch(dict(batch, text_loss_mask=batch["text_loss_mask"].astype(np.int32)))
  with pytest.raises(ValueError, match="length 39, expected T=40"):
    batch_lib.check_batch(dict(batch, targets=batch["targets"][:, :-1]))
  with pytest.raises(ValueError, match="come together"):
    batch_lib.check_batch(dict(batch, has_gen_image=np.ones(B, bool)))
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['kinds'\]"):
    batch_lib.check_batch(dict(batch, kinds=np.zeros(B, np.int32)))
  batch_lib.check_batch(dict(batch, kind=np.zeros(B, np.int32)))  # The pipeline's row-kind index is allowed.
