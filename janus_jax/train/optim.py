"""AdamW with a learning-rate schedule, global-norm clipping and per-stage trainable parameter sets.

Config (`config.optim`, every key optional except `lr`; unknown keys raise):
  lr             peak learning rate
  schedule       'constant' | 'cosine' (both after a linear warm-up)
  warmup_steps   linear warm-up length; step s (0-based) uses lr * min(1, (s + 1) / warmup_steps)
  total_steps    schedule length (cosine reaches lr * end_lr_factor there and stays)
  end_lr_factor  final fraction of lr for 'cosine' (default 0.0)
  b1, b2, eps    AdamW moments (defaults 0.9, 0.95, 1e-8 — the Janus papers' (0.9, 0.95))
  weight_decay   decoupled weight decay (times the lr), applied only where `decay_pattern` matches
  decay_pattern  regex on the '/'-joined param path; default r'.*/kernel' = every Dense / Conv matrix. Norm scales
                 and biases, embedding tables (`embed_tokens`, `gen_embed`, the VQ codebook) and SigLIP's
                 `pos_embed` are NOT decayed: they are not plain linear maps, and decaying an embedding pulls rarely
                 seen rows (most of the 102400-token vocabulary) towards zero. `lm_head/kernel` is a Dense and is
                 decayed.
  grad_clip_norm clip the global norm of the trainable gradients (default 1.0; 0 or None disables)
  mu_dtype       dtype of the first moment (default None = the param dtype)
  trainable      list of regexes (re.fullmatch on '/'-joined param paths): only matching params train
                 (None = all)
  frozen         list of regexes: matching params are frozen (applied after `trainable`)
  lr_mults       list of (regex, multiplier) pairs: a trainable param whose path fullmatches a regex (the first
                 that does) updates with lr * multiplier, e.g. [('language_model/.*', 0.5)] trains the LLM at half
                 the rate of the new modules; unmatched params use lr. Multipliers must be > 0 (freeze with `frozen`)
  ema_decay      > 0 keeps an exponential moving average of the params in the train state (JanusFlow: 0.99);
                 read by `train.state`, not by the optimizer
Every regex must match at least one param (typo protection), except one whose top-level module is in
`absent_modules`: a module the model variant does not build (e.g. 'vision_model' with model.und_encoder='vq',
`janus_jax.models.und_encoder.absent_modules`), so the stage lists' 'vision_model/.*' stays valid there. Frozen params get `optax.set_to_zero()` through
`optax.multi_transform`: their optimizer state is empty, and the train step leaves them bit-identical and does not
even compute their gradients. The returned transformation is a `KeyedTransformation` (equal when built from the
same config and param tree), so it can be static data of `TrainState` without breaking jit caching.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from janus_jax.configs.common import reject_unknown_keys

DEFAULTS = dict(
    lr=None, schedule="constant", warmup_steps=0, total_steps=0, end_lr_factor=0.0, b1=0.9, b2=0.95, eps=1e-8,
    weight_decay=0.0, decay_pattern=r".*/kernel", grad_clip_norm=1.0, mu_dtype=None, trainable=None, frozen=(),
    lr_mults=(), ema_decay=0.0,
)
SCHEDULES = ("constant", "cosine")
TRAINABLE, FROZEN = "trainable", "frozen"

def stage_trainable(stage: int, generation_mode: str = "ar_vq") -> dict[str, Any]:
  """{'trainable': [...] | None, 'frozen': [...]} for training stage 1, 2 or 3 of the generation mode (`ar_vq`:
  Janus, `flow`: JanusFlow); the sets are the mode's `stages` (`janus_jax.modes`)."""
  from janus_jax import modes  # pylint: disable=import-outside-toplevel
  return modes.get(generation_mode).stage_trainable(stage)


def _as_dict(cfg: Mapping[str, Any] | Any) -> dict[str, Any]:
  return dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)


