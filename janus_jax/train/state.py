"""Train state: step, params (float32), optimizer state; plus its shardings from the params' logical axis names.

    state = create_train_state(cfg, config.optim, jax.random.PRNGKey(0))          # or params=loaded_params
    shardings = state_shardings(cfg, config.optim, mesh, config.sharding_rules)
    state = jax.device_put(state, shardings)

`tx` and `trainable` are static (pytree aux data): only step / params / opt_state are arrays (what a checkpoint
stores). Frozen params have no optimizer state (`optax.set_to_zero`), and the Adam moments of a trainable param
take the param's sharding.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from janus_jax import compile_options, sharding as sharding_lib
from janus_jax.models.configs import JanusConfig
from janus_jax.models.janus import abstract_params, init_params
from janus_jax.models.und_encoder import absent_modules
from janus_jax.train import optim


@struct.dataclass
class TrainState:
  """step int32[]; params: the model's param tree; opt_state: the optax state (moments of trainable params only).

  Static: `tx` (the optax transformation) and `trainable` (sorted tuple of '/'-joined trainable param paths; the
  train step differentiates only these).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  trainable: tuple[str, ...] = struct.field(pytree_node=False)
  ema_params: Any = None  # EMA of params (same tree) when `optim.ema_decay` > 0, else None.
  ema_decay: float = struct.field(pytree_node=False, default=0.0)

  def trainable_flags(self) -> list[bool]:
    """Per leaf of `params` (jax.tree.leaves order): does it train?"""
    names = set(self.trainable)
    return [p in names for p in optim.param_paths(self.params)]


@functools.lru_cache(maxsize=8)
def _jitted_init(cfg: JanusConfig):
  """Compiled `init_params`, cached per config. It runs once, so on CPU it is compiled without LLVM optimisation
  (tiny model: 4 s instead of 8 s to compile, 14 s eager)."""
  return jax.jit(functools.partial(init_params, cfg), compiler_options=compile_options.init_compiler_options())


def _trainable_paths(optim_cfg, params, absent=()) -> tuple[str, ...]:
  mask = optim.trainable_mask(optim_cfg, params, absent)
  return tuple(p for p, m in zip(optim.param_paths(params), jax.tree.leaves(mask)) if m)


def create_train_state(cfg: JanusConfig, optim_cfg, rng: jax.Array | None = None, params: Any = None) -> TrainState:
  """Fresh state at step 0: random params from `rng` (or the given `params`, e.g. a converted checkpoint)."""
  if params is None:
    if rng is None:
      raise ValueError("create_train_state needs `rng` (to initialise params) or `params`.")
    params = _jitted_init(cfg)(rng)
  return _state_from_params(optim_cfg, params, absent_modules(cfg))


def init_model_params(cfg: JanusConfig, rng: jax.Array) -> Any:
  """Random-initialised params through the cached compiled init (see `_jitted_init`)."""
  return _jitted_init(cfg)(rng)


def init_sharded_params(cfg: JanusConfig, rng: jax.Array, param_shardings: Any) -> Any:
  """Random-initialised params created directly with `param_shardings` (never whole on one device)."""
  return jax.jit(functools.partial(init_params, cfg), out_shardings=param_shardings,
                 compiler_options=compile_options.init_compiler_options())(rng)


def create_sharded_train_state(cfg: JanusConfig, optim_cfg, shardings: TrainState, rng: jax.Array | None = None,
                               params: Any = None) -> TrainState:
  """`create_train_state` whose arrays are created directly with `shardings` (from `state_shardings`): the
  model is never materialised on one device (needed for models larger than one device's memory).

  With `rng` the params are initialised inside a jit whose outputs are sharded; given `params` (e.g. a
  loaded checkpoint, any placement) they are moved to their shardings and only the optimizer state is created.
  """
  if params is None:
    if rng is None:
      raise ValueError("create_sharded_train_state needs `rng` (to initialise params) or `params`.")
    make = jax.jit(lambda r: _state_from_params(optim_cfg, init_params(cfg, r), absent_modules(cfg)),
                   out_shardings=shardings, compiler_options=compile_options.init_compiler_options())
    return make(rng)
  params = jax.device_put(params, shardings.params)
  make = jax.jit(lambda p: _state_from_params(optim_cfg, p, absent_modules(cfg)), in_shardings=(shardings.params,),
                 out_shardings=shardings)
  return make(params)


