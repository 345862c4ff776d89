"""Reads a checkpoint's `config.json` (DeepSeek or transformers layout) into a `JanusConfig`, and writes the
DeepSeek layout back.

Layouts:
  * 'deepseek': the official `MultiModalityCausalLM` config (model_type `multi_modality`) with `language_config`
    (a transformers `LlamaConfig` dict), `vision_config`, `aligner_config`, `gen_vision_config`,
    `gen_aligner_config`, `gen_head_config`, each `{cls, params}`.
  * 'transformers': transformers `JanusForConditionalGeneration` (model_type `janus`) with `text_config`,
    `vision_config`, `vq_config`.
  * 'janusflow': the official JanusFlow `MultiModalityCausalLM` config (also model_type `multi_modality`) with
    `vision_und_enc_config`, `vision_gen_enc_config`, `vision_gen_dec_config`, `language_config`; parsed by
    `janusflow_layout` into a JanusConfig with generation_mode 'flow'.

Missing fields take the defaults of the class that the reference loader would build, so that a sparse config (e.g.
Janus-Pro-7B's `language_config`, which lists only 4 fields) means the same architecture here as in PyTorch:
  * LLaMA fields: transformers `LlamaConfig` (v5.23 `models/llama/configuration_llama.py`; `rope_theta` from
    `RotaryEmbeddingConfigMixin.default_theta`) -> `_LLAMA_DEFAULTS`.
  * DeepSeek vision tower: `CLIPVisionTower.__init__` defaults (image_size 336, select_layer -2) and the SigLIP
    shapes of `siglip_vit.SigLIP_MODEL_CONFIG` for the model name; `MlpProjector` depth defaults to 1.
  * DeepSeek VQ: always the `VQ_16()` defaults (the official code ignores `gen_vision_config.params` for the VQ).
  * transformers vision / VQ fields: `JanusVisionConfig` / `JanusVQVAEConfig` defaults (v5.23).
Every field filled from a default is listed in `info['defaults_used']`.

janus_jax extensions (ignored by the official loader, which could not build these tiny architectures anyway):
  * `vision_config.janus_jax_vit`: {width, depth, num_heads, mlp_dim, patch_size, layer_norm_eps} overriding the
    SigLIP shape implied by `params.model_name` (a sibling of `params`, because the official code passes every
    `params` entry on to `CLIPVisionTower`).
  * `gen_vision_config.params.janus_jax_vq`: the `VQConfig` architecture fields, when they differ from VQ-16.
  * `vision_config.janus_jax_und_encoder`: `JanusConfig.und_encoder` when it is not 'siglip' (e.g. 'vq': the
    understanding path reads the VQ; `vision_config.params.image_size` stays the understanding image size).
    Released checkpoints never have it, so they always read as 'siglip'.
  * `language_config.head_dim` is written only when it differs from hidden_size // num_attention_heads.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any, Mapping

from etils import epath

from janus_jax import paths
from janus_jax.models.configs import (RUN_SETTINGS, AlignerConfig, GenHeadConfig, JanusConfig, LlamaConfig,
                                      SiglipConfig, VQConfig)

CONFIG_FILE = "config.json"

# transformers `LlamaConfig` defaults (verified against transformers 5.23 configuration_llama.py; `rope_theta` is
# `RotaryEmbeddingConfigMixin.default_theta` in modeling_rope_utils.py; num_key_value_heads None -> num heads,
# head_dim None -> hidden_size // num_attention_heads).
_LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
                       max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0, attention_bias=False,
                       mlp_bias=False, tie_word_embeddings=False)

# Official `siglip_vit.SigLIP_MODEL_CONFIG` shapes of the SigLIP variants Janus uses (janus_models.md 1.2).
_SIGLIP_SHAPES = {
    "siglip_large_patch16_384": dict(image_size=384, patch_size=16, width=1024, depth=24, num_heads=16, mlp_dim=4096),
    "siglip_large_patch16_256": dict(image_size=256, patch_size=16, width=1024, depth=24, num_heads=16, mlp_dim=4096),
}
# `CLIPVisionTower.__init__` keyword defaults (official clip_encoder.py).
_CLIP_TOWER_DEFAULTS = dict(model_name="siglip_large_patch16_384", image_size=336, select_layer=-2)

# transformers `JanusVisionConfig` / `JanusVQVAEConfig` / `JanusConfig` defaults (v5.23 configuration_janus.py).
_HF_VISION_DEFAULTS = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, num_channels=3,
                           image_size=384, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-6, mlp_ratio=4.0,
                           attention_bias=True, projection_dim=2048, use_qk_norm=False, depth=2,
                           num_image_tokens=576)
_HF_VQ_DEFAULTS = dict(embed_dim=8, num_embeddings=16384, double_latent=False, latent_channels=256, in_channels=3,
                       base_channels=128, channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=2, out_channels=3,
                       projection_dim=2048, num_hidden_layers=2, hidden_act="gelu", image_token_embed_dim=2048)
_HF_TOP_DEFAULTS = dict(image_token_id=100581, tie_word_embeddings=True)

_VQ_ARCH_FIELDS = ("codebook_size", "codebook_dim", "codebook_l2_norm", "commit_beta", "base_channels",
                   "channel_mult", "z_channels", "num_res_blocks", "num_groups", "norm_eps", "encoder_attention")
_VIT_EXT_FIELDS = ("width", "depth", "num_heads", "mlp_dim", "patch_size", "layer_norm_eps")


class ConfigError(ValueError):
  """A checkpoint config.json cannot be turned into a JanusConfig; the message says which field and why."""


class _Fields:
  """Reads fields of one config section, recording which ones fell back to a default."""

  def __init__(self, d: Mapping[str, Any] | None, defaults: Mapping[str, Any], where: str, used: list[str]):
    self.d = dict(d or {})
    self.defaults = defaults
    self.where = where
    self.used = used

  def __call__(self, key: str, default: Any = KeyError):
    if key in self.d and self.d[key] is not None:
      return self.d[key]
    if default is KeyError:
      if key not in self.defaults:
        raise ConfigError(f"{self.where}.{key} is missing from config.json and has no default.")
      default = self.defaults[key]
    self.used.append(f"{self.where}.{key}={default!r}")
    return default


def _unsupported(where: str, key: str, value, want) -> ConfigError:
  return ConfigError(f"{where}.{key}={value!r} is not supported by janus_jax (expected {want!r}); this checkpoint "
                     "is not a Janus / Janus-Pro architecture that janus_jax implements.")


def _llama(d: Mapping[str, Any] | None, where: str, used: list[str]) -> LlamaConfig:
  """transformers LlamaConfig dict -> our LlamaConfig (missing fields: transformers LlamaConfig defaults)."""
  f = _Fields(d, _LLAMA_DEFAULTS, where, used)
  mt = f.d.get("model_type", "llama")
  if mt != "llama":
    raise ConfigError(f"{where}.model_type={mt!r}: janus_jax only implements the LLaMA decoder ('llama').")
  for key, want in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
    if f(key) != want:
      raise _unsupported(where, key, f.d[key], want)
  rope = f.d.get("rope_parameters") or f.d.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in ("default", None):
    raise _unsupported(where, "rope_parameters.rope_type", rope_type, "default")
  if rope.get("rope_theta") is not None:
    theta = rope["rope_theta"]
  else:
    theta = f("rope_theta")
  hidden, heads = int(f("hidden_size")), int(f("num_attention_heads"))
  if hidden % heads:
    raise ConfigError(f"{where}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}.")
  kv = f.d.get("num_key_value_heads") or heads
  head_dim = f.d.get("head_dim") or 0
  if head_dim == hidden // heads:
    head_dim = 0
  return LlamaConfig(vocab_size=int(f("vocab_size")), hidden_size=hidden, intermediate_size=int(f("intermediate_size")),
                     num_layers=int(f("num_hidden_layers")), num_heads=heads, num_kv_heads=int(kv),
                     head_dim=int(head_dim), rms_norm_eps=float(f("rms_norm_eps")), rope_theta=float(theta),
                     max_position_embeddings=int(f("max_position_embeddings")))


def _section(cfg: Mapping[str, Any], name: str) -> tuple[str, dict]:
  sec = cfg.get(name)
  if not isinstance(sec, Mapping):
    raise ConfigError(f"DeepSeek-layout config.json has no `{name}` section.")
  return sec.get("cls", ""), dict(sec.get("params") or {})


def _projector(params: dict, where: str, used: list[str]) -> AlignerConfig:
  f = _Fields(params, {"depth": 1}, where, used)
  kind = f("projector_type")
  if kind not in ("mlp_gelu", "linear"):
    raise _unsupported(where, "projector_type", kind, "mlp_gelu | linear")
  depth = int(f("depth")) if kind == "mlp_gelu" else 1
  return AlignerConfig(kind=kind, input_dim=int(f("input_dim")), output_dim=int(f("n_embed")), depth=depth)


def _clip_tower(cfg: Mapping[str, Any], name: str, used: list[str]) -> SiglipConfig:
  """The `{cls: CLIPVisionTower, params}` section `name` (+ the `janus_jax_vit` extension) -> SiglipConfig."""
  cls, vp = _section(cfg, name)
  if cls != "CLIPVisionTower":
    raise _unsupported(name, "cls", cls, "CLIPVisionTower")
  f = _Fields(vp, _CLIP_TOWER_DEFAULTS, f"{name}.params", used)
  model_name = f("model_name")
  if model_name not in _SIGLIP_SHAPES:
    raise ConfigError(f"{name}.params.model_name={model_name!r} is not supported; janus_jax knows "
                      f"{sorted(_SIGLIP_SHAPES)}.")
  if vp.get("select_layers"):
    raise _unsupported(f"{name}.params", "select_layers", vp["select_layers"], None)
  for key in ("image_size", "select_layer"):
    if key not in vp:
      warnings.warn(f"{name}.params.{key} is missing; using the official CLIPVisionTower default "
                    f"{_CLIP_TOWER_DEFAULTS[key]} (shipped Janus configs set image_size 384, select_layer -1).")
  shape = {k: v for k, v in _SIGLIP_SHAPES[model_name].items() if k != "image_size"}
  shape["layer_norm_eps"] = 1e-6  # Hard-coded in the official VisionTransformer.
  ext = dict(cfg[name].get("janus_jax_vit") or {})
  unknown = sorted(set(ext) - set(_VIT_EXT_FIELDS))
  if unknown:
    raise ConfigError(f"{name}.janus_jax_vit has unknown keys {unknown}; valid: {list(_VIT_EXT_FIELDS)}.")
  shape.update(ext)
  image_size = f("image_size")
  if isinstance(image_size, (list, tuple)):
    if len(set(image_size)) != 1:
      raise ConfigError(f"{name}.params.image_size={image_size}: only square images are supported.")
    image_size = image_size[0]
  return SiglipConfig(image_size=int(image_size), select_layer=int(f("select_layer")), **shape)


def _deepseek(cfg: Mapping[str, Any], used: list[str]) -> JanusConfig:
  llm = _llama(cfg.get("language_config"), "language_config", used)

  vision = _clip_tower(cfg, "vision_config", used)

  cls, ap = _section(cfg, "aligner_config")
  if cls != "MlpProjector":
    raise _unsupported("aligner_config", "cls", cls, "MlpProjector")
  aligner = _projector(ap, "aligner_config.params", used)

  cls, gvp = _section(cfg, "gen_vision_config")
  if "VQ" not in cls:
    raise _unsupported("gen_vision_config", "cls", cls, "VQ-16")
  if cls != "VQ-16" and "janus_jax_vq" not in gvp:
    raise ConfigError(f"gen_vision_config.cls={cls!r}: only the VQ-16 tokenizer is supported.")
  gf = _Fields(gvp, {}, "gen_vision_config.params", used)
  vq_ext = dict(gvp.get("janus_jax_vq") or {})
  unknown = sorted(set(vq_ext) - set(_VQ_ARCH_FIELDS))
  if unknown:
    raise ConfigError(f"gen_vision_config.params.janus_jax_vq has unknown keys {unknown}; "
                      f"valid: {list(_VQ_ARCH_FIELDS)}.")
  vq = VQConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in vq_ext.items()})
  gen_tokens, gen_embed_dim = int(gf("image_token_size")), int(gf("n_embed"))

  cls, gap = _section(cfg, "gen_aligner_config")
  if cls != "MlpProjector":
    raise _unsupported("gen_aligner_config", "cls", cls, "MlpProjector")
  gen_aligner = _projector(gap, "gen_aligner_config.params", used)

  cls, ghp = _section(cfg, "gen_head_config")
  if cls != "vision_head":
    raise _unsupported("gen_head_config", "cls", cls, "vision_head")
  hf = _Fields(ghp, {}, "gen_head_config.params", used)
  gen_head = GenHeadConfig(n_embed=int(hf("n_embed")), image_token_embed=int(hf("image_token_embed")),
                           image_token_size=int(hf("image_token_size")))
  if gen_tokens != gen_head.image_token_size:
    raise ConfigError(f"gen_vision_config.params.image_token_size={gen_tokens} (rows of gen_embed) differs from "
                      f"gen_head_config.params.image_token_size={gen_head.image_token_size}; janus_jax ties both.")
  und_encoder = str(cfg["vision_config"].get("janus_jax_und_encoder") or "siglip")
  return JanusConfig(llm=llm, vision=vision, aligner=aligner, vq=vq, gen_aligner=gen_aligner, gen_head=gen_head,
                     gen_embed_dim=gen_embed_dim, und_encoder=und_encoder)


def _transformers(cfg: Mapping[str, Any], used: list[str]) -> JanusConfig:
  llm = _llama(cfg.get("text_config"), "text_config", used)
  v = _Fields(cfg.get("vision_config"), _HF_VISION_DEFAULTS, "vision_config", used)
  for key, want in (("hidden_act", "gelu"), ("use_qk_norm", False), ("attention_bias", True), ("num_channels", 3)):
    if v(key) != want:
      raise _unsupported("vision_config", key, v.d[key], want)
  width = int(v("hidden_size"))
  vision = SiglipConfig(image_size=int(v("image_size")), patch_size=int(v("patch_size")), width=width,
                        depth=int(v("num_hidden_layers")), num_heads=int(v("num_attention_heads")),
                        mlp_dim=int(width * float(v("mlp_ratio"))), layer_norm_eps=float(v("layer_norm_eps")),
                        select_layer=-1)
  if int(v("num_image_tokens")) != vision.num_patches:
    raise ConfigError(f"vision_config.num_image_tokens={v.d['num_image_tokens']} differs from "
                      f"(image_size // patch_size)**2 = {vision.num_patches}.")
  aligner = AlignerConfig(kind="mlp_gelu", input_dim=width, output_dim=int(v("projection_dim")), depth=int(v("depth")))
  q = _Fields(cfg.get("vq_config"), _HF_VQ_DEFAULTS, "vq_config", used)
  for key, want in (("double_latent", False), ("in_channels", 3), ("out_channels", 3), ("hidden_act", "gelu")):
    if q(key) != want:
      raise _unsupported("vq_config", key, q.d[key], want)
  codes, dim = int(q("num_embeddings")), int(q("embed_dim"))
  vq = VQConfig(codebook_size=codes, codebook_dim=dim, base_channels=int(q("base_channels")),
                channel_mult=tuple(int(c) for c in q("channel_multiplier")), z_channels=int(q("latent_channels")),
                num_res_blocks=int(q("num_res_blocks")))
  proj = int(q("projection_dim"))
  gen_aligner = AlignerConfig(kind="mlp_gelu", input_dim=dim, output_dim=proj, depth=int(q("num_hidden_layers")))
  gen_head = GenHeadConfig(n_embed=int(q("image_token_embed_dim")), image_token_embed=proj, image_token_size=codes)
  return JanusConfig(llm=llm, vision=vision, aligner=aligner, vq=vq, gen_aligner=gen_aligner, gen_head=gen_head,
                     gen_embed_dim=dim)


def check_consistency(cfg: JanusConfig) -> None:
  """Raises ConfigError when the component widths do not chain (encoder -> aligner -> LLM -> heads / UViT): the
  generation mode's `consistency_problems`."""
  bad = cfg.mode.consistency_problems(cfg)
  if bad:
    raise ConfigError(f"Inconsistent {cfg.mode.family} checkpoint config: " + "; ".join(bad) + ".")


