"""The pure train step `train_step(state, batch, rng) -> (state, metrics)` and its sharded compilation.

    step_fn = make_train_step(cfg, config.train, state.tx)
    run = compile_train_step(step_fn, state_shardings(...), batch_sharding(mesh), mesh, config.sharding_rules)
    state, metrics = run(state, batch, rng)        # `state` is donated

The loss is the generation mode's objective (`cfg.mode.objective`, `janus_jax.modes.base.Objective`); the step
around it is the same for every mode. Per step (batch format: `janus_jax/train/batch.py`):
  1. CFG dropout on the whole global batch: with probability `cfg_dropout` per row, the row's `cfg_drop_mask`
     positions become `pad_id` (still attended; the flow objective also masks them out: the official unconditional
     rows, BOS + masked pads, positions unchanged). The rng is `fold_in(rng, state.step)`, so a loop may pass one key.
  2. The batch is split into `grad_accum_steps` microbatches (row r goes to microbatch r % A, so every device keeps
     its rows) and `lax.scan`ned. Per microbatch: the objective's `prepare` (ar_vq: `gen_pixels` -> frozen-VQ codes,
     stop_gradient, filled into `input_ids` / `targets`), then its loss: sums divided by counts of the WHOLE global
     batch (ar_vq: (text CE sum + image CE sum) / supervised tokens; flow: text CE + rectified flow + REPA, each over
     its own count), so the summed microbatch gradients equal the full-batch gradient and the metrics (ratios of
     summed sums) equal the full-batch metrics.
  3. Only trainable params (`state.trainable`) are differentiated; frozen ones are passed through untouched
     (bit-identical, no gradient memory). The optimizer clips the global norm of the trainable gradients.
Compute dtype follows the model config (e.g. `cfg.with_dtype('bfloat16')`); params, gradients, optimizer state,
logits and losses stay float32.

Config (`config.train`; keys read here, others belong to the training loop and are ignored unless they look like
a misspelling of these):
  grad_accum_steps  microbatches per step (default 1)
  max_rows_per_device  None, or R: at most R rows per device in one forward/backward; the loop raises
                    grad_accum_steps to what the batch and mesh need (`resolved_grad_accum`), the global batch stays
  cfg_dropout       per-row probability of replacing the T2I prompt by pad (default 0.1, Janus)
  pad_id            id used by CFG dropout (required when the batch has `cfg_drop_mask` and cfg_dropout > 0;
                    resolve it from the tokenizer: 100002 for Janus-Pro-1B, 100015 for Janus-1.3B / Pro-7B)
  max_text_tokens   None, or K: run lm_head only on each row's first K text-supervised positions (memory)
  max_image_tokens  None, or K: same for gen_head
  flow              flow mode only: rectified-flow / REPA settings (`janus_jax/train/flow_losses.py`)

With `optim.ema_decay > 0` the state keeps an EMA of the params, updated after every step.
"""
from __future__ import annotations

import contextlib
import difflib
import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from janus_jax import compile_options, modes
from janus_jax import sharding as sharding_lib
from janus_jax.models.configs import JanusConfig
from janus_jax.train.batch import check_batch
from janus_jax.train.state import TrainState, normalize_rules

STEP_DEFAULTS = dict(grad_accum_steps=1, max_rows_per_device=None, cfg_dropout=0.1, pad_id=None, max_text_tokens=None, max_image_tokens=None,
                     # the generation modes' objective settings (`train_section`: flow -> train.flow, ...)
                     **{m.train_section: None for m in modes.MODES.values() if m.train_section})
DATA_AXES = ("data", "fsdp")


def resolve_train_config(train_cfg: Mapping[str, Any] | Any | None) -> dict[str, Any]:
  """The step's keys of `config.train` over STEP_DEFAULTS. Keys close to a step key but not equal (typos such as
  'grad_acum_steps') raise; other keys are the training loop's and are ignored."""
  cfg = dict(train_cfg.to_dict() if hasattr(train_cfg, "to_dict") else (train_cfg or {}))
  for k in sorted(set(cfg) - set(STEP_DEFAULTS)):
    close = difflib.get_close_matches(k, STEP_DEFAULTS, n=1, cutoff=0.8)
    if close:
      raise ValueError(f"Unknown train config key {k!r}: did you mean {close[0]!r}? Step keys: "
                       f"{sorted(STEP_DEFAULTS)}.")
  out = {k: cfg.get(k, v) for k, v in STEP_DEFAULTS.items()}
  if int(out["grad_accum_steps"]) < 1:
    raise ValueError(f"train.grad_accum_steps must be >= 1, got {out['grad_accum_steps']}.")
  if not 0.0 <= float(out["cfg_dropout"]) <= 1.0:
    raise ValueError(f"train.cfg_dropout must be a probability in [0, 1], got {out['cfg_dropout']}.")
  return out