def _state_from_params(optim_cfg, params, absent=()) -> TrainState:
  """`absent`: top-level modules the model does not build (`und_encoder.absent_modules`), which the optimizer's
  patterns may name."""
  tx, _ = optim.make_optimizer(optim_cfg, params, absent)
  decay = float(optim.resolve_config(optim_cfg)["ema_decay"])
  ema = jax.tree.map(jnp.copy, params) if decay > 0 else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx,
                    trainable=_trainable_paths(optim_cfg, params, absent), ema_params=ema, ema_decay=decay)


def abstract_state(cfg: JanusConfig, optim_cfg) -> TrainState:
  """The state as ShapeDtypeStructs (no memory, no compute)."""
  return jax.eval_shape(lambda: _state_from_params(optim_cfg, init_params(cfg, jax.random.PRNGKey(0)),
                                                   absent_modules(cfg)))


def normalize_rules(rules):
  """Rules from config (lists from ml_collections) as the tuple-of-tuples flax expects."""
  fix = lambda a: tuple(a) if isinstance(a, list) else a
  return tuple((name, fix(axis)) for name, axis in rules)


def state_shardings(cfg: JanusConfig, optim_cfg, mesh: jax.sharding.Mesh,
                    rules=sharding_lib.DEFAULT_RULES) -> TrainState:
  """A TrainState of NamedShardings: params from their logical axis names through `rules`; every optimizer-state
  leaf that mirrors a param (same path suffix and shape, e.g. Adam mu / nu) takes that param's sharding; the rest
  (step, counts) is replicated."""
  param_sh = sharding_lib.logical_to_sharding(abstract_params(cfg, boxed=True), mesh, normalize_rules(rules))
  abstract = abstract_state(cfg, optim_cfg)
  return abstract.replace(step=sharding_lib.replicated(mesh), params=param_sh,
                          opt_state=opt_state_shardings(abstract.opt_state, abstract.params, param_sh, mesh),
                          ema_params=None if abstract.ema_params is None else param_sh)


def opt_state_shardings(opt_state, params, param_shardings, mesh) -> Any:
  """Shardings for an optimizer state: leaves whose trailing dict-key path and shape equal a param's inherit its
  sharding; all others are replicated."""
  by_path = {}
  for (path, p), s in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(
      param_shardings, is_leaf=lambda x: isinstance(x, NamedSharding))):
    by_path[optim.path_str(path)] = (tuple(p.shape), s)

  def pick(path, leaf):
    keys = []
    for k in reversed(path):  # The trailing run of dict keys is the param path.
      if not isinstance(k, jax.tree_util.DictKey):
        break
      keys.append(str(k.key))
    hit = by_path.get("/".join(reversed(keys)))
    if hit is not None and hit[0] == tuple(getattr(leaf, "shape", ())):
      return hit[1]
    return sharding_lib.replicated(mesh)

  return jax.tree_util.tree_map_with_path(pick, opt_state)


def spec_rank_problems(abstract: Any, shardings: Any) -> list[str]:
  """'path: spec P(...) for shape (...)' for every leaf whose PartitionSpec length differs from its rank."""
  problems = []
  leaves = jax.tree_util.tree_flatten_with_path(abstract)[0]
  shs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  if len(leaves) != len(shs):
    return [f"{len(leaves)} arrays but {len(shs)} shardings"]
  for (path, leaf), sh in zip(leaves, shs):
    spec = sh.spec if isinstance(sh, NamedSharding) else PartitionSpec()
    if len(spec) != len(leaf.shape):
      problems.append(f"{jax.tree_util.keystr(path)}: spec {spec} for shape {tuple(leaf.shape)}")
  return problems


def param_logical_problems(cfg: JanusConfig) -> list[str]:
  """`sharding.check_spec_ranks` on the boxed params (every param has logical names of its rank)."""
  return sharding_lib.check_spec_ranks(abstract_params(cfg, boxed=True))


__all__ = ["TrainState", "create_train_state", "create_sharded_train_state", "init_model_params", "abstract_state",
           "normalize_rules", "state_shardings", "opt_state_shardings", "spec_rank_problems",
           "param_logical_problems"]
