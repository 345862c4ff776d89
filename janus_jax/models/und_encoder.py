"""The understanding encoders of the Janus model, selected by `model.und_encoder` (one interface, a name registry).

  siglip  (default; Janus / Janus-Pro / JanusFlow) the SigLIP ViT, param module `vision_model`:
          images float[N, S, S, 3] -> float[N, (S / vision.patch_size)^2, vision.width]
  vq      (ablation of Janus's decoupling claim; the modes whose `und_encoders` list it: ar_vq) the generation tokenizer itself,
          `gen_vision_model` (the one VQ; no SigLIP params are built): its quantized latents z_q with the
          straight-through estimator, so the understanding loss reaches the VQ encoder when that trains
          (stage configs freeze `gen_vision_model/.*`): images float[N, S, S, 3] -> z_q float[N, S/f, S/f, C]
          -> float[N, (S / f)^2, C] in raster order (f = vq.downsample, C = vq.codebook_dim)
Either way `aligner` (input_dim = `feature_dim`) maps the features to the LLM width; S is `vision.image_size`.

`JanusConfig` asks `get(cfg.und_encoder)` for `num_tokens` (its `num_image_tokens`), `feature_dim` (the aligner's
input_dim when that is 0) and `problems` (raised when the config is built); `JanusModel` asks it for its
`vision_model` module and its `features`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax

if TYPE_CHECKING:
  import flax.linen as nn
  from janus_jax.models.configs import JanusConfig


class UndEncoder:
  """One understanding encoder; stateless (its params, if any, live in the module `vision_model` returns)."""
  name = ""
  owns: tuple[str, ...] = ()  # top-level param modules only this encoder builds (absent with the others)
  feature_name = ""  # the config field `feature_dim` reads, in messages

  def num_tokens(self, cfg: "JanusConfig") -> int:
    """Features per image (= understanding placeholders per image = generated tokens per image)."""
    raise NotImplementedError

  def feature_dim(self, cfg: "JanusConfig") -> int:
    """Width of each feature (the aligner's input_dim)."""
    raise NotImplementedError

  def problems(self, cfg: "JanusConfig") -> list[str]:
    """What in `cfg` cannot work with this encoder, each naming the field and the fix ([] when fine)."""
    del cfg
    return []

  def vision_model(self, cfg: "JanusConfig") -> "nn.Module | None":
    """The module JanusModel builds as `vision_model` (None: this encoder adds no params)."""
    raise NotImplementedError

  def features(self, model: "nn.Module", pixel_values: jax.Array) -> jax.Array:
    """Inside JanusModel: images float[N, S, S, 3] in [-1, 1] -> float[N, num_tokens, feature_dim]."""
    raise NotImplementedError


class Siglip(UndEncoder):
  name = "siglip"
  owns = ("vision_model",)
  feature_name = "vision width"

  def num_tokens(self, cfg):
    return cfg.vision.num_patches

  def feature_dim(self, cfg):
    return cfg.vision.width

  def vision_model(self, cfg):
    from janus_jax.models.siglip import SiglipVisionTower  # pylint: disable=import-outside-toplevel  # configs: light
    return SiglipVisionTower(cfg.vision)

  def features(self, model, pixel_values):
    return model.vision_model(pixel_values)


class VQ(UndEncoder):
  name = "vq"
  feature_name = "vq codebook_dim"

  def num_tokens(self, cfg):
    return (cfg.vision.image_size // cfg.vq.downsample) ** 2

  def feature_dim(self, cfg):
    return cfg.vq.codebook_dim

  def problems(self, cfg):
    out = []
    size, f = cfg.vision.image_size, cfg.vq.downsample
    if size < f or size % f:
      fit = max(f, size // f * f)
      out.append(f"model.und_encoder='vq' encodes the understanding images with the VQ, which needs their size "
                 f"model.vision.image_size={size} to be a multiple of the VQ downsample factor {f} "
                 f"(model.vq.channel_mult={tuple(cfg.vq.channel_mult)}). Fix: --config.model.vision.image_size="
                 f"{fit} (the size the VQ encodes, {fit // f}x{fit // f} codes), or another model.vq.channel_mult.")
    if cfg.aligner.input_dim != cfg.vq.codebook_dim:
      out.append(f"model.aligner.input_dim={cfg.aligner.input_dim} but model.und_encoder='vq' feeds the aligner the "
                 f"VQ's quantized latents of width model.vq.codebook_dim={cfg.vq.codebook_dim}. Fix: "
                 f"--config.model.aligner.input_dim={cfg.vq.codebook_dim} (or 0: the understanding encoder's width).")
    return out

  def vision_model(self, cfg):
    return None

  def features(self, model, pixel_values):
    size = model.cfg.vision.image_size
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (size, size, 3):
      raise ValueError(f"und_encoder 'vq' expects NHWC images float[N, {size}, {size}, 3] (model.vision.image_size) "
                       f"in [-1, 1], got shape {tuple(pixel_values.shape)}.")
    z_q, _, _ = model.gen_vision_model.encode(pixel_values)  # straight-through: d z_q / d z = identity
    return z_q.reshape(z_q.shape[0], -1, z_q.shape[-1])


ENCODERS: dict[str, UndEncoder] = {e.name: e for e in (Siglip(), VQ())}
NAMES = tuple(ENCODERS)


def get(name: str) -> UndEncoder:
  """The encoder registered as `name`; ValueError naming `model.und_encoder` and the valid names otherwise."""
  if name not in ENCODERS:
    raise ValueError(f"Unknown model.und_encoder {name!r}; valid: {list(NAMES)} (siglip: the SigLIP ViT, Janus; vq: "
                     "the VQ tokenizer's quantized latents, one shared encoder). Fix: --config.model.und_encoder=siglip.")
  return ENCODERS[name]


def absent_modules(cfg: "JanusConfig") -> tuple[str, ...]:
  """Top-level param modules that other encoders build and `cfg`'s does not (('vision_model',) for 'vq'): patterns
  naming them (e.g. the stage lists' 'vision_model/.*') may match nothing (`janus_jax.train.optim`)."""
  mine = set(get(cfg.und_encoder).owns)
  return tuple(sorted({m for e in cfg.mode.und_encoders for m in get(e).owns} - mine))


__all__ = ["UndEncoder", "ENCODERS", "NAMES", "get", "absent_modules"]