def janus_consistency_problems(cfg: JanusConfig) -> list[str]:
  """The `ar_vq` widths that must chain: encoder -> aligner -> LLM -> gen_aligner / gen_head."""
  d = cfg.llm.hidden_size
  enc = cfg.understanding_encoder
  checks = [("aligner input_dim", cfg.aligner.input_dim, enc.feature_name, enc.feature_dim(cfg)),
            ("aligner output_dim", cfg.aligner.output_dim, "LLM hidden_size", d),
            ("gen_aligner input_dim", cfg.gen_aligner.input_dim, "gen_embed_dim", cfg.gen_embed_dim),
            ("gen_aligner output_dim", cfg.gen_aligner.output_dim, "LLM hidden_size", d),
            ("gen_head n_embed", cfg.gen_head.n_embed, "LLM hidden_size", d)]
  return [f"{a}={x} != {b}={y}" for a, x, b, y in checks if x != y]


def layout_of(cfg: Mapping[str, Any]) -> str | None:
  """'janusflow', 'deepseek', 'transformers' or None for a parsed config.json."""
  from janus_jax.checkpoint import janusflow_layout  # pylint: disable=import-outside-toplevel
  if janusflow_layout.is_janusflow(cfg):
    return janusflow_layout.LAYOUT
  if cfg.get("model_type") == "janus" or "text_config" in cfg and "vq_config" in cfg:
    return "transformers"
  if cfg.get("model_type") == "multi_modality" or "language_config" in cfg:
    return "deepseek"
  return None


