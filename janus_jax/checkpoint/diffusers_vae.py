"""Loads a diffusers `AutoencoderKL` directory (e.g. stabilityai/sdxl-vae, the VAE JanusFlow uses) into
`janus_jax.models.kl_vae.AutoencoderKL` params.

    cfg, params = load_diffusers_vae("/ckpts/sdxl-vae")      # config.json + diffusion_pytorch_model.safetensors
    images = AutoencoderKL(cfg).apply({"params": params}, z, method=AutoencoderKL.decode)

Weight files, first match wins: `diffusion_pytorch_model[.<variant>].safetensors`, its `.index.json` + shards, then
`diffusion_pytorch_model[.<variant>].bin` (+ index; needs torch). A pipeline root with a `vae/` subfolder is accepted.
Legacy attention names (`query`, `key`, `value`, `proj_attn`, as diffusers < 0.14 saved them) are renamed to
`to_q`, `to_k`, `to_v`, `to_out.0`, and 1x1-conv attention weights (C, C, 1, 1) are taken as Linear (C, C). The
mapping is strict (janus_jax.checkpoint.mapping): one CheckpointMismatchError lists every missing, unexpected and
mis-shaped tensor.
"""
from __future__ import annotations

import json
import re
import warnings
from typing import Any, Mapping

import numpy as np
from etils import epath

from janus_jax import paths
from janus_jax.checkpoint import reader
from janus_jax.checkpoint.config_json import ConfigError
from janus_jax.checkpoint.mapping import CheckpointMismatchError, flatten, state_dict_to_params
from janus_jax.models.configs import KLVAEConfig

CONFIG_FILE = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model"
SUPPORTED_CLASSES = ("AutoencoderKL",)
DOWN_BLOCK = "DownEncoderBlock2D"
UP_BLOCK = "UpDecoderBlock2D"

# diffusers `AutoencoderKL.__init__` defaults (v0.42): a config.json that omits a field means these values.
_DIFFUSERS_DEFAULTS = dict(in_channels=3, out_channels=3, down_block_types=(DOWN_BLOCK,), up_block_types=(UP_BLOCK,),
                           block_out_channels=(64,), layers_per_block=1, act_fn="silu", latent_channels=4,
                           norm_num_groups=32, scaling_factor=0.18215, shift_factor=None, latents_mean=None,
                           latents_std=None, use_quant_conv=True, use_post_quant_conv=True,
                           mid_block_add_attention=True)
_LEGACY_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_ATTN_KEY = re.compile(r"^(.*\.mid_block\.attentions\.\d+)\.(query|key|value|proj_attn|to_q|to_k|to_v|to_out\.0)"
                       r"\.(weight|bias)$")


def vae_config_from_diffusers(config: Mapping[str, Any], *, dtype: str = "float32",
                              param_dtype: str = "float32") -> KLVAEConfig:
  """A diffusers `AutoencoderKL` config dict (config.json) -> KLVAEConfig.

  Missing fields take diffusers' class defaults. Raises ConfigError for another autoencoder class, block types other
  than DownEncoderBlock2D / UpDecoderBlock2D, an activation other than silu, or inconsistent lengths.
  `latents_mean` / `latents_std` (per-channel normalisation applied by some pipelines, not by the VAE) have no
  KLVAEConfig field; they are ignored with a warning.
  """
  cls = config.get("_class_name", "AutoencoderKL")
  if cls not in SUPPORTED_CLASSES:
    raise ConfigError(f"diffusers VAE class {cls!r} is not supported; only {list(SUPPORTED_CLASSES)} (e.g. the "
                      "SDXL / SD VAEs) can be loaded.")
  c = {k: config.get(k, v) for k, v in _DIFFUSERS_DEFAULTS.items()}
  chans = tuple(int(x) for x in c["block_out_channels"])
  for field, want in (("down_block_types", DOWN_BLOCK), ("up_block_types", UP_BLOCK)):
    types = list(c[field])
    bad = sorted({t for t in types if t != want})
    if bad:
      raise ConfigError(f"Unsupported diffusers VAE {field} {bad}: janus_jax.models.kl_vae builds only {want!r} "
                        f"blocks (the SD / SDXL VAE layout); got {types}.")
    if len(types) != len(chans):
      raise ConfigError(f"diffusers VAE config: {field} has {len(types)} entries but block_out_channels has "
                        f"{len(chans)} ({list(chans)}); they must match.")
  if c["act_fn"] != "silu":
    raise ConfigError(f"Unsupported diffusers VAE act_fn {c['act_fn']!r}; only 'silu' is implemented.")
  for k in ("latents_mean", "latents_std"):
    if c[k] is not None:
      warnings.warn(f"diffusers VAE config sets {k}; the VAE itself does not use it and KLVAEConfig has no field for "
                    "it, so it is ignored (apply it yourself if a pipeline expects normalised latents).")
  groups = int(c["norm_num_groups"])
  bad_groups = [x for x in chans if x % groups]
  if bad_groups:
    raise ConfigError(f"diffusers VAE config: norm_num_groups={groups} does not divide block_out_channels "
                      f"{bad_groups}.")
  return KLVAEConfig(in_channels=int(c["in_channels"]), out_channels=int(c["out_channels"]),
                     latent_channels=int(c["latent_channels"]), block_out_channels=chans,
                     layers_per_block=int(c["layers_per_block"]), norm_num_groups=groups,
                     mid_block_attention=bool(c["mid_block_add_attention"]),
                     use_quant_conv=bool(c["use_quant_conv"]), use_post_quant_conv=bool(c["use_post_quant_conv"]),
                     scaling_factor=float(c["scaling_factor"]),
                     shift_factor=float(c["shift_factor"] if c["shift_factor"] is not None else 0.0),
                     dtype=dtype, param_dtype=param_dtype)