# ------------------------------------------------------------------------------------------------------------
# Batch transforms (pure).
# ------------------------------------------------------------------------------------------------------------

def apply_cfg_dropout(batch: dict, rng: jax.Array, rate: float, pad_id: int | None,
                      mask_dropped: bool = False) -> tuple[dict, jax.Array]:
  """Replaces each row's `cfg_drop_mask` ids by `pad_id` with probability `rate` (and with `mask_dropped` also
  marks them not `valid`, JanusFlow's unconditional layout); returns (batch, rows dropped)."""
  if "cfg_drop_mask" not in batch or rate <= 0.0:
    return batch, jnp.zeros((), jnp.float32)
  if pad_id is None:
    raise ValueError("The batch has `cfg_drop_mask` and train.cfg_dropout > 0 but train.pad_id is not set. Fix: set "
                     "config.train.pad_id to the tokenizer's pad id (e.g. 100002 for Janus-Pro-1B).")
  mask = batch["cfg_drop_mask"]
  drop = jax.random.bernoulli(rng, rate, (mask.shape[0],))
  replace = drop[:, None] & mask
  out = dict(batch, input_ids=jnp.where(replace, jnp.asarray(pad_id, batch["input_ids"].dtype), batch["input_ids"]))
  if mask_dropped:
    out["valid"] = batch["valid"] & ~replace
  return out, jnp.sum(drop & mask.any(axis=1)).astype(jnp.float32)


def prepare_batch(model, params, batch: dict, rng: jax.Array, train_cfg=None) -> dict:
  """CFG dropout + the mode's objective `prepare` (ar_vq: frozen-VQ codes filled in) on a whole batch, as the step
  does (for inspection and tests)."""
  c = resolve_train_config(train_cfg)
  objective = model.cfg.mode.objective(model.cfg, c)
  batch, _ = apply_cfg_dropout(dict(batch), rng, float(c["cfg_dropout"]), c["pad_id"],
                               mask_dropped=objective.mask_dropped_prompts)
  return objective.prepare(model, params, batch)


# ------------------------------------------------------------------------------------------------------------
# Forward and loss.
# ------------------------------------------------------------------------------------------------------------

def supervised_count(mask: jax.Array, cap) -> jax.Array:
  """Supervised positions of the batch (float32 scalar), at most `cap` per row when cap is not None."""
  per_row = mask.sum(axis=1)
  if cap is not None:
    per_row = jnp.minimum(per_row, cap)
  return jnp.sum(per_row).astype(jnp.float32)


def update_ema(ema, params, decay: float, trainable: Sequence[bool] | None = None):
  """ema <- decay * ema + (1 - decay) * params (float32 math, stored in ema's dtype); None stays None.

  `trainable` (one flag per leaf): frozen leaves keep their EMA as it is (bit-identical to the frozen param, which
  the float mix decay * x + (1 - decay) * x is not always)."""
  if ema is None:
    return None
  mix = lambda e, p: (decay * e.astype(jnp.float32) + (1.0 - decay) * p.astype(jnp.float32)).astype(e.dtype)
  if trainable is None:
    return jax.tree.map(mix, ema, params)
  leaves, treedef = jax.tree.flatten(ema)
  return treedef.unflatten([mix(e, p) if f else e for e, p, f in zip(leaves, jax.tree.leaves(params), trainable)])


def _split_microbatches(batch: dict, accum: int) -> dict:
  """[B, ...] -> [A, B/A, ...] with row r in microbatch r % A (each device keeps its own rows)."""
  def split(x):
    x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)
    return nn.with_logical_constraint(x, (None, "act_batch") + (None,) * (x.ndim - 2))
  return jax.tree.map(split, batch)


# ------------------------------------------------------------------------------------------------------------
# The step.
# ------------------------------------------------------------------------------------------------------------

