"""The training loop: exact resume (params and data order), restore onto another mesh, partial init, errors and
faults (missing data state, another model's checkpoint, unwritable workdir). An unreadable checkpoint, SIGKILL and
SIGTERM: tests/test_preemption.py; other process counts: tests/test_multihost.py."""
import os

import jax
import numpy as np
import pytest

from janus_jax.configs.common import load_config
from janus_jax.data.prepare import prepare
from janus_jax.train import loop
from janus_jax.train.checkpoint import Checkpointer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return prepare(str(tmp_path_factory.mktemp("shapes")), "tiny", vocab_size=512)


def _config(data, steps, mesh=(("data", 8), ("fsdp", 1), ("tensor", 1)), checkpoint_every=2):
  c = load_config("experiments/janus_stages.py:stage=2,size=shapes")
  c.input.sources = [dict(kind="shapes", tfds_name=data["tfds_name"], data_dir=data["data_dir"])]
  c.input.tokenizer = data["tokenizer"]
  c.input.batch_size = 8
  c.input.seq_len = 96
  c.input.mixture = dict(und=1, text=1, t2i=2)
  c.train.pad_id = 3
  c.train.num_steps = steps
  c.train.log_every = 1
  c.train.checkpoint_every = checkpoint_every
  c.mesh = [list(m) for m in mesh]
  return c


def _params(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
  """An uninterrupted 4-step run (checkpoints at 2 and 4): (params, metrics.jsonl lines)."""
  workdir = tmp_path_factory.mktemp("straight")
  state = loop.train(_config(data, 4), str(workdir), verbose=False)
  return _params(state), open(workdir / "metrics.jsonl").readlines()


def test_resume_is_exact(data, straight, tmp_path):
  loop.train(_config(data, 2), str(tmp_path / "b"), verbose=False)
  resumed = loop.train(_config(data, 4), str(tmp_path / "b"), verbose=False)
  assert int(resumed.step) == 4
  jax.tree.map(np.testing.assert_array_equal, straight[0], _params(resumed))
  assert open(tmp_path / "b" / "metrics.jsonl").readlines() == straight[1]  # same losses => same data order
  assert (tmp_path / "b" / "tensorboard").is_dir()


def test_missing_data_state_is_explained_and_nothing_is_lost(data, tmp_path):
  from janus_jax.train.checkpoint import DataStateError
  loop.train(_config(data, 2), str(tmp_path), verbose=False)
  (tmp_path / "checkpoints" / "2" / "data" / "process_0-of-1.json").unlink()
  before = sorted(p.name for p in (tmp_path / "checkpoints" / "2").rglob("*"))
  with pytest.raises(DataStateError, match=r"process_0-of-1.json is missing.*params are intact.*Fix"):
    loop.train(_config(data, 4), str(tmp_path), verbose=False)
  assert sorted(p.name for p in (tmp_path / "checkpoints" / "2").rglob("*")) == before


def test_packed_data_state_of_another_process_count_is_refused(tmp_path):
  from janus_jax.train.checkpoint import DataStateError

  class Iterator:  # a packed pipeline's state: more than a position
    def get_state(self):
      return {"next_index": 0, "packer": [1, 2]}

    def set_state(self, state):
      raise AssertionError("must not be set")

  ckpt = Checkpointer(str(tmp_path), save_every=1)
  (tmp_path / "7" / "data").mkdir(parents=True)
  for i in range(2):
    (tmp_path / "7" / "data" / f"process_{i}-of-2.json").write_text('{"next_index": 3, "packer": [4]}')
  with pytest.raises(DataStateError, match=r"written by 2 process.*resume with 2 process"):
    ckpt.restore_data(7, Iterator())
  ckpt.close()


def test_checkpoint_of_another_model_is_refused(data, tmp_path):
  from janus_jax.train.checkpoint import CheckpointMismatchError
  loop.train(_config(data, 2), str(tmp_path), verbose=False)
  other = _config(data, 4)
  other.model.llm.intermediate_size = other.model.llm.intermediate_size * 2
  with pytest.raises(CheckpointMismatchError, match=r"another model.*intermediate|another model.*mlp"):
    loop.train(other, str(tmp_path), verbose=False)
  assert (tmp_path / "checkpoints" / "2" / "state").is_dir()


def test_restore_onto_a_different_mesh(data, tmp_path):
  first = loop.train(_config(data, 2), str(tmp_path), verbose=False)
  other = _config(data, 2, mesh=(("data", 2), ("fsdp", 2), ("tensor", 2)))
  restored = loop.train(other, str(tmp_path), verbose=False)  # nothing left to train: restore only
  jax.tree.map(np.testing.assert_array_equal, _params(first), _params(restored))
  kernel = restored.params["language_model"]["model"]["layers"]["mlp"]["gate_proj"]["kernel"]
  before = first.params["language_model"]["model"]["layers"]["mlp"]["gate_proj"]["kernel"]
  assert kernel.sharding.shard_shape(kernel.shape) != before.sharding.shard_shape(before.shape)
  assert dict(kernel.sharding.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_init_from_a_converted_checkpoint(data, tmp_path):
  from tiny_assets import make_tiny_checkpoint
  ckpt = make_tiny_checkpoint(str(tmp_path / "src"), seed=7)
  from janus_jax.checkpoint import store
  source, _ = store.load_checkpoint(ckpt)
  c = _config(data, 1)
  c.init_from = ckpt
  c.optim.trainable = ["gen_head/.*"]
  c.optim.frozen = []
  state = loop.train(c, str(tmp_path / "run"), verbose=False)
  np.testing.assert_array_equal(
      np.asarray(state.params["gen_vision_model"]["quantize"]["embedding"]["embedding"]),
      np.asarray(source["gen_vision_model"]["quantize"]["embedding"]["embedding"]))


@pytest.mark.parametrize("scan_layers", [True, False])
def test_init_from_loads_every_param_into_either_llm_layout(tmp_path, scan_layers):
  import dataclasses
  from tiny_assets import make_tiny_checkpoint
  from janus_jax.checkpoint import store
  from janus_jax.train import state as state_lib
  ckpt = make_tiny_checkpoint(str(tmp_path / "src"), seed=7)
  source, cfg = store.load_checkpoint(ckpt)
  cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, scan_layers=scan_layers))
  params, report = loop.partial_init(state_lib.init_model_params(cfg, jax.random.PRNGKey(0)),
                                     loop._load_init_from(ckpt, cfg))
  assert report["kept"] == [] and report["mismatched"] == []

  def second_gate(llm):  # layer 1's MLP gate kernel in either layout
    return llm["layers"]["mlp"]["gate_proj"]["kernel"][1] if "layers" in llm else llm["layers_1"]["mlp"]["gate_proj"][
        "kernel"]

  np.testing.assert_array_equal(np.asarray(second_gate(params["language_model"]["model"])),
                                np.asarray(second_gate(source["language_model"]["model"])))