def _resolve_dir(path) -> epath.Path:
  path = paths.resolve(path)
  if not path.is_dir():
    raise FileNotFoundError(f"diffusers VAE directory {str(path)!r} does not exist (or is not a directory).")
  if not (path / CONFIG_FILE).is_file() and (path / "vae" / CONFIG_FILE).is_file():
    return path / "vae"  # A pipeline root (e.g. stable-diffusion-xl-base-1.0).
  if not (path / CONFIG_FILE).is_file():
    raise reader.CheckpointReadError(f"{path} has no {CONFIG_FILE}; expected a diffusers AutoencoderKL directory "
                                     f"(config.json + {WEIGHTS_NAME}.safetensors) or a pipeline root with vae/.")
  return path


def _read_weights(directory: epath.Path, variant: str | None) -> dict[str, reader.LazyTensor]:
  """The VAE's tensors, unread (`reader.LazyTensor`s)."""
  stem = WEIGHTS_NAME if variant is None else f"{WEIGHTS_NAME}.{variant}"
  for ext, open_file in (("safetensors", reader.open_safetensors), ("bin", reader.open_torch_bin)):
    single = directory / f"{stem}.{ext}"
    if single.is_file():
      return open_file(single)
    index = directory / f"{stem}.{ext}.index.json"
    if index.is_file():
      weight_map = reader._read_index(index)  # pylint: disable=protected-access
      out: dict[str, reader.LazyTensor] = {}
      for shard in sorted(set(weight_map.values())):
        out.update(open_file(directory / shard))
      lost = sorted(k for k in weight_map if k not in out)
      if lost:
        raise reader.CheckpointReadError(f"{index} lists tensors missing from their shards, e.g. {lost[:10]}.")
      return out
  found = sorted(p.name for p in directory.iterdir())
  raise reader.CheckpointReadError(
      f"No diffusers VAE weights in {directory}: expected {stem}.safetensors (or .bin, or a sharded .index.json); "
      f"found {found[:50]}." + ("" if variant else " For a variant file such as *.fp16.safetensors pass "
                                "variant='fp16'."))