def resolve_config(optim_cfg) -> dict[str, Any]:
  """Optim config merged over DEFAULTS; unknown keys raise a ValueError naming them (and close matches)."""
  cfg = _as_dict(optim_cfg)
  reject_unknown_keys(cfg, DEFAULTS, "optim config")
  out = {**DEFAULTS, **cfg}
  if out["lr"] is None:
    raise ValueError("optim.lr is required (the peak learning rate).")
  if out["schedule"] not in SCHEDULES:
    raise ValueError(f"Unknown optim.schedule {out['schedule']!r}; valid schedules: {list(SCHEDULES)}.")
  if out["schedule"] == "cosine" and out["total_steps"] <= out["warmup_steps"]:
    raise ValueError(f"A cosine schedule needs optim.total_steps ({out['total_steps']}) > optim.warmup_steps "
                     f"({out['warmup_steps']}).")
  return out


def make_schedule(optim_cfg) -> Callable[[jax.Array], jax.Array]:
  """step (int, 0-based) -> learning rate (float32). Linear warm-up, then constant or cosine."""
  c = resolve_config(optim_cfg)
  lr, warmup, total = float(c["lr"]), int(c["warmup_steps"]), int(c["total_steps"])
  end = float(c["end_lr_factor"])
  kind = c["schedule"]

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    factor = jnp.minimum(1.0, (step + 1.0) / warmup) if warmup > 0 else jnp.float32(1.0)
    if kind == "cosine":
      progress = jnp.clip((step - warmup) / max(1, total - warmup), 0.0, 1.0)
      factor = factor * (end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(math.pi * progress)))
    return (lr * factor).astype(jnp.float32)

  return schedule


def param_paths(params) -> list[str]:
  """'/'-joined paths of every leaf, in `jax.tree.leaves` order."""
  return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _match_all(patterns: Sequence[str], paths: Sequence[str], what: str,
               absent_modules: Sequence[str] = ()) -> list[bool]:
  """Per path: does any pattern fullmatch? Raises when a pattern matches nothing (typo protection), unless the
  pattern's top-level module (its text before the first '/') is one of `absent_modules`."""
  hits = [False] * len(paths)
  for pat in patterns:
    try:
      rx = re.compile(pat)
    except re.error as e:
      raise ValueError(f"optim.{what} pattern {pat!r} is not a valid regex: {e}.") from e
    matched = [bool(rx.fullmatch(p)) for p in paths]
    if not any(matched) and pat.split("/")[0] not in absent_modules:
      tops = sorted({p.split("/")[0] for p in paths})
      raise ValueError(
          f"optim.{what} pattern {pat!r} matches no parameter (patterns are re.fullmatch'ed on '/'-joined paths "
          f"such as {paths[0]!r}; top-level modules: {tops}). Fix the pattern, e.g. '{tops[0]}/.*'.")
    hits = [h or m for h, m in zip(hits, matched)]
  return hits


def trainable_mask(optim_cfg, params, absent_modules: Sequence[str] = ()) -> Any:
  """Pytree of bools like `params`: True where the param trains (`absent_modules`: see the module docstring)."""
  c = resolve_config(optim_cfg)
  paths = param_paths(params)
  trainable = c["trainable"]
  if isinstance(trainable, str) or isinstance(c["frozen"], str):
    raise ValueError("optim.trainable / optim.frozen must be LISTS of regexes, not a single string.")
  on = [True] * len(paths) if trainable is None else _match_all(list(trainable), paths, "trainable", absent_modules)
  off = _match_all(list(c["frozen"] or ()), paths, "frozen", absent_modules)
  flags = [a and not b for a, b in zip(on, off)]
  if not any(flags):
    raise ValueError("optim.trainable / optim.frozen leave no trainable parameter.")
  return jax.tree.unflatten(jax.tree.structure(params), flags)


def decay_mask_fn(pattern: str) -> Callable[[Any], Any]:
  """params -> pytree of bools (True = apply weight decay) from a regex on the '/'-joined path."""
  rx = re.compile(pattern)
  return lambda params: jax.tree_util.tree_map_with_path(lambda p, _: bool(rx.fullmatch(path_str(p))), params)


