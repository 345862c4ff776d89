"""Training checkpoints with orbax: params, optimizer state, step, grain iterator state and the config.

    ckpt = Checkpointer(workdir / "checkpoints", save_every=500, keep=3)
    restored = ckpt.restore_latest(abstract_state, data_iter)   # None on a fresh workdir
    ...
    stop = ckpt.preemption_point(step)                          # every step, on every process
    ckpt.maybe_save(step, state, data_iter, config, force=stop) # async; every `save_every` steps or on SIGTERM
    ckpt.close()                                                # waits for pending saves

Everything orbax-specific lives in this module, so moving to `ocp.v1` later touches one file. Restoring takes an
abstract state whose leaves carry shardings (`jax.ShapeDtypeStruct(..., sharding=...)`): the arrays land directly
on the current mesh, which may differ from the mesh (and the process count) that saved them.

Faults, each with a message and nothing deleted:
  * SIGTERM: one process saves at the next step and stops. With several processes the stop step is agreed by all of
    them (JAX's preemption sync point, which orbax's `reached_preemption` asks), so no host saves alone.
  * A newest checkpoint that cannot be read (truncated, corrupt): the run says so, moves it aside to
    `<dir>/unreadable_<step>[_k]` (kept for inspection, invisible to orbax) and restores the previous one.
  * A checkpoint of another model (param shapes differ): `CheckpointMismatchError`, nothing moved.
  * A missing data-iterator state (`<step>/data/process_<i>-of-<n>.json`): `DataStateError` naming the file, unless
    the pipeline's state is a plain position (unpacked rows: the same on every process), which is then taken from
    any process's file, so a checkpoint moves between process counts.
"""
from __future__ import annotations

import json
import signal
import threading
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from janus_jax import paths
from janus_jax.distributed import barrier


class CheckpointMismatchError(ValueError):
  """The checkpoint holds another model (param paths or shapes differ from the run's)."""


class DataStateError(FileNotFoundError):
  """The checkpoint lacks this process's data-iterator state and it cannot be derived."""


class NotWritableError(PermissionError):
  """A run directory that is a file, cannot be created or cannot be written to."""


def writable_dir(directory: paths.PathLike, what: str = "workdir") -> Any:
  """`directory` (resolved, created) after checking it is a writable folder; NotWritableError names the fix."""
  path = paths.resolve(directory)
  fix = "Fix: choose a --workdir you can write to (a new folder path), or fix its permissions."
  if path.exists() and not path.is_dir():
    raise NotWritableError(f"The {what} {path} is a file, not a folder. {fix}")
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_probe_{jax.process_index()}"
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise NotWritableError(f"Cannot write to the {what} {path}: {e.strerror or e}. {fix}") from e
  return path


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


class Preempted(Exception):
  """A training loop stopped on SIGTERM after saving a checkpoint (run the same command again to resume)."""


