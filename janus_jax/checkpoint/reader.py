"""Reads the weight tensors of a PyTorch / transformers checkpoint directory (local or remote) into numpy.

Supported layouts (first match wins, in this order, as in transformers):
  * `model.safetensors`
  * `model.safetensors.index.json` + the shards it names
  * `pytorch_model.bin` (PyTorch pickle; needs the optional `torch` extra; local files only)
  * `pytorch_model.bin.index.json` + the shards it names

Safetensors files are parsed directly (8-byte header length, JSON header, raw little-endian data), so bfloat16 and
float8 tensors load as `ml_dtypes` arrays without torch. torch is imported lazily and only for `.bin` files.

`open_state_dict` reads nothing but headers: it returns `LazyTensor`s (shape and dtype known, data read by
`np.asarray(t)`, one tensor at a time, into fresh memory), so a converter holds one source tensor at a time.
`read_state_dict` reads every tensor at once.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import zipfile
from typing import Callable, Iterable

import ml_dtypes
import numpy as np
from etils import epath

from janus_jax import paths

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"

_ST_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64), "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64), "U32": np.dtype(np.uint32), "U16": np.dtype(np.uint16), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_MAX_HEADER = 100 * 1024 * 1024
_FLOAT_NAMES = ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float16", "float32", "float64")


class CheckpointReadError(ValueError):
  """A checkpoint directory or weight file cannot be read; the message names the file and the fix."""


class LazyTensor:
  """A tensor that is read when used: `.shape` / `.dtype` cost no I/O, `np.asarray(t)` reads it (every call, into
  fresh memory that the caller owns)."""
  __slots__ = ("shape", "dtype", "_read")

  def __init__(self, shape: Iterable[int], dtype, read: Callable[[], np.ndarray]):
    self.shape = tuple(int(n) for n in shape)
    self.dtype = np.dtype(dtype)
    self._read = read

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __array__(self, dtype=None, copy=None):  # pylint: disable=unused-argument
    arr = self._read()
    return arr if dtype is None else arr.astype(dtype, copy=False)

  def __repr__(self) -> str:
    return f"LazyTensor({self.dtype.name}{list(self.shape)})"


def derive(fn: Callable[..., np.ndarray], shape: Iterable[int], *tensors) -> np.ndarray | LazyTensor:
  """`fn(*arrays)` now when every input is a numpy array, else a LazyTensor of `shape` (dtype of the first input)
  that reads its inputs and applies `fn` when it is itself read."""
  if all(isinstance(t, np.ndarray) for t in tensors):
    return fn(*tensors)
  return LazyTensor(shape, tensors[0].dtype, lambda: fn(*(np.asarray(t) for t in tensors)))


def _cast(arr: np.ndarray, dtype) -> np.ndarray:
  """Casts floating arrays (incl. ml_dtypes bf16 / fp8) to `dtype`; integer and bool arrays are kept."""
  if dtype is None or arr.dtype.name not in _FLOAT_NAMES:
    return arr
  return arr.astype(dtype, copy=False)


def _cast_dtype(dtype: np.dtype, to) -> np.dtype:
  return dtype if to is None or dtype.name not in _FLOAT_NAMES else np.dtype(to)


def safetensors_header(path) -> tuple[dict, int]:
  """Returns ({name: {dtype, shape, data_offsets}}, byte offset of the data section) of a safetensors file."""
  path = paths.resolve(path)
  size = path.stat().length
  with path.open("rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise CheckpointReadError(f"{path}: file is truncated ({size} bytes) or not a safetensors file.")
    (n,) = struct.unpack("<Q", raw)
    if n <= 0 or n > _MAX_HEADER or 8 + n > size:
      raise CheckpointReadError(
          f"{path}: corrupt or truncated safetensors file (header length {n}, file size {size} bytes). "
          "Re-download or re-export it.")
    try:
      header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise CheckpointReadError(f"{path}: corrupt safetensors header ({e}). Re-download or re-export it.") from None
  header.pop("__metadata__", None)
  data_size = size - 8 - n
  for name, spec in header.items():
    try:
      begin, end = spec["data_offsets"]
      dtype = spec["dtype"]
      shape = tuple(spec["shape"])
    except (KeyError, TypeError, ValueError):
      raise CheckpointReadError(f"{path}: corrupt safetensors header entry for tensor {name!r}.") from None
    if dtype not in _ST_DTYPES:
      raise CheckpointReadError(f"{path}: tensor {name!r} has unsupported safetensors dtype {dtype!r}.")
    nbytes = int(np.prod(shape, dtype=np.int64)) * _ST_DTYPES[dtype].itemsize
    if end - begin != nbytes or begin < 0:
      raise CheckpointReadError(f"{path}: corrupt safetensors header: tensor {name!r} {dtype}{list(shape)} "
                                f"needs {nbytes} bytes but its offsets span {end - begin}.")
    if end > data_size:
      raise CheckpointReadError(
          f"{path}: file is truncated: tensor {name!r} ends at byte {end} of the data section, which has only "
          f"{data_size} bytes. Re-download or re-export it.")
  return header, 8 + n


def _read_range(f, path: epath.Path, name: str, offset: int, arr: np.ndarray) -> np.ndarray:
  """Fills `arr` with the bytes at `offset` of the open file `f` (readinto where the backend has it)."""
  buf = arr.reshape(-1).view(np.uint8)
  f.seek(offset)
  if hasattr(f, "readinto"):
    got = f.readinto(buf) if buf.size else 0
  else:  # e.g. tf.io.gfile.GFile: read() returns bytes.
    data = f.read(buf.size) if buf.size else b""
    got = len(data)
    buf[:got] = np.frombuffer(data, np.uint8)
  if got != buf.size:
    raise CheckpointReadError(f"{path}: file is truncated while reading tensor {name!r}.")
  return arr


def _check_byteorder():
  if sys.byteorder != "little":
    raise CheckpointReadError("safetensors data is little-endian; big-endian hosts are not supported.")


def open_safetensors(path, dtype=None) -> dict[str, LazyTensor]:
  """The tensors of one safetensors file as LazyTensors (only the header is read now); each read opens the file,
  seeks to the tensor and reads exactly its bytes. `dtype` casts floating tensors when they are read."""
  _check_byteorder()
  path = paths.resolve(path)
  header, start = safetensors_header(path)

  def reader(name: str, spec) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
      arr = np.empty(spec["shape"], _ST_DTYPES[spec["dtype"]])
      with path.open("rb") as f:
        return _cast(_read_range(f, path, name, start + spec["data_offsets"][0], arr), dtype)
    return read

  return {name: LazyTensor(spec["shape"], _cast_dtype(_ST_DTYPES[spec["dtype"]], dtype), reader(name, spec))
          for name, spec in header.items()}


def read_safetensors(path, dtype=None, names: Iterable[str] | None = None, bar=None) -> dict[str, np.ndarray]:
  """Reads one safetensors file -> {name: array}; `dtype` (e.g. np.float32) casts floating tensors."""
  _check_byteorder()
  path = paths.resolve(path)
  header, start = safetensors_header(path)
  wanted = list(header) if names is None else list(names)
  out = {}
  with path.open("rb") as f:
    for name in wanted:
      spec = header[name]
      arr = np.empty(spec["shape"], _ST_DTYPES[spec["dtype"]])
      out[name] = _cast(_read_range(f, path, name, start + spec["data_offsets"][0], arr), dtype)
      if bar is not None:
        bar.update(1)
  return out


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise CheckpointReadError(
        "Reading PyTorch `.bin` checkpoints needs torch, which is not installed. Either run "
        "`pip install 'janus_jax[torch]'`, or convert the .bin files to safetensors first (e.g. on a machine with "
        "torch: `safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors')`).") from None
  return torch


def _torch_to_numpy(t, torch) -> np.ndarray:
  t = t.detach().cpu().contiguous()
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
  for name, np_dtype in (("float8_e4m3fn", ml_dtypes.float8_e4m3fn), ("float8_e5m2", ml_dtypes.float8_e5m2)):
    if getattr(torch, name, None) is not None and t.dtype == getattr(torch, name):
      return t.view(torch.uint8).numpy().view(np_dtype).copy()
  return t.numpy().copy()


def _load_torch_state(path: epath.Path, torch) -> dict:
  """torch.load of one local `.bin` (`weights_only=True`: never executes pickled code) -> {name: torch.Tensor}."""
  try:
    # Zip-format files (torch >= 1.6) are memory-mapped, so only the numpy copies take RAM.
    local = os.fspath(path)
    state = torch.load(local, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(local))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointReadError(
        f"{path}: cannot load PyTorch checkpoint ({type(e).__name__}: {str(e)[:300]}). The file is corrupt or "
        "truncated, or it contains objects other than tensors; re-download it.") from None
  if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise CheckpointReadError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}.")
  return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _np_dtype_of(t, torch) -> np.dtype:
  if t.dtype == torch.bfloat16:
    return np.dtype(ml_dtypes.bfloat16)
  for name, np_dtype in (("float8_e4m3fn", ml_dtypes.float8_e4m3fn), ("float8_e5m2", ml_dtypes.float8_e5m2)):
    if getattr(torch, name, None) is not None and t.dtype == getattr(torch, name):
      return np.dtype(np_dtype)
  return np.dtype(torch.empty((), dtype=t.dtype).numpy().dtype)


def open_torch_bin(path, dtype=None) -> dict[str, LazyTensor]:
  """The tensors of one local PyTorch pickle state dict as LazyTensors (zip files stay memory-mapped until a tensor
  is read; its numpy copy is made then). `dtype` casts floating tensors when they are read."""
  path = paths.resolve(path)
  if paths.is_remote(path):
    raise CheckpointReadError(
        f"{path}: PyTorch `.bin` checkpoints are read from local files only (torch memory-maps them). Copy the "
        "checkpoint directory to a local disk first (e.g. `gcloud storage cp -r SRC DIR`), or convert the .bin files "
        "to safetensors, which are read from remote paths directly.")
  torch = _torch()
  state = _load_torch_state(path, torch)
  return {k: LazyTensor(v.shape, _cast_dtype(_np_dtype_of(v, torch), dtype),
                        lambda v=v: _cast(_torch_to_numpy(v, torch), dtype)) for k, v in state.items()}


def read_torch_bin(path, dtype=None) -> dict[str, np.ndarray]:
  """Reads one local PyTorch pickle state dict (`weights_only=True`, never executes pickled code) -> {name: array}."""
  return {k: np.asarray(v) for k, v in open_torch_bin(path, dtype).items()}


def _read_index(path) -> dict[str, str]:
  path = paths.resolve(path)
  try:
    index = json.loads(path.read_text())
    weight_map = index["weight_map"]
    assert isinstance(weight_map, dict)
  except (json.JSONDecodeError, KeyError, AssertionError, UnicodeDecodeError, TypeError) as e:
    raise CheckpointReadError(f"{path}: corrupt shard index (expected a JSON object with a `weight_map`): "
                              f"{type(e).__name__} {e}") from None
  missing = sorted({s for s in weight_map.values() if not (path.parent / s).is_file()})
  if missing:
    raise CheckpointReadError(f"{path} names shard file(s) that do not exist in {path.parent}: {missing}. "
                              "The download is incomplete; fetch the missing shards.")
  return weight_map


def weight_files(directory) -> tuple[str, list[epath.Path], dict[str, str] | None]:
  """Returns (kind 'safetensors'|'torch', weight file paths, weight_map or None) for a checkpoint directory."""
  directory = paths.resolve(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"Checkpoint directory {str(directory)!r} does not exist (or is not a directory).")
  for name, kind in ((SAFETENSORS, "safetensors"), (SAFETENSORS_INDEX, "safetensors"), (PYTORCH, "torch"),
                     (PYTORCH_INDEX, "torch")):
    p = directory / name
    if not p.is_file():
      continue
    if name.endswith(".index.json"):
      weight_map = _read_index(p)
      shards = sorted(set(weight_map.values()))
      return kind, [directory / s for s in shards], weight_map
    return kind, [p], None
  found = sorted(p.name for p in directory.iterdir())
  raise CheckpointReadError(
      f"No weight files in {directory}. Expected one of {SAFETENSORS}, {SAFETENSORS_INDEX} (+ shards), {PYTORCH} or "
      f"{PYTORCH_INDEX} (+ shards); found {found[:50]}{' ...' if len(found) > 50 else ''}.")


def _open_files(directory, dtype) -> tuple[str, list[tuple[epath.Path, dict[str, LazyTensor]]]]:
  """(kind, [(weight file, its LazyTensors)]) of a checkpoint directory; checks duplicates and the shard index."""
  dtype = None if dtype is None else np.dtype(dtype)
  kind, files, weight_map = weight_files(directory)
  opener = open_safetensors if kind == "safetensors" else open_torch_bin
  opened, origin = [], {}
  for path in files:
    tensors = opener(path, dtype=dtype)
    for k in tensors:
      if k in origin:
        raise CheckpointReadError(f"Tensor {k!r} appears in both {origin[k].name} and {path.name}.")
      origin[k] = path
    opened.append((path, tensors))
  if weight_map is not None:
    lost = sorted(k for k in weight_map if k not in origin)
    if lost:
      raise CheckpointReadError(
          f"The shard index of {directory} lists {len(lost)} tensor(s) that are not in their shard files, e.g. "
          f"{lost[:10]}. A shard is corrupt or from another checkpoint; re-download it.")
  return kind, opened


def open_state_dict(directory, dtype=None) -> dict[str, LazyTensor]:
  """All tensors of a checkpoint directory as LazyTensors, with the checks of `read_state_dict` (duplicate names,
  shard index) done now and no tensor data read yet. `dtype` as in `read_state_dict`."""
  return {k: v for _, tensors in _open_files(directory, dtype)[1] for k, v in tensors.items()}


def read_state_dict(directory, progress: bool = False, dtype=None) -> dict[str, np.ndarray]:
  """Reads all tensors of a checkpoint directory.

  Args:
    directory: an HF-style checkpoint directory (local, or e.g. `gs://` for safetensors).
    progress: show a tqdm bar (over tensors for safetensors, over files for `.bin`).
    dtype: None keeps the stored dtypes (bf16 tensors become `ml_dtypes.bfloat16` arrays); e.g. "float32" casts
      every floating tensor to it. Integer / bool tensors are never cast.
  Returns:
    {torch key: numpy array} in torch layout.
  """
  kind, opened = _open_files(directory, dtype)
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    name = paths.resolve(directory).name
    if kind == "safetensors":
      bar = tqdm(total=sum(len(t) for _, t in opened), desc=f"reading {name}", unit="tensor")
    else:
      bar = tqdm(total=len(opened), desc=f"reading {name}", unit="file")
  out: dict[str, np.ndarray] = {}
  for _, tensors in opened:
    for k, v in tensors.items():
      out[k] = np.asarray(v)
      if bar is not None and kind == "safetensors":
        bar.update(1)
    if bar is not None and kind == "torch":
      bar.update(1)
  if bar is not None:
    bar.close()
  return out


__all__ = ["CheckpointReadError", "LazyTensor", "derive", "open_state_dict", "open_safetensors", "open_torch_bin",
           "read_state_dict", "read_safetensors", "read_torch_bin", "weight_files", "safetensors_header"]