def test_init_from_restores_onto_the_mesh(tmp_path):
  """`init_from` arrays land on their mesh shardings by the logical-axis rules, as the train state wants them."""
  from tiny_assets import make_tiny_checkpoint
  from janus_jax import sharding
  from janus_jax.checkpoint import store
  from janus_jax.train import state as state_lib
  ckpt = make_tiny_checkpoint(str(tmp_path / "src"), seed=7)
  source, cfg = store.load_checkpoint(ckpt)
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 4), ("tensor", 1)])
  shardings = state_lib.state_shardings(cfg, {"lr": 1e-3}, mesh, sharding.DEFAULT_RULES)
  params = state_lib.init_sharded_params(cfg, jax.random.PRNGKey(0), shardings.params)
  loaded, report = loop.partial_init(params, loop._load_init_from(ckpt, cfg, mesh=mesh, rules=sharding.DEFAULT_RULES))
  assert report["kept"] == [] and report["mismatched"] == []
  for x, s, ref in zip(jax.tree.leaves(loaded), jax.tree.leaves(shardings.params), jax.tree.leaves(source)):
    assert x.sharding.is_equivalent_to(s, x.ndim)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(ref))


def test_initial_state_from_a_complete_checkpoint_skips_the_random_init(tmp_path, monkeypatch):
  """A checkpoint with every param (the previous stage's export) gives the state of random init + overwrite,
  bit for bit, without running the random init; one with a param missing still starts from the random init."""
  import types
  from tiny_assets import make_tiny_checkpoint
  from janus_jax import sharding
  from janus_jax.checkpoint import store
  from janus_jax.train import state as state_lib
  ckpt = make_tiny_checkpoint(str(tmp_path / "src"), seed=7)
  source, cfg = store.load_checkpoint(ckpt)
  mesh = sharding.make_mesh([("data", 2), ("fsdp", 4), ("tensor", 1)])
  config = types.SimpleNamespace(optim={"lr": 1e-3})
  shardings = state_lib.state_shardings(cfg, config.optim, mesh, sharding.DEFAULT_RULES)
  rng = jax.random.PRNGKey(0)
  params, _ = loop.partial_init(state_lib.init_sharded_params(cfg, rng, shardings.params),
                                loop._load_init_from(ckpt, cfg, mesh=mesh, rules=sharding.DEFAULT_RULES))
  expected = state_lib.create_sharded_train_state(cfg, config.optim, shardings, params=params)
  random_inits = []
  real_init = state_lib.init_sharded_params
  monkeypatch.setattr(state_lib, "init_sharded_params", lambda *a: random_inits.append(1) or real_init(*a))
  state, report = loop._initial_state(config, cfg, ckpt, shardings, rng, mesh, sharding.DEFAULT_RULES)
  assert not random_inits and report["kept"] == [] and report["mismatched"] == []
  for x, y, s in zip(jax.tree.leaves(state), jax.tree.leaves(expected), jax.tree.leaves(shardings)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert x.sharding.is_equivalent_to(s, x.ndim)
  del source["gen_head"]  # a checkpoint without the image head: that module stays random
  partial = store.save_checkpoint(str(tmp_path / "partial"), source, cfg)
  state, report = loop._initial_state(config, cfg, partial, shardings, rng, mesh, sharding.DEFAULT_RULES)
  assert random_inits == [1] and report["kept"] and all(p.startswith("gen_head/") for p in report["kept"])
  random = real_init(cfg, rng, shardings.params)
  for module, reference in (("gen_head", random), ("language_model", expected.params)):
    for x, y in zip(jax.tree.leaves(state.params[module]), jax.tree.leaves(reference[module])):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_unwritable_workdir_is_explained(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(PermissionError, match="--workdir"):
    Checkpointer(str(blocker / "ckpts"), save_every=1)
  with pytest.raises(PermissionError, match=r"is a file, not a folder.*--workdir"):
    Checkpointer(str(blocker), save_every=1)
  if os.geteuid() != 0:  # root writes anywhere
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="Cannot write"):
      Checkpointer(str(locked), save_every=1)


def test_partial_init_reports_mismatches():
  params = {"a": np.zeros((2, 3), np.float32), "b": {"c": np.zeros(4, np.float32)}}
  loaded = {"a": np.ones((2, 3), np.float32), "b": {"c": np.ones(5, np.float32)}}
  out, report = loop.partial_init(jax.tree.map(jax.numpy.asarray, params), loaded)
  assert report["loaded"] == ["a"] and len(report["mismatched"]) == 1
  np.testing.assert_array_equal(out["a"], 1.0)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(data, tmp_path, monkeypatch):
  from janus_jax.train import step as step_lib
  from janus_jax.train.metrics import NonFiniteLossError
  real = step_lib.make_train_step

  def poisoned(cfg, train_cfg=None, *a, **k):
    inner = real(cfg, train_cfg, *a, **k)

    def step(state, batch, rng):
      new_state, metrics = inner(state, batch, rng)
      bad = jax.numpy.where(state.step >= 2, jax.numpy.nan, 0.0)
      return new_state, dict(metrics, loss=metrics["loss"] + bad)

    step.grad_accum_steps = inner.grad_accum_steps
    return step

  monkeypatch.setattr(step_lib, "make_train_step", poisoned)
  with pytest.raises(NonFiniteLossError, match=r"step 3.*last good checkpoint \(step 2\)"):
    loop.train(_config(data, 6), str(tmp_path), verbose=False)
  assert Checkpointer(str(tmp_path / "checkpoints"), save_every=2).latest_step() == 2
