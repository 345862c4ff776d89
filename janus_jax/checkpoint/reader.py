"""Reads every weight tensor of a local PyTorch / transformers checkpoint directory into numpy.

Supported layouts (first match wins, in this order, as in transformers):
  * `model.safetensors`
  * `model.safetensors.index.json` + the shards it names
  * `pytorch_model.bin` (PyTorch pickle; needs the optional `torch` extra)
  * `pytorch_model.bin.index.json` + the shards it names

Safetensors files are parsed directly (8-byte header length, JSON header, raw little-endian data), so bfloat16 and
float8 tensors load as `ml_dtypes` arrays without torch. torch is imported lazily and only for `.bin` files.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import zipfile
from pathlib import Path
from typing import Iterable

import ml_dtypes
import numpy as np

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


class CheckpointReadError(ValueError):
  """A checkpoint directory or weight file cannot be read; the message names the file and the fix."""


def _cast(arr: np.ndarray, dtype) -> np.ndarray:
  """Casts floating arrays (incl. ml_dtypes bf16 / fp8) to `dtype`; integer and bool arrays are kept."""
  is_float = arr.dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float16", "float32", "float64")
  if dtype is None or not is_float:
    return arr
  return arr.astype(dtype, copy=False)


def safetensors_header(path: Path) -> tuple[dict, int]:
  """Returns ({name: {dtype, shape, data_offsets}}, byte offset of the data section) of a safetensors file."""
  size = path.stat().st_size
  with open(path, "rb") as f:
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


def read_safetensors(path, dtype=None, names: Iterable[str] | None = None, bar=None) -> dict[str, np.ndarray]:
  """Reads one safetensors file -> {name: array}; `dtype` (e.g. np.float32) casts floating tensors."""
  path = Path(path)
  if sys.byteorder != "little":
    raise CheckpointReadError("safetensors data is little-endian; big-endian hosts are not supported.")
  header, start = safetensors_header(path)
  wanted = list(header) if names is None else list(names)
  out = {}
  with open(path, "rb") as f:
    for name in wanted:
      spec = header[name]
      np_dtype = _ST_DTYPES[spec["dtype"]]
      begin, end = spec["data_offsets"]
      f.seek(start + begin)
      arr = np.empty(spec["shape"], np_dtype)
      if end > begin and f.readinto(arr.reshape(-1).view(np.uint8)) != end - begin:
        raise CheckpointReadError(f"{path}: file is truncated while reading tensor {name!r}.")
      out[name] = _cast(arr, dtype)
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


def read_torch_bin(path, dtype=None) -> dict[str, np.ndarray]:
  """Reads one PyTorch pickle state dict (`weights_only=True`, never executes pickled code) -> {name: array}."""
  path = Path(path)
  torch = _torch()
  try:
    # Zip-format files (torch >= 1.6) are memory-mapped, so only the numpy copies take RAM.
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointReadError(
        f"{path}: cannot load PyTorch checkpoint ({type(e).__name__}: {str(e)[:300]}). The file is corrupt or "
        "truncated, or it contains objects other than tensors; re-download it.") from None
  if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise CheckpointReadError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}.")
  out = {}
  for k, v in state.items():
    if isinstance(v, torch.Tensor):
      out[k] = _cast(_torch_to_numpy(v, torch), dtype)
  return out


def _read_index(path: Path) -> dict[str, str]:
  try:
    with open(path) as f:
      index = json.load(f)
    weight_map = index["weight_map"]
    assert isinstance(weight_map, dict)
  except (json.JSONDecodeError, KeyError, AssertionError, UnicodeDecodeError) as e:
    raise CheckpointReadError(f"{path}: corrupt shard index (expected a JSON object with a `weight_map`): "
                              f"{type(e).__name__} {e}") from None
  missing = sorted({s for s in weight_map.values() if not (path.parent / s).is_file()})
  if missing:
    raise CheckpointReadError(f"{path} names shard file(s) that do not exist in {path.parent}: {missing}. "
                              "The download is incomplete; fetch the missing shards.")
  return weight_map


def weight_files(directory) -> tuple[str, list[Path], dict[str, str] | None]:
  """Returns (kind 'safetensors'|'torch', weight file paths, weight_map or None) for a checkpoint directory."""
  directory = Path(directory)
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
  found = sorted(os.listdir(directory))
  raise CheckpointReadError(
      f"No weight files in {directory}. Expected one of {SAFETENSORS}, {SAFETENSORS_INDEX} (+ shards), {PYTORCH} or "
      f"{PYTORCH_INDEX} (+ shards); found {found[:50]}{' ...' if len(found) > 50 else ''}.")


def read_state_dict(directory, progress: bool = False, dtype=None) -> dict[str, np.ndarray]:
  """Reads all tensors of a checkpoint directory.

  Args:
    directory: a local HF-style checkpoint directory.
    progress: show a tqdm bar (over tensors for safetensors, over files for `.bin`).
    dtype: None keeps the stored dtypes (bf16 tensors become `ml_dtypes.bfloat16` arrays); e.g. "float32" casts
      every floating tensor to it. Integer / bool tensors are never cast.
  Returns:
    {torch key: numpy array} in torch layout.
  """
  dtype = None if dtype is None else np.dtype(dtype)
  kind, files, weight_map = weight_files(directory)
  out: dict[str, np.ndarray] = {}
  origin: dict[str, Path] = {}

  def add(path, tensors):
    for k, v in tensors.items():
      if k in out:
        raise CheckpointReadError(f"Tensor {k!r} appears in both {origin[k].name} and {path.name}.")
      out[k] = v
      origin[k] = path

  bar = None
  if kind == "safetensors":
    headers = [safetensors_header(p)[0] for p in files]
    if progress:
      from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
      bar = tqdm(total=sum(len(h) for h in headers), desc=f"reading {Path(directory).name}", unit="tensor")
    for p in files:
      add(p, read_safetensors(p, dtype=dtype, bar=bar))
  else:
    it = files
    if progress:
      from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
      bar = it = tqdm(files, desc=f"reading {Path(directory).name}", unit="file")
    for p in it:
      add(p, read_torch_bin(p, dtype=dtype))
  if bar is not None:
    bar.close()
  if weight_map is not None:
    lost = sorted(k for k in weight_map if k not in out)
    if lost:
      raise CheckpointReadError(
          f"The shard index of {directory} lists {len(lost)} tensor(s) that are not in their shard files, e.g. "
          f"{lost[:10]}. A shard is corrupt or from another checkpoint; re-download it.")
  return out


__all__ = ["CheckpointReadError", "read_state_dict", "read_safetensors", "read_torch_bin", "weight_files",
           "safetensors_header"]