def lr_multiplier_masks(lr_mults, params, absent_modules: Sequence[str] = ()
                        ) -> list[tuple[float, Callable[[Any], Any]]]:
  """[(multiplier, mask_fn)] from `lr_mults` pairs; mask_fn(params) -> bool pytree (True where the multiplier
  applies; a path takes the first pattern it fullmatches). Callables, like `decay_mask_fn`, so they also apply to
  the trainable sub-tree that `optax.multi_transform` hands on."""
  pairs = [tuple(x) for x in (lr_mults or ())]
  if any(len(x) != 2 for x in pairs):
    raise ValueError(f"optim.lr_mults={lr_mults!r} must be a list of (regex, multiplier) pairs, e.g. "
                     "[('language_model/.*', 0.5)].")
  paths, taken, out = param_paths(params), set(), []
  for pattern, mult in pairs:
    if not float(mult) > 0:
      raise ValueError(f"optim.lr_mults multiplier {mult!r} for {pattern!r} must be > 0; to freeze params list "
                       "them in optim.frozen.")
    mine = {p for p, hit in zip(paths, _match_all([pattern], paths, "lr_mults", absent_modules))
            if hit and p not in taken}
    taken |= mine
    out.append((float(mult), lambda tree, mine=frozenset(mine): jax.tree_util.tree_map_with_path(
        lambda path, _: path_str(path) in mine, tree)))
  return out


def make_optimizer(optim_cfg, params, absent_modules: Sequence[str] = ()
                   ) -> tuple[optax.GradientTransformation, Callable[[jax.Array], jax.Array]]:
  """Builds the optimizer for `params` (arrays or ShapeDtypeStructs; only the tree structure and paths are used).
  `absent_modules`: top-level modules the model does not build, which patterns may name (module docstring).

  Returns: (tx, schedule_fn). `tx` = multi_transform({trainable: clip -> adam -> decoupled wd -> -lr(step),
  frozen: set_to_zero}); `schedule_fn(step)` is the lr used for update number `step`.
  """
  c = resolve_config(optim_cfg)
  schedule = make_schedule(c)
  labels = jax.tree.map(lambda t: TRAINABLE if t else FROZEN, trainable_mask(c, params, absent_modules))
  chain = []
  if c["grad_clip_norm"]:
    chain.append(optax.clip_by_global_norm(float(c["grad_clip_norm"])))
  chain.append(optax.scale_by_adam(b1=c["b1"], b2=c["b2"], eps=c["eps"],
                                   mu_dtype=jnp.dtype(c["mu_dtype"]) if c["mu_dtype"] else None))
  if c["weight_decay"]:
    chain.append(optax.add_decayed_weights(float(c["weight_decay"]), mask=decay_mask_fn(c["decay_pattern"])))
  chain.append(optax.scale_by_learning_rate(schedule))
  for mult, mask in lr_multiplier_masks(c["lr_mults"], params, absent_modules):
    chain.append(optax.masked(optax.scale(mult), mask))
  tx = optax.multi_transform({TRAINABLE: optax.chain(*chain), FROZEN: optax.set_to_zero()}, labels)
  key = (repr(sorted((k, repr(v)) for k, v in c.items())), str(jax.tree.structure(params)))
  return KeyedTransformation.wrap(tx, key, schedule), schedule


class KeyedTransformation(optax.GradientTransformation):
  """An optax transformation that compares and hashes by the config that built it (not by closure identity).

  It is static data of `TrainState`, so two states built from the same config (e.g. the abstract state used for
  shardings and the real one) have equal tree structures and share compiled steps. `schedule` is the lr schedule.
  """

  @classmethod
  def wrap(cls, tx: optax.GradientTransformation, key, schedule=None) -> "KeyedTransformation":
    out = cls(tx.init, tx.update)
    out.key, out.schedule = key, schedule
    return out

  def __eq__(self, other):
    return isinstance(other, KeyedTransformation) and self.key == other.key

  def __ne__(self, other):
    return not self == other

  def __hash__(self):
    return hash(self.key)


__all__ = ["DEFAULTS", "KeyedTransformation", "stage_trainable", "resolve_config", "make_schedule",
           "param_paths", "trainable_mask", "decay_mask_fn", "lr_multiplier_masks", "make_optimizer"]
