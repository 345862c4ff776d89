"""Maps a PyTorch-style flat state dict (DeepSeek key names) onto our Linen parameter tree, strictly.

The mapping is generic, driven by the abstract target tree (`jax.eval_shape` of `init`):
  * dotted torch keys walk the nested param dict;
  * `name.N` becomes the child `name_N` when the tree has it (Sequential children), otherwise the target `name`
    is a scanned stack and N indexes its leading `layers` axis;
  * a final `weight` lands on whichever of `kernel`, `scale`, `embedding`, `weight` the target has;
  * Linear weights (out, in) are transposed to (in, out); conv weights OIHW become HWIO.
Every missing, unexpected or mis-shaped tensor is collected and reported together in one error.
"""
from __future__ import annotations

import collections
from typing import Any, Iterable, Mapping

import numpy as np

_WEIGHT_TARGETS = ("kernel", "scale", "embedding", "weight")


class CheckpointMismatchError(ValueError):
  """A checkpoint does not match the model it is loaded into; the message lists every offending tensor."""


def _is_leaf(x) -> bool:
  return not isinstance(x, Mapping)


def flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  """Nested dict -> {path tuple: leaf}."""
  out = {}
  for k, v in tree.items():
    if _is_leaf(v):
      out[prefix + (k,)] = v
    else:
      out.update(flatten(v, prefix + (k,)))
  return out


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for path, v in flat.items():
    node = out
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = v
  return out


def _resolve(key: str, tree: Mapping[str, Any]) -> tuple[tuple[str, ...], int | None] | None:
  """Finds the target path for a torch key; returns (path, stack_index) or None if it has no place."""
  segs = key.split(".")
  node: Any = tree
  path: list[str] = []
  stack_index = None
  i = 0
  while i < len(segs):
    s = segs[i]
    if _is_leaf(node):
      return None
    nxt = segs[i + 1] if i + 1 < len(segs) else None
    if nxt is not None and nxt.isdigit() and f"{s}_{nxt}" in node:
      path.append(f"{s}_{nxt}")
      node = node[f"{s}_{nxt}"]
      i += 2
      continue
    if nxt is not None and nxt.isdigit() and s in node and not _is_leaf(node[s]) and stack_index is None:
      path.append(s)
      node = node[s]
      stack_index = int(nxt)
      i += 2
      continue
    if i == len(segs) - 1 and s == "weight":
      for cand in _WEIGHT_TARGETS:
        if cand in node and _is_leaf(node[cand]):
          return tuple(path + [cand]), stack_index
      return None
    if s in node:
      path.append(s)
      node = node[s]
      i += 1
      continue
    return None
  if not _is_leaf(node):
    return None
  return tuple(path), stack_index


def _to_target_layout(name: str, t: np.ndarray, target_ndim: int) -> np.ndarray:
  if name == "kernel":
    if t.ndim == 2 and target_ndim == 2:
      return t.T
    if t.ndim == 4 and target_ndim == 4:
      return np.transpose(t, (2, 3, 1, 0))
  return t


def _target_layout_shape(name: str, shape: tuple[int, ...], target_ndim: int) -> tuple[int, ...]:
  """The shape `_to_target_layout` gives a tensor of `shape`, without reading it."""
  if name == "kernel" and len(shape) == target_ndim and len(shape) in (2, 4):
    return shape[::-1] if len(shape) == 2 else tuple(shape[i] for i in (2, 3, 1, 0))
  return shape


def state_dict_to_params(state: Mapping[str, Any], abstract: Mapping[str, Any], *,
                         ignore: Iterable[str] = (), what: str = "checkpoint", bar=None) -> dict[str, Any]:
  """Builds a param tree shaped like `abstract` (leaves with .shape/.dtype) from `state`.

  Every name and shape is checked before any tensor is read; then the tensors are read one at a time (a
  `reader.LazyTensor` only then), put in the target layout and cast, and scanned layers are written straight into
  their preallocated stack, so the peak memory is the output plus one source tensor.

  Args:
    state: {dotted torch key: array or LazyTensor}, DeepSeek `MultiModalityCausalLM` naming (possibly a sub-prefix
      of it).
    abstract: the target param tree (e.g. `jax.eval_shape(model.init, ...)["params"]`, unboxed).
    ignore: key prefixes that are known to have no place in the model (e.g. unused buffers); skipped silently.
    what: a name for the source, used in the error message.
    bar: optional tqdm-like progress bar, `update(1)` per tensor read.
  Returns:
    numpy param tree with the target dtypes (a param may share memory with a numpy array of `state` that already
    has its dtype).
  Raises:
    CheckpointMismatchError listing every missing, unexpected and mis-shaped tensor.
  """
  ignore = tuple(ignore)
  flat_target = flatten(abstract)
  plan: list[tuple[str, tuple[str, ...], int | None]] = []
  layers: dict[tuple[str, ...], set[int]] = collections.defaultdict(set)
  unexpected, misshaped = [], []
  for key in sorted(state):
    if ignore and key.startswith(ignore):
      continue
    shape = tuple(np.shape(state[key]))
    hit = _resolve(key, abstract)
    if hit is None or hit[0] not in flat_target:
      unexpected.append(f"{key} {shape}")
      continue
    path, idx = hit
    target = flat_target[path]
    want = tuple(target.shape[1:]) if idx is not None else tuple(target.shape)
    if _target_layout_shape(path[-1], shape, len(want)) != want:
      misshaped.append(f"{key}: checkpoint {shape} -> expected {want} "
                       f"for param {'/'.join(path)}" + (f"[{idx}]" if idx is not None else ""))
      continue
    plan.append((key, path, idx))
    if idx is not None:
      layers[path].add(idx)
  missing = []
  have_all = {path for _, path, idx in plan if idx is None}
  for path, target in flat_target.items():
    if path in have_all:
      continue
    if path in layers:
      n = target.shape[0]
      lost = [i for i in range(n) if i not in layers[path]]
      extra = sorted(i for i in layers[path] if i >= n)
      if lost:
        missing.append(f"{'/'.join(path)} layers {lost}")
      if extra:
        unexpected.append(f"{'/'.join(path)} layers {extra} (model has {n})")
      continue
    missing.append(f"{'/'.join(path)} {tuple(target.shape)}")
  if missing or unexpected or misshaped:
    lines = [f"The {what} does not match the model:"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
      if items:
        lines.append(f"  {len(items)} {title} tensor(s):")
        lines += [f"    {x}" for x in items]
    lines.append("Fix: check that the checkpoint and the model config describe the same architecture "
                 "(sizes, number of layers, vocabulary), or that the checkpoint files are complete.")
    raise CheckpointMismatchError("\n".join(lines))
  filled: dict[tuple[str, ...], np.ndarray] = {}
  for key, path, idx in plan:
    target = flat_target[path]
    arr = _to_target_layout(path[-1], np.asarray(state[key]), len(target.shape) - (idx is not None))
    if idx is None:
      filled[path] = np.asarray(arr, dtype=target.dtype)
    else:
      if path not in filled:
        filled[path] = np.empty(target.shape, target.dtype)
      filled[path][idx] = arr  # Cast while copying into the stack; the source tensor is freed after.
    del arr
    if bar is not None:
      bar.update(1)
  return unflatten({path: filled[path] for path in flat_target})