class Checkpointer:
  """orbax CheckpointManager with items state / data / config, async saves, keep-N and SIGTERM handling."""

  def __init__(self, directory: paths.PathLike, *, save_every: int, keep: int = 3, async_save: bool = True,
               handle_sigterm: bool = True):
    self.directory = writable_dir(directory, "checkpoint directory")
    self.save_every = int(save_every)
    options = ocp.CheckpointManagerOptions(save_interval_steps=max(self.save_every, 1), max_to_keep=keep,
                                           enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(str(self.directory), options=options,
                                         item_names=("state", "data", "config"))
    self.preempted = threading.Event()
    # Several processes: JAX's preemption notifier catches SIGTERM and the sync point agrees on the step; a Python
    # handler here would replace it, so it is installed for a single process only.
    self._synced = jax.process_count() > 1
    self._previous = None
    if handle_sigterm and not self._synced and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):  # pylint: disable=unused-argument
    self.preempted.set()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def preemption_point(self, step: int) -> bool:
    """True when the run must save at `step` and stop (SIGTERM). Call it once per step on every process: with
    several processes it is a collective that returns True at the same step everywhere."""
    if self._synced and self.manager.reached_preemption(step):
      self.preempted.set()
    return self.preempted.is_set()

  def should_save(self, step: int) -> bool:
    return self.preempted.is_set() or (self.save_every > 0 and step % self.save_every == 0)

  def save(self, step: int, state: Any, data_iter: grain.DatasetIterator | None, config: dict | None) -> None:
    """Saves now (async); `state` is a pytree of arrays (e.g. a TrainState)."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def maybe_save(self, step: int, state: Any, data_iter=None, config=None, force: bool = False) -> bool:
    if (force or self.should_save(step)) and step not in (self.manager.all_steps() or []):
      self.save(step, state, data_iter, config)
      return True
    return False

  # ---------------------------------------------------------------------------------------------- restoring
  def differences(self, step: int, abstract_state: Any) -> list[str]:
    """How the stored state's param paths / shapes differ from `abstract_state`'s ([] when they agree). Raises
    when the stored metadata cannot be read, and returns [] when it shares no path at all (an unreadable
    checkpoint rather than another model)."""
    meta = ocp.StandardCheckpointer().metadata(str(self.directory / str(step) / "state"))
    stored = _flat_shapes(getattr(getattr(meta, "item_metadata", meta), "tree", meta))
    want = _flat_shapes(_as_dict(abstract_state))
    if not set(stored) & set(want):
      return []
    problems = [f"{k}: checkpoint {stored[k]} vs run {v}" for k, v in want.items() if k in stored and stored[k] != v]
    problems += [f"{k}: missing in the checkpoint" for k in want if k not in stored]
    return problems + [f"{k}: only in the checkpoint" for k in stored if k not in want]

  def restore(self, step: int, abstract_state: Any, data_iter: grain.DatasetIterator | None = None) -> Any:
    """Restores `state` (onto the shardings in `abstract_state`) and, in place, the iterator position.
    CheckpointMismatchError when the checkpoint holds another model or optimizer."""
    try:
      state = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    except Exception as e:  # pylint: disable=broad-except  # tell another model from an unreadable file
      try:
        problems = self.differences(step, abstract_state)
      except Exception:  # pylint: disable=broad-except  # unreadable metadata: the original error says more
        problems = []
      if problems:
        raise CheckpointMismatchError(
            f"The checkpoint {self.directory / str(step)} was written for another model or optimizer: "
            f"{len(problems)} difference(s), e.g. {problems[:4]}. Nothing was changed. Fix: resume with the config "
            "that wrote it, or start this config in a new --workdir (use --config.init_from=<exported model> to "
            "start from its weights).") from e
      raise
    if data_iter is not None:
      self.restore_data(step, data_iter)
    return state["state"]

  def restore_data(self, step: int, data_iter: grain.DatasetIterator) -> None:
    """Sets `data_iter` to the position saved at `step` by this process (see the module docstring)."""
    folder = self.directory / str(step) / "data"
    index, count = jax.process_index(), jax.process_count()
    own = folder / f"process_{index}-of-{count}.json"
    if own.exists():
      data_iter.set_state(json.loads(own.read_text()))
      return
    others = sorted(folder.glob("process_*-of-*.json")) if folder.exists() else []
    if others:
      saved = json.loads(others[0].read_text())
      if _is_position(saved) and _is_position(data_iter.get_state()):
        print(f"note: {own.name} is not in {folder}; the data position is the same on every process "
              f"(unpacked rows), so it is taken from {others[0].name}.", flush=True)
        data_iter.set_state(saved)
        return
      raise DataStateError(
          f"The checkpoint at step {step} was written by {len(others)} process(es) ({[p.name for p in others]}) "
          f"and this run has {count}; its data position (packed rows, per process) cannot move to another process "
          f"count. The checkpoint is intact. Fix: resume with {len(others)} process(es), or turn packing off "
          "(--config.input.packing.enabled=False) in a new run.")
    raise DataStateError(
        f"The checkpoint at step {step} has no data-iterator state: {own} is missing (the params are intact). "
        "Fix: put the file back (e.g. from a copy of the checkpoint), or move the folder "
        f"{self.directory / str(step)} out of {self.directory} to resume from the previous checkpoint.")

  def restore_latest(self, abstract_state: Any, data_iter=None, log=print) -> tuple[Any, int] | None:
    """(state, step) of the newest checkpoint that can be read (None on a fresh directory). An unreadable one is
    reported through `log` and moved aside; a mismatching model or a missing data state raises."""
    for step in sorted(self.manager.all_steps() or [], reverse=True):
      try:
        return self.restore(step, abstract_state, data_iter), step
      except (CheckpointMismatchError, DataStateError):
        raise
      except Exception as e:  # pylint: disable=broad-except  # orbax / tensorstore / json errors of a bad file
        aside = self._move_aside(step)
        log(f"warning: the checkpoint at step {step} cannot be read ({_first_line(e)}); it is kept as {aside} and "
            "the run falls back to the previous checkpoint.")
    if any(self.directory.glob("unreadable_*")):
      log(f"warning: no readable checkpoint in {self.directory}; starting from step 0 (the unreadable ones are kept "
          "there as unreadable_*).")
    return None

  def _move_aside(self, step: int) -> Any:
    """Renames `<dir>/<step>` to `<dir>/unreadable_<step>[_k]` (process 0; all processes wait) and refreshes orbax's
    step list. Returns the new path."""
    target = self.directory / f"unreadable_{step}"
    k = 1
    while target.exists():
      target, k = self.directory / f"unreadable_{step}_{k}", k + 1
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(target)
    barrier(f"janus_jax_move_aside_{step}")
    self.manager.reload()
    return target

  def restore_config(self, step: int | None = None) -> dict | None:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def _flat_shapes(tree: Any) -> dict[str, tuple]:
  """{'a/b/0/c': shape} of every array-like leaf (dict keys, sequence indices and attributes alike as names)."""
  def name(k):
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {"/".join(name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves if hasattr(leaf, "shape")}


def _is_position(state: Any) -> bool:
  """A grain iterator state that is only a position (unpacked batches: {'next_index': n})."""
  return isinstance(state, dict) and set(state) == {"next_index"}


def _as_dict(tree: Any) -> Any:
  """A dataclass / flax struct state as the nested dict orbax stores (so paths compare with the metadata's)."""
  from flax import serialization  # pylint: disable=import-outside-toplevel
  return serialization.to_state_dict(tree)


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) mirroring a tree of arrays: the restore target for `Checkpointer`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
                      tree)