def normalize_state_dict(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Renames legacy attention tensors (query/key/value/proj_attn) to the current diffusers names and squeezes
  1x1-conv attention weights (C, C, 1, 1) to Linear (C, C) (unread `reader.LazyTensor`s stay unread). Raises
  CheckpointMismatchError when a tensor appears under both its legacy and its current name."""
  out: dict[str, np.ndarray] = {}
  origin: dict[str, str] = {}
  clashes = []
  for key, value in state.items():
    new = key
    m = _ATTN_KEY.match(key)
    if m:
      prefix, name, kind = m.groups()
      new = f"{prefix}.{_LEGACY_ATTN.get(name, name)}.{kind}"
      if kind == "weight" and value.ndim == 4 and tuple(value.shape[2:]) == (1, 1):
        value = reader.derive(lambda a: a[:, :, 0, 0], value.shape[:2], value)
    if new in out:
      clashes.append(f"{origin[new]} and {key} both map to {new}")
      continue
    out[new], origin[new] = value, key
  if clashes:
    raise CheckpointMismatchError("The diffusers VAE checkpoint holds attention tensors under both legacy and "
                                  "current names:\n" + "\n".join(f"    {c}" for c in clashes))
  return out


def diffusers_key(path: tuple[str, ...]) -> str:
  """Our param path -> the diffusers state_dict key, e.g. ('encoder', 'down_blocks_0', 'resnets_1', 'conv1',
  'kernel') -> 'encoder.down_blocks.0.resnets.1.conv1.weight'."""
  segs = [re.sub(r"^(.*[a-z])_(\d+)$", r"\1.\2", s) for s in path[:-1]]
  return ".".join(segs + ["weight" if path[-1] in ("kernel", "scale") else path[-1]])


def vae_state_to_params(state: Mapping[str, np.ndarray], cfg: KLVAEConfig, what: str = "diffusers VAE") -> Any:
  """diffusers AutoencoderKL state dict {key: array (torch layout)} -> numpy param tree for `AutoencoderKL(cfg)`."""
  from janus_jax.models.kl_vae import abstract_vae_params  # pylint: disable=import-outside-toplevel
  abstract = abstract_vae_params(cfg)
  state = normalize_state_dict(state)
  try:
    return state_dict_to_params(state, abstract, what=what)
  except CheckpointMismatchError as e:
    missing = sorted(k for k in (diffusers_key(p) for p in flatten(abstract)) if k not in state)
    if not missing:
      raise
    raise CheckpointMismatchError(f"{e}\n  diffusers names of the missing tensors: {missing}") from None


def load_diffusers_vae(path, *, dtype: str = "float32", param_dtype: str = "float32",
                       variant: str | None = None) -> tuple[KLVAEConfig, Any]:
  """Reads a diffusers `AutoencoderKL` directory (local or remote) -> (KLVAEConfig, numpy param tree), one tensor
  at a time.

  Args:
    path: directory with config.json and diffusion_pytorch_model weights (or a pipeline root holding vae/).
    dtype: compute dtype recorded in the config ('float32'; JanusFlow runs SDXL-VAE in 'bfloat16').
    param_dtype: dtype of the returned params.
    variant: weight-file variant, e.g. 'fp16' for diffusion_pytorch_model.fp16.safetensors.
  Raises:
    ConfigError (unsupported architecture), CheckpointReadError / FileNotFoundError (unreadable files),
    CheckpointMismatchError (weights do not match the config).
  """
  directory = _resolve_dir(path)
  try:
    config = json.loads((directory / CONFIG_FILE).read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConfigError(f"{directory / CONFIG_FILE}: not valid JSON ({e}).") from None
  cfg = vae_config_from_diffusers(config, dtype=dtype, param_dtype=param_dtype)
  state = _read_weights(directory, variant)
  return cfg, vae_state_to_params(state, cfg, what=f"diffusers VAE {directory}")


def config_to_diffusers(cfg: KLVAEConfig) -> dict[str, Any]:
  """KLVAEConfig -> diffusers `AutoencoderKL` constructor kwargs (e.g. to build a torch reference)."""
  n = len(cfg.block_out_channels)
  return dict(in_channels=cfg.in_channels, out_channels=cfg.out_channels, down_block_types=[DOWN_BLOCK] * n,
              up_block_types=[UP_BLOCK] * n, block_out_channels=list(cfg.block_out_channels),
              layers_per_block=cfg.layers_per_block, act_fn="silu", latent_channels=cfg.latent_channels,
              norm_num_groups=cfg.norm_num_groups, scaling_factor=cfg.scaling_factor,
              shift_factor=cfg.shift_factor or None, use_quant_conv=cfg.use_quant_conv,
              use_post_quant_conv=cfg.use_post_quant_conv, mid_block_add_attention=cfg.mid_block_attention)


__all__ = ["load_diffusers_vae", "vae_config_from_diffusers", "vae_state_to_params", "normalize_state_dict",
           "diffusers_key", "config_to_diffusers"]
