"""The original JanusFlow checkpoint layout (DeepSeek `janus.janusflow.models.MultiModalityCausalLM`).

config.json (model_type `multi_modality`, like Janus, but other sections), each `{cls, params}` except the LLM:
  * `vision_und_enc_config`  CLIPVisionTower (SigLIP-L/16-384), same params as Janus' `vision_config`.
  * `vision_gen_enc_config`  ShallowUViTEncoder(input_channels, kernel_size, stride, padding, block_out_channels,
                             layers_in_middle, hidden_size, norm_eps, use_bias, dropout, use_mid_block, ...).
  * `vision_gen_dec_config`  ShallowUViTDecoder(in_channels, out_channels, block_out_channels, upsamples,
                             layers_in_middle, hidden_size, norm_eps, use_bias, dropout, use_mid_block, ...).
  * `language_config`        a transformers LlamaConfig dict (missing fields: LlamaConfig defaults).
The official constructors take `**kwargs` and drop what they do not know: the shipped encoder params carry the typo
"elementwize_affine" and `num_extra_tensors`, both ignored here too (`elementwise_affine` itself has no effect in
the official modules: their RMSNorm always has a weight). Missing UViT fields take the official constructor
defaults, which are NOT the shipped values (e.g. stride 4, kernel 7, upsamples 2): a config that relies on them
is rejected below rather than built wrongly. The aligner widths are hard-coded in the official model (Linear
1024 -> 2048, 768 -> 2048, RMSNorm + Linear 2048 -> 768); here they follow the encoder / UViT / LLM widths, which
coincide for the release and let tiny test models use the same layout (plus the `janus_jax_vit` extension of
`vision_und_enc_config`, as for Janus).

State dict prefixes (janus_models.md 1.6 / 7): `vision_und_enc_model.vision_tower.*` (its `attn_pool.*` is built
but never run: ignored), `vision_und_enc_aligner.{weight,bias}`, `beg_of_und_embed` [1, D],
`vision_gen_enc_model.{time_embed,in_conv,mid_block}.*`, `vision_gen_enc_aligner.*`,
`vision_gen_dec_model.{input_norm,mid_block,out_convs}.*`, `vision_gen_dec_aligner_norm.weight`,
`vision_gen_dec_aligner.*`, `language_model.{model.*,lm_head.weight}`. Not in the checkpoint: the SDXL-VAE (a
separate diffusers directory, `janus-jax convert --vae`) and the training-only REPA head.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Mapping

from janus_jax.checkpoint import config_json as cj
from janus_jax.models.configs import AlignerConfig, JanusConfig, RepaConfig, UViTConfig

LAYOUT = "janusflow"
FLOW_SECTIONS = ("vision_und_enc_config", "vision_gen_enc_config", "vision_gen_dec_config")
JANUS_SECTIONS = ("vision_config", "aligner_config", "gen_vision_config", "gen_aligner_config", "gen_head_config")

# Tensors the JanusFlow checkpoint holds that no janus_jax module uses (the SigLIP attention-pool head).
IGNORED_PREFIXES = ("vision_und_enc_model.vision_tower.attn_pool.",)

# Official `ShallowUViTEncoder.__init__` / `ShallowUViTDecoder.__init__` keyword defaults (uvit.py).
_ENC_DEFAULTS = dict(input_channels=3, stride=4, kernel_size=7, padding=None, block_out_channels=[768],
                     layers_in_middle=2, hidden_size=2048, use_bias=True, norm_eps=1e-6, dropout=0.0,
                     use_mid_block=True)
_DEC_DEFAULTS = dict(in_channels=768, out_channels=3, block_out_channels=[768], upsamples=2, layers_in_middle=2,
                     hidden_size=2048, norm_eps=1e-6, use_bias=True, dropout=0.0, use_mid_block=True)
# Accepted and ignored, as by the official `**kwargs` / unused constructor arguments.
_IGNORED_UVIT_KEYS = ("elementwize_affine", "elementwise_affine", "num_extra_tensors")
# The decoder's Unpatchify hard-codes patch_size=2 in the official code.
_PATCH = 2
# REPA reads LLM block 6 of 24 in the paper; the head is training-only and not in the checkpoint.
_REPA_LAYER = 6


def is_janusflow(raw: Mapping[str, Any]) -> bool:
  """True for a parsed config.json in the JanusFlow layout (any of its three vision sections present)."""
  return any(k in raw for k in FLOW_SECTIONS)


def _err(msg: str) -> cj.ConfigError:
  return cj.ConfigError(f"JanusFlow config.json: {msg}")


def _channels(value, where: str) -> int:
  chans = [int(c) for c in (value if isinstance(value, (list, tuple)) else [value])]
  if not chans or len(set(chans)) != 1:
    raise _err(f"{where}.block_out_channels={value!r}: the JanusFlow UViT has one width (the official modules "
               "use block_out_channels[0] and [-1] interchangeably), e.g. [768].")
  return chans[0]


def _uvit_params(raw: Mapping[str, Any], name: str, cls_name: str, defaults, used):
  cls, params = cj._section(raw, name)  # pylint: disable=protected-access
  if cls_name not in cls:
    raise _err(f"{name}.cls={cls!r} is not supported (expected {cls_name!r}).")
  known = set(defaults) | set(_IGNORED_UVIT_KEYS)
  unknown = sorted(set(params) - known)
  if unknown:
    warnings.warn(f"JanusFlow config.json: {name}.params has key(s) {unknown} that the official {cls_name} "
                  "ignores; ignoring them too.")
  f = cj._Fields(params, defaults, f"{name}.params", used)  # pylint: disable=protected-access
  if not f("use_mid_block"):
    raise _err(f"{name}.params.use_mid_block=false is not supported (JanusFlow uses the mid block).")
  if float(f("dropout")):
    warnings.warn(f"JanusFlow config.json: {name}.params.dropout={f.d['dropout']} is a training setting that "
                  "janus_jax's UViT does not implement; inference is unaffected.")
  return f


def uvit_config(raw: Mapping[str, Any], used: list[str]) -> UViTConfig:
  """`vision_gen_enc_config` + `vision_gen_dec_config` -> UViTConfig (both must describe one UViT)."""
  enc = _uvit_params(raw, "vision_gen_enc_config", "ShallowUViTEncoder", _ENC_DEFAULTS, used)
  dec = _uvit_params(raw, "vision_gen_dec_config", "ShallowUViTDecoder", _DEC_DEFAULTS, used)
  w = "vision_gen_enc_config.params"
  kernel, stride = int(enc("kernel_size")), int(enc("stride"))
  padding = enc("padding")
  padding = math.ceil(kernel - stride) if padding is None else int(padding)
  if (kernel, stride, padding) != (_PATCH, _PATCH, 0):
    raise _err(f"{w}: kernel_size={kernel}, stride={stride}, padding={padding} is not a {_PATCH}x{_PATCH} "
               f"patchify (kernel_size = stride = {_PATCH}, padding 0), which the official decoder's Unpatchify "
               "(patch_size 2) requires.")
  channels = _channels(enc("block_out_channels"), w)
  latent = int(enc("input_channels"))
  checks = [("in_channels", int(dec("in_channels")), "encoder width", channels),
            ("block_out_channels", _channels(dec("block_out_channels"), "vision_gen_dec_config.params"),
             "encoder width", channels),
            ("out_channels", int(dec("out_channels")), "encoder input_channels", latent),
            ("upsamples", int(dec("upsamples")), "the shipped value", 1),
            ("layers_in_middle", int(dec("layers_in_middle")), "encoder layers_in_middle",
             int(enc("layers_in_middle"))),
            ("hidden_size", int(dec("hidden_size")), "encoder hidden_size", int(enc("hidden_size"))),
            ("norm_eps", float(dec("norm_eps")), "encoder norm_eps", float(enc("norm_eps"))),
            ("use_bias", bool(dec("use_bias")), "encoder use_bias", bool(enc("use_bias")))]
  bad = [f"vision_gen_dec_config.params.{k}={a!r} != {b} {c!r}" for k, a, b, c in checks if a != c]
  if bad:
    raise _err("encoder and decoder do not describe one ShallowUViT: " + "; ".join(bad) + ".")
  return UViTConfig(latent_channels=latent, patch_size=_PATCH, channels=channels,
                    layers_in_middle=int(enc("layers_in_middle")), hidden_size=int(enc("hidden_size")),
                    norm_eps=float(enc("norm_eps")), use_bias=bool(enc("use_bias")))


def parse(raw: Mapping[str, Any], used: list[str]) -> JanusConfig:
  """A JanusFlow config.json dict -> JanusConfig(generation_mode='flow'); fields filled from defaults are appended
  to `used`. `vae` is the SDXL-VAE default (the VAE is not described by this file; `convert --vae` replaces it)."""
  mixed = [k for k in JANUS_SECTIONS if k in raw]
  if mixed:
    raise _err(f"it mixes JanusFlow sections {[k for k in FLOW_SECTIONS if k in raw]} with Janus / Janus-Pro "
               f"sections {mixed}; a checkpoint config has one or the other.")
  missing = [k for k in FLOW_SECTIONS + ("language_config",) if k not in raw]
  if missing:
    raise _err(f"section(s) {missing} are missing (a JanusFlow config has {list(FLOW_SECTIONS)} and "
               "language_config).")
  llm = cj._llama(raw.get("language_config"), "language_config", used)  # pylint: disable=protected-access
  try:
    vision = cj._clip_tower(raw, "vision_und_enc_config", used)  # pylint: disable=protected-access
  except cj.ConfigError as e:
    raise _err(str(e)) from None
  uvit = uvit_config(raw, used)
  aligner = AlignerConfig(kind="linear", input_dim=vision.width, output_dim=llm.hidden_size, depth=1)
  repa = RepaConfig(layer=min(_REPA_LAYER, llm.num_layers), hidden_dim=llm.hidden_size, output_dim=vision.width)
  return JanusConfig(llm=llm, vision=vision, aligner=aligner, generation_mode="flow", uvit=uvit, repa=repa)


def check_consistency(cfg: JanusConfig) -> list[str]:
  """Width mismatches of a flow config (encoder -> aligner -> LLM -> UViT), as messages (empty when fine)."""
  d = cfg.llm.hidden_size
  checks = [("aligner input_dim", cfg.aligner.input_dim, "vision width", cfg.vision.width),
            ("aligner output_dim", cfg.aligner.output_dim, "LLM hidden_size", d),
            ("UViT hidden_size", cfg.uvit.hidden_size, "LLM hidden_size", d)]
  bad = [f"{a}={x} != {b}={y}" for a, x, b, y in checks if x != y]
  if cfg.uvit.patch_size != _PATCH:
    bad.append(f"UViT patch_size={cfg.uvit.patch_size} != {_PATCH} (hard-coded in the official decoder)")
  return bad


def config_dict(cfg: JanusConfig, language: dict[str, Any], vision: dict[str, Any],
                torch_dtype: str = "float32") -> dict[str, Any]:
  """JanusConfig (flow) -> JanusFlow config.json dict, given the shared `language_config` / CLIPVisionTower
  sections (built by config_json). The VAE and REPA head are not part of this file."""
  u = cfg.uvit
  if u.patch_size != _PATCH:
    raise cj.ConfigError(f"UViT patch_size={u.patch_size} has no JanusFlow config layout (the official decoder "
                         f"hard-codes {_PATCH}).")
  common = dict(block_out_channels=[u.channels], layers_in_middle=u.layers_in_middle, hidden_size=u.hidden_size,
                norm_eps=u.norm_eps, use_bias=u.use_bias, dropout=0.0, use_mid_block=True)
  enc = dict(input_channels=u.latent_channels, kernel_size=u.patch_size, stride=u.patch_size, padding=0, **common)
  dec = dict(in_channels=u.channels, out_channels=u.latent_channels, upsamples=1, **common)
  und = dict(vision, model_type="vision_und_enc")
  return dict(architectures=["MultiModalityCausalLM"], model_type="multi_modality", torch_dtype=torch_dtype,
              language_config=language, vision_und_enc_config=und,
              vision_gen_enc_config=dict(cls="ShallowUViTEncoder", model_type="vision_gen_enc", params=enc),
              vision_gen_dec_config=dict(cls="ShallowUViTDecoder", model_type="vision_gen_dec", params=dec))


def checkpoint_target(abstract: Mapping[str, Any]) -> dict[str, Any]:
  """The part of a JanusFlowModel param tree that the JanusFlow checkpoint holds (without the flow mode's
  `not_in_checkpoint` modules)."""
  from janus_jax import modes  # pylint: disable=import-outside-toplevel
  return {k: v for k, v in abstract.items() if k not in modes.get("flow").not_in_checkpoint}


def with_vae(cfg: JanusConfig, vae_cfg) -> JanusConfig:
  """cfg with the imported VAE's config; raises ConfigError when its latent channels differ from the UViT's."""
  if vae_cfg.latent_channels != cfg.uvit.latent_channels:
    raise cj.ConfigError(f"The VAE has latent_channels={vae_cfg.latent_channels} but the JanusFlow UViT works on "
                         f"{cfg.uvit.latent_channels}-channel latents; pass the VAE the model was trained with "
                         "(SDXL-VAE, 4 channels, for JanusFlow-1.3B).")
  return dataclasses.replace(cfg, vae=vae_cfg)


__all__ = ["LAYOUT", "IGNORED_PREFIXES", "is_janusflow", "parse", "uvit_config", "check_consistency",
           "config_dict", "checkpoint_target", "with_vae"]