def make_train_step(cfg: JanusConfig, train_cfg=None, tx: optax.GradientTransformation | None = None,
                    schedule_fn: Callable | None = None) -> Callable:
  """Builds `train_step(state, batch, rng) -> (state, metrics)` (pure; jit it or use `compile_train_step`).

  Args:
    cfg: the model config (its compute dtypes apply; params stay as stored).
    train_cfg: `config.train` (see module docstring).
    tx: the optimizer (default: `state.tx`); schedule_fn: lr schedule for the `lr` metric (default `tx.schedule`).
  Metrics (float32 scalars): the objective's (ar_vq: loss, loss_text, loss_image, accuracy_text, accuracy_image,
  tokens_text, tokens_image, tokens_dropped; flow: `flow_losses.flow_metrics`), then grad_norm (trainable grads
  before clipping), param_norm (trainable params after the update), update_norm, lr, cfg_dropped_rows.
  """
  c = resolve_train_config(train_cfg)
  accum = int(c["grad_accum_steps"])
  objective = cfg.mode.objective(cfg, c)
  model = cfg.mode.model_class()(cfg)

  def train_step(state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array):
    B, _ = check_batch(batch, cfg=cfg)
    if B % accum:
      raise ValueError(f"Global batch {B} is not divisible by train.grad_accum_steps={accum}. Fix: make "
                       f"input.batch_size a multiple of {accum} or change grad_accum_steps.")
    problem = objective.check_trainable(state.trainable)
    if problem:
      raise ValueError(problem)
    opt = tx if tx is not None else state.tx
    schedule = schedule_fn or getattr(opt, "schedule", None)
    rng = jax.random.fold_in(rng, state.step)
    drop_rng, loss_rng = rng, jax.random.fold_in(rng, 1)
    batch, dropped_rows = apply_cfg_dropout(dict(batch), drop_rng, float(c["cfg_dropout"]), c["pad_id"],
                                            mask_dropped=objective.mask_dropped_prompts)
    norms = objective.normalizers(batch)

    leaves, treedef = jax.tree.flatten(state.params)
    flags = state.trainable_flags()
    train = [x for x, f in zip(leaves, flags) if f]
    frozen = [x for x, f in zip(leaves, flags) if not f]

    def merge(t, fr):
      it, ifr = iter(t), iter(fr)
      return treedef.unflatten([next(it) if f else next(ifr) for f in flags])

    def micro_grads(micro, micro_rng):
      micro = objective.prepare(model, merge(train, frozen), micro)
      loss_fn = lambda t: objective.loss(model, merge(t, frozen), micro, micro_rng, norms)
      (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(train)
      return [g.astype(jnp.float32) for g in grads], sums

    zero_sums = objective.zero_sums()
    if accum == 1:
      grads, sums = micro_grads(batch, loss_rng)
    else:
      def body(carry, xs):
        acc, total = carry
        micro, micro_rng = xs
        g, s = micro_grads(micro, micro_rng)
        return ([a + b for a, b in zip(acc, g)], jax.tree.map(jnp.add, total, s)), None

      init = ([jnp.zeros_like(x, jnp.float32) for x in train], zero_sums)
      xs = (_split_microbatches(batch, accum), jax.random.split(loss_rng, accum))
      (grads, sums), _ = jax.lax.scan(body, init, xs)

    full_grads = merge(grads, [jnp.zeros_like(x) for x in frozen])
    updates, opt_state = opt.update(full_grads, state.opt_state, state.params)
    upd = [u for u, f in zip(jax.tree.leaves(updates), flags) if f]
    new_train = [(p + u).astype(p.dtype) for p, u in zip(train, upd)]
    new_params = merge(new_train, frozen)
    new_state = state.replace(step=state.step + 1, params=new_params, opt_state=opt_state,
                              ema_params=update_ema(state.ema_params, new_params, state.ema_decay, flags))

    metrics = objective.metrics(sums)
    metrics.update(
        grad_norm=optax.global_norm(grads), param_norm=optax.global_norm(new_train),
        update_norm=optax.global_norm(upd), cfg_dropped_rows=dropped_rows,
        lr=schedule(state.step) if schedule is not None else jnp.float32(jnp.nan))
    return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  train_step.grad_accum_steps = accum
  return train_step


# ------------------------------------------------------------------------------------------------------------
# Sharded compilation.
# ------------------------------------------------------------------------------------------------------------

def data_parallel_axes(mesh: Mesh) -> tuple[str, ...]:
  return tuple(a for a in DATA_AXES if a in mesh.axis_names)


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in data_parallel_axes(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis over ('data', 'fsdp'); one sharding for every batch array (a pytree prefix)."""
  return NamedSharding(mesh, PartitionSpec(data_parallel_axes(mesh) or None))


def resolved_grad_accum(train_cfg: Mapping[str, Any] | Any, batch_size: int, mesh: Mesh) -> int:
  """Microbatches per step: `train.grad_accum_steps`, raised (with `train.max_rows_per_device` = R) to the
  smallest count A >= grad_accum_steps for which each device runs at most R rows at once and A x data-parallel
  size divides the global batch. ValueError naming the settings when none does (the batch does not divide)."""
  c = resolve_train_config(train_cfg)
  accum, rows = int(c["grad_accum_steps"]), c["max_rows_per_device"]
  if rows is None:
    return accum
  rows, dp = int(rows), data_parallel_size(mesh)
  if rows < 1:
    raise ValueError(f"train.max_rows_per_device must be >= 1 (or None: no limit), got {rows}.")
  for a in range(max(accum, math.ceil(batch_size / (dp * rows))), batch_size // dp + 1):
    if batch_size % (dp * a) == 0:
      return a
  raise ValueError(f"No gradient accumulation count splits the global batch {batch_size} into microbatches of at "
                   f"most {rows} row(s) on each of the {dp} data-parallel devices (train.max_rows_per_device, "
                   f"grad_accum_steps {accum}). Fix: make input.batch_size a multiple of {dp * accum}.")


def check_batch_divisible(batch: Mapping[str, Any], mesh: Mesh, accum: int = 1) -> None:
  """ValueError naming the global batch, the data-parallel size and the fix when they do not divide."""
  B = batch["input_ids"].shape[0]
  dp = data_parallel_size(mesh)
  axes = " x ".join(f"{a}={mesh.shape[a]}" for a in data_parallel_axes(mesh))
  if B % dp:
    raise ValueError(f"Global batch size {B} is not divisible by the data-parallel size {dp} (mesh {axes}). Fix: "
                     f"make input.batch_size a multiple of {dp} (e.g. {dp * max(1, -(-B // dp))}) or change the "
                     "mesh's data/fsdp sizes.")
  if B % (dp * accum):
    raise ValueError(f"Global batch size {B} does not split into {accum} microbatches divisible by the "
                     f"data-parallel size {dp} (mesh {axes}). Fix: make input.batch_size a multiple of "
                     f"{dp * accum} (data-parallel size x train.grad_accum_steps) or change grad_accum_steps.")


def compile_train_step(step_fn: Callable, state_shardings: Any, batch_shardings: Any, mesh: Mesh,
                       rules=sharding_lib.DEFAULT_RULES, compiler_options: dict | None = None) -> Callable:
  """`jax.jit(step_fn, in_shardings, out_shardings, donate_argnums=0)` run under the mesh and logical rules.

  Args:
    state_shardings: from `state.state_shardings`; batch_shardings: `batch_sharding(mesh)` or a dict per key.
    rules: logical-axis rules (config.sharding_rules); compiler_options: passed to `jax.jit` (XLA options;
      None: the platform's, `compile_options.train_compiler_options`).
  Returns: `run(state, batch, rng) -> (state, metrics)`; checks batch divisibility first (clear ValueError).
  `run.jitted` is the jitted function (e.g. for `.lower(...)`), `run.context()` the mesh + rules context.
  """
  rules = normalize_rules(rules)
  replicated = sharding_lib.replicated(mesh)
  if compiler_options is None:
    compiler_options = compile_options.train_compiler_options()
  jitted = jax.jit(step_fn, in_shardings=(state_shardings, batch_shardings, replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=0,
                   compiler_options=compiler_options)
  accum = getattr(step_fn, "grad_accum_steps", 1)

  def context():
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(nn.logical_axis_rules(rules))
    return stack

  def run(state, batch, rng):
    check_batch_divisible(batch, mesh, accum)
    with context():
      return jitted(state, batch, rng)

  run.jitted, run.context = jitted, context
  return run


__all__ = ["STEP_DEFAULTS", "resolve_train_config", "resolved_grad_accum", "apply_cfg_dropout", "prepare_batch", "supervised_count",
           "update_ema", "make_train_step",
           "data_parallel_axes", "data_parallel_size", "batch_sharding", "check_batch_divisible",
           "compile_train_step"]
