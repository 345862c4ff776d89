"""janus_jax's own inference checkpoint directory (written by `janus-jax convert`, read without torch).

Layout:
  <dir>/janus_config.json   {"format": "janus_jax", "format_version": 1, "model": JanusConfig.to_dict(), "info": {...}}
  <dir>/params/             orbax `StandardCheckpointer` checkpoint of the unboxed 'params' nested dict
  <dir>/tokenizer/          tokenizer / processor files copied from the source checkpoint (when present)
<dir> may be local or remote (`gs://...`, any `etils.epath` path).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from etils import epath

from janus_jax import paths
from janus_jax.distributed import barrier
from janus_jax.models.configs import JanusConfig

FORMAT = "janus_jax"
FORMAT_VERSION = 1
CONFIG_NAME = "janus_config.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "processor_config.json",
                   "preprocessor_config.json", "*.model")
# Saving memory: tensorstore keeps a data file's encoded bytes until the file reaches this size (its default, 2 GiB,
# holds a small model a second time) and encodes a param per chunk, so small files and chunks bound what a save
# needs beyond the params to ~100 MB whatever the model size (bench/convert_rss.py). Restore reads any chunking.
_OCDBT_DATA_FILE_BYTES = 16 * 2**20
_CHUNK_BYTES = 8 * 2**20


class NotAJanusCheckpointError(FileNotFoundError):
  """The directory is not a janus_jax checkpoint (e.g. a raw HF checkpoint that was not converted)."""


def with_param_dtype(cfg: JanusConfig, dtype: str) -> JanusConfig:
  """Returns cfg with every component's param_dtype set to `dtype`."""
  return cfg.with_dtypes(param_dtype=dtype)


def copy_tokenizer_files(src_dir, dst_dir) -> list[str]:
  """Copies the tokenizer / processor files present in `src_dir` into `dst_dir`; returns the copied names."""
  src_dir, dst_dir = paths.resolve(src_dir), paths.resolve(dst_dir)
  names = []
  for pattern in TOKENIZER_FILES:
    for p in sorted(src_dir.glob(pattern), key=lambda p: p.name):
      if p.is_file() and p.name not in names:
        names.append(p.name)
  if names:
    dst_dir.mkdir(parents=True, exist_ok=True)
    for n in names:
      (src_dir / n).copy(dst_dir / n, overwrite=True)
  return names


def is_checkpoint(directory) -> bool:
  d = paths.resolve(directory)
  return (d / CONFIG_NAME).is_file() and (d / PARAMS_DIR).is_dir()