def _dtype_name(v) -> str | None:
  if v is None:
    return None
  return str(v).replace("torch.", "")


def load_janus_config(directory) -> tuple[JanusConfig, dict[str, Any]]:
  """Parses `<directory>/config.json` -> (JanusConfig, info).

  info keys: layout ('deepseek' | 'transformers' | 'janusflow'), architectures, model_type, torch_dtype,
  image_token_id (or None), tie_word_embeddings (effective value), bos/eos/pad_token_id (from the LLM config, may be
  None), transformers_version, defaults_used (list of 'section.field=value' filled from reference defaults).
  """
  directory = paths.resolve(directory)
  path = directory / CONFIG_FILE if directory.is_dir() or not directory.suffix else directory
  if not path.is_file():
    raise FileNotFoundError(f"No {CONFIG_FILE} in {path.parent}. Pass a Janus / Janus-Pro / JanusFlow checkpoint "
                            "directory (DeepSeek `MultiModalityCausalLM` or transformers "
                            "`JanusForConditionalGeneration`).")
  try:
    raw = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path} is not valid JSON: {e}") from None
  if not isinstance(raw, dict):
    raise ConfigError(f"{path} does not hold a JSON object.")
  layout = layout_of(raw)
  used: list[str] = []
  if layout in ("deepseek", "janusflow"):
    if layout == "janusflow":
      from janus_jax.checkpoint import janusflow_layout  # pylint: disable=import-outside-toplevel
      cfg = janusflow_layout.parse(raw, used)
    else:
      cfg = _deepseek(raw, used)
    llm_raw = raw.get("language_config") or {}
    tie = bool(llm_raw.get("tie_word_embeddings", _LLAMA_DEFAULTS["tie_word_embeddings"]))
    image_token_id = raw.get("image_token_id")
  elif layout == "transformers":
    cfg = _transformers(raw, used)
    llm_raw = raw.get("text_config") or {}
    tie = bool(raw.get("tie_word_embeddings", _HF_TOP_DEFAULTS["tie_word_embeddings"]))
    image_token_id = raw.get("image_token_id", _HF_TOP_DEFAULTS["image_token_id"])
  else:
    raise ConfigError(
        f"{path}: unknown config layout (model_type={raw.get('model_type')!r}, keys {sorted(raw)[:20]}). Expected "
        "a DeepSeek `MultiModalityCausalLM` config (model_type 'multi_modality', language_config / vision_config / "
        "gen_vision_config ...), a JanusFlow config (vision_und_enc_config / vision_gen_enc_config / "
        "vision_gen_dec_config / language_config) or a transformers `JanusForConditionalGeneration` config "
        "(model_type 'janus', text_config / vision_config / vq_config). Other models are not supported.")
  check_consistency(cfg)
  torch_dtype = (raw.get("torch_dtype") or raw.get("dtype") or llm_raw.get("torch_dtype") or llm_raw.get("dtype"))
  info = dict(layout=layout, architectures=raw.get("architectures"), model_type=raw.get("model_type"),
              torch_dtype=_dtype_name(torch_dtype), image_token_id=image_token_id, tie_word_embeddings=tie,
              bos_token_id=llm_raw.get("bos_token_id"), eos_token_id=llm_raw.get("eos_token_id"),
              pad_token_id=llm_raw.get("pad_token_id"), transformers_version=raw.get("transformers_version"),
              defaults_used=used)
  return cfg, info


