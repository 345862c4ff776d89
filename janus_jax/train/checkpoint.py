"""Training checkpoints with orbax: params, optimizer state, step, grain iterator state and the config.

    ckpt = Checkpointer(workdir + "/checkpoints", save_every=500, keep=3)
    restored = ckpt.restore_latest(abstract_state, data_iter)   # None on a fresh workdir
    ...
    ckpt.maybe_save(step, state, data_iter, config)             # async; every `save_every` steps or on SIGTERM
    ckpt.close()                                                # waits for pending saves

Everything orbax-specific lives in this module, so moving to `ocp.v1` later touches one file. Restoring takes an
abstract state whose leaves carry shardings (`jax.ShapeDtypeStruct(..., sharding=...)`): the arrays land directly
on the current mesh, which may differ from the mesh that saved them.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """orbax CheckpointManager with items state / data / config, async saves, keep-N and SIGTERM handling."""

  def __init__(self, directory: str, *, save_every: int, keep: int = 3, async_save: bool = True,
               handle_sigterm: bool = True):
    directory = os.path.abspath(directory)
    try:
      os.makedirs(directory, exist_ok=True)
    except OSError as e:
      raise PermissionError(f"Cannot create the checkpoint directory {directory}: {e}. Fix: choose a --workdir "
                            "you can write to.") from e
    if not os.access(directory, os.W_OK):
      raise PermissionError(f"The checkpoint directory {directory} is not writable. Fix: choose a --workdir you "
                            "can write to, or fix its permissions.")
    self.directory = directory
    self.save_every = int(save_every)
    options = ocp.CheckpointManagerOptions(save_interval_steps=max(self.save_every, 1), max_to_keep=keep,
                                           enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(directory, options=options, item_names=("state", "data", "config"))
    self.preempted = threading.Event()
    if handle_sigterm and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    else:
      self._previous = None

  def _on_sigterm(self, signum, frame):  # pylint: disable=unused-argument
    self.preempted.set()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    return self.preempted.is_set() or self.manager.reached_preemption(step) or (
        self.save_every > 0 and step % self.save_every == 0)

  def save(self, step: int, state: Any, data_iter: grain.DatasetIterator | None, config: dict | None) -> None:
    """Saves now (async); `state` is a pytree of arrays (e.g. a TrainState)."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def maybe_save(self, step: int, state: Any, data_iter=None, config=None) -> bool:
    if self.should_save(step) and step not in (self.manager.all_steps() or []):
      self.save(step, state, data_iter, config)
      return True
    return False

  def restore(self, step: int, abstract_state: Any, data_iter: grain.DatasetIterator | None = None) -> Any:
    """Restores `state` (onto the shardings in `abstract_state`) and, in place, the iterator position."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def restore_latest(self, abstract_state: Any, data_iter=None) -> tuple[Any, int] | None:
    step = self.latest_step()
    if step is None:
      return None
    return self.restore(step, abstract_state, data_iter), step

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


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) mirroring a tree of arrays: the restore target for `Checkpointer`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
                      tree)