def _save_params(path: epath.Path, params: Mapping[str, Any]) -> None:
  """Writes `params` as the orbax checkpoint at `path` (what `StandardCheckpointer` writes and reads), without
  orbax's defensive copy of every numpy leaf (the save is synchronous: nothing changes them meanwhile) and in small
  OCDBT data files and chunks, so saving needs little memory beyond the params themselves."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  th = ocp.type_handlers
  registry = th.create_type_handler_registry(*[
      (t, th.NumpyHandler(deepcopy_host_arrays=False) if t is np.ndarray else th.get_type_handler(t))
      for t in th.supported_types()])
  params = dict(params)
  save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=_CHUNK_BYTES), params)
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(type_handler_registry=registry)) as ckptr:
    ckptr.save(os.fspath(path), args=ocp.args.PyTreeSave(params, save_args=save_args,
                                                          ocdbt_target_data_file_size=_OCDBT_DATA_FILE_BYTES))


def save_checkpoint(directory, params: Mapping[str, Any], cfg: JanusConfig, tokenizer_dir=None,
                    extra_info: Mapping[str, Any] | None = None, overwrite: bool = False) -> epath.Path:
  """Writes params (unboxed nested dict of numpy / jax arrays), the config and tokenizer files to `directory`.

  Refuses to overwrite an existing janus_jax checkpoint unless `overwrite=True` (then only our three entries are
  replaced). The config is written last, through a temporary file, so a checkpoint that has it is complete.
  Returns the absolute checkpoint path (an epath.Path; `gs://...` stays remote).
  """
  directory = paths.resolve(directory)
  primary = jax.process_index() == 0  # Several processes: all save their shards, process 0 writes the rest.
  ours = [directory / CONFIG_NAME, directory / PARAMS_DIR, directory / TOKENIZER_DIR]
  if any(p.exists() for p in ours):
    if not overwrite:
      raise FileExistsError(f"{directory} already holds a janus_jax checkpoint (or part of one). Choose another "
                            "output directory or pass overwrite=True (--overwrite).")
    barrier("janus_jax_save_checkpoint_checked")  # every process has looked before process 0 removes anything
    for p in ours if primary else []:
      if p.is_dir():
        p.rmtree()
      elif p.exists():
        p.unlink()
  if primary:
    directory.mkdir(parents=True, exist_ok=True)
  barrier("janus_jax_save_checkpoint_cleared")
  _save_params(directory / PARAMS_DIR, params)
  if primary:
    tokenizer_files = copy_tokenizer_files(tokenizer_dir, directory / TOKENIZER_DIR) if tokenizer_dir else []
    meta = dict(format=FORMAT, format_version=FORMAT_VERSION, model=cfg.to_dict(),
                info=dict(extra_info or {}, tokenizer_files=tokenizer_files))
    tmp = directory / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    tmp.replace(directory / CONFIG_NAME)  # Written last: a checkpoint without it is incomplete.
  barrier("janus_jax_save_checkpoint_done")
  return directory


def _read_meta(directory) -> dict[str, Any]:
  d = paths.resolve(directory)
  if not d.is_dir():
    raise FileNotFoundError(f"Checkpoint directory {str(d)!r} does not exist.")
  if not is_checkpoint(d):
    hint = ""
    if (d / "config.json").is_file():
      hint = (" It looks like a PyTorch / transformers checkpoint: convert it first with "
              f"`janus-jax convert {d} <output_dir>`, then pass <output_dir>.")
    raise NotAJanusCheckpointError(f"{d} is not a janus_jax checkpoint (expected {CONFIG_NAME} and {PARAMS_DIR}/)."
                                   + hint)
  meta = json.loads((d / CONFIG_NAME).read_text())
  if meta.get("format") != FORMAT:
    raise NotAJanusCheckpointError(f"{d / CONFIG_NAME} is not a janus_jax config (format={meta.get('format')!r}).")
  if int(meta.get("format_version", 0)) > FORMAT_VERSION:
    raise ValueError(f"{d} was written by a newer janus_jax (format_version {meta['format_version']} > "
                     f"{FORMAT_VERSION}); upgrade janus_jax.")
  return meta


def load_config(directory) -> JanusConfig:
  """The JanusConfig stored in a janus_jax checkpoint."""
  return JanusConfig.from_dict(_read_meta(directory)["model"])


def load_info(directory) -> dict[str, Any]:
  """The `info` dict stored with a checkpoint (source layout, token ids, torch_dtype, tokenizer files, ...)."""
  return dict(_read_meta(directory).get("info") or {})


def tokenizer_path(directory) -> epath.Path | None:
  """`<dir>/tokenizer` when the checkpoint carries tokenizer files, else None."""
  p = paths.resolve(directory) / TOKENIZER_DIR
  return p if p.is_dir() and any(p.iterdir()) else None


def _stored_tree(ckptr, path: epath.Path):
  meta = ckptr.metadata(path)
  meta = getattr(meta, "item_metadata", meta)
  return getattr(meta, "tree", meta)


def param_shardings(cfg: JanusConfig, mesh, rules=None, keys=None) -> dict[str, Any]:
  """NamedShardings of `cfg`'s params on `mesh` by their logical axis names and `rules` (default: the project's
  table); `keys` keeps only those top-level subtrees (a checkpoint may lack training-only ones, e.g. REPA)."""
  from janus_jax import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  from janus_jax.models.janus import abstract_params  # pylint: disable=import-outside-toplevel
  out = sharding_lib.logical_to_sharding(abstract_params(cfg, boxed=True), mesh,
                                         sharding_lib.DEFAULT_RULES if rules is None else rules)
  return out if keys is None else {k: v for k, v in out.items() if k in keys}


def load_checkpoint(directory, dtype=None, sharding=None, mesh=None, rules=None
                    ) -> tuple[dict[str, Any], JanusConfig]:
  """Restores (params, cfg) from a janus_jax checkpoint; needs no torch.

  Args:
    directory: a directory written by `save_checkpoint` / `janus-jax convert` (local or remote).
    dtype: None keeps the stored dtypes; e.g. "bfloat16" casts every floating param while restoring (the returned
      cfg then has that param_dtype).
    sharding: None puts every param on the first local device; a `jax.sharding.Sharding` is used for every param;
      or a pytree of shardings matching the params (e.g. from the model's logical-axis rules).
    mesh, rules: instead of `sharding`: every param is restored straight onto its sharding on `mesh` by its
      logical axis names (`param_shardings`), so no device ever holds the whole model.
  Returns:
    (params nested dict of jax.Array, JanusConfig).
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  meta = _read_meta(directory)
  cfg = JanusConfig.from_dict(meta["model"])
  path = paths.resolve(directory) / PARAMS_DIR
  ckptr = ocp.StandardCheckpointer()
  stored = _stored_tree(ckptr, path)
  want = None if dtype is None else np.dtype(dtype)
  if mesh is not None:
    if sharding is not None:
      raise ValueError("Pass `sharding` or `mesh`, not both.")
    sharding = param_shardings(cfg, mesh, rules, keys=set(stored))

  def leaf_dtype(m):
    d = np.dtype(m.dtype)
    is_float = d.kind == "f" or d.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")
    return want if want is not None and is_float else d

  is_meta = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  if isinstance(sharding, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: sharding, stored, is_leaf=is_meta)
  else:
    shardings = sharding
    if jax.tree.structure(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)) != \
        jax.tree.structure(stored, is_leaf=is_meta):
      raise ValueError("`sharding` must be one jax.sharding.Sharding or a pytree with the same structure as the "
                       "checkpoint params.")
  target = jax.tree.map(lambda m, s: jax.ShapeDtypeStruct(tuple(m.shape), leaf_dtype(m), sharding=s), stored,
                        shardings, is_leaf=is_meta)
  params = ckptr.restore(path, target)
  ckptr.close()
  if want is not None:
    cfg = with_param_dtype(cfg, want.name)
  return params, cfg


__all__ = ["save_checkpoint", "load_checkpoint", "param_shardings", "load_config", "load_info", "tokenizer_path", "is_checkpoint",
           "copy_tokenizer_files", "with_param_dtype", "NotAJanusCheckpointError", "CONFIG_NAME", "PARAMS_DIR",
           "TOKENIZER_DIR"]