def _arch(c) -> dict[str, Any]:
  return {k: v for k, v in dataclasses.asdict(c).items() if k not in RUN_SETTINGS}


def _language_dict(cfg: JanusConfig, torch_dtype: str) -> dict[str, Any]:
  l = cfg.llm
  language = dict(model_type="llama", vocab_size=l.vocab_size, hidden_size=l.hidden_size,
                  intermediate_size=l.intermediate_size, num_hidden_layers=l.num_layers,
                  num_attention_heads=l.num_heads, num_key_value_heads=l.num_kv_heads, hidden_act="silu",
                  max_position_embeddings=l.max_position_embeddings, rms_norm_eps=l.rms_norm_eps,
                  rope_theta=l.rope_theta, attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                  torch_dtype=torch_dtype)
  if l.head_dim and l.head_dim != l.hidden_size // l.num_heads:
    language["head_dim"] = l.head_dim
  return language


def _vision_dict(cfg: JanusConfig) -> dict[str, Any]:
  v = cfg.vision
  model_name = "siglip_large_patch16_256" if v.image_size == 256 else "siglip_large_patch16_384"
  vision = dict(cls="CLIPVisionTower", params=dict(image_size=v.image_size, model_name=model_name,
                                                   select_feature="same", select_layer=v.select_layer))
  std = dict(_SIGLIP_SHAPES[model_name], layer_norm_eps=1e-6)
  ext = {k: getattr(v, k) for k in _VIT_EXT_FIELDS}
  if any(ext[k] != std[k] for k in _VIT_EXT_FIELDS):
    vision["janus_jax_vit"] = ext
  if cfg.und_encoder != "siglip":
    vision["janus_jax_und_encoder"] = cfg.und_encoder
  return vision


def deepseek_config_dict(cfg: JanusConfig, torch_dtype: str = "float32") -> dict[str, Any]:
  """JanusConfig -> the official DeepSeek config.json dict (with janus_jax extensions where needed): the Janus
  `MultiModalityCausalLM` layout for generation_mode 'ar_vq', the JanusFlow one for 'flow' (the mode's
  `config_dict`)."""
  return cfg.mode.config_dict(cfg, _language_dict(cfg, torch_dtype), _vision_dict(cfg), torch_dtype)


def janus_config_dict(cfg: JanusConfig, language: dict[str, Any], vision: dict[str, Any],
                      torch_dtype: str) -> dict[str, Any]:
  """The Janus `MultiModalityCausalLM` config.json dict of an `ar_vq` config (language / vision sub-dicts given)."""
  def projector(a: AlignerConfig):
    p = dict(projector_type=a.kind, input_dim=a.input_dim, n_embed=a.output_dim)
    if a.kind == "mlp_gelu":
      p["depth"] = a.depth
    return dict(cls="MlpProjector", params=p)

  gen_vision = dict(cls="VQ-16", params=dict(image_token_size=cfg.image_token_size, n_embed=cfg.gen_embed_dim))
  vq = _arch(cfg.vq)
  if vq != _arch(VQConfig()):
    gen_vision["params"]["janus_jax_vq"] = {k: list(x) if isinstance(x, tuple) else x for k, x in vq.items()}
  g = cfg.gen_head
  return dict(architectures=["MultiModalityCausalLM"], model_type="multi_modality", torch_dtype=torch_dtype,
              language_config=language, vision_config=vision, aligner_config=projector(cfg.aligner),
              gen_vision_config=gen_vision, gen_aligner_config=projector(cfg.gen_aligner),
              gen_head_config=dict(cls="vision_head", params=dict(n_embed=g.n_embed,
                                                                  image_token_embed=g.image_token_embed,
                                                                  image_token_size=g.image_token_size)))


def write_deepseek_config(cfg: JanusConfig, path, torch_dtype: str = "float32") -> epath.Path:
  """Writes a DeepSeek-layout config.json for `cfg` (Janus or, for a flow config, JanusFlow layout) to `path` (a
  directory, or a file path ending in .json; local or remote)."""
  path = paths.resolve(path)
  if path.suffix != ".json":
    path.mkdir(parents=True, exist_ok=True)
    path = path / CONFIG_FILE
  path.write_text(json.dumps(deepseek_config_dict(cfg, torch_dtype), indent=2) + "\n")
  return path


__all__ = ["ConfigError", "load_janus_config", "write_deepseek_config", "deepseek_config_dict", "layout_of",
           "check_consistency"]
