"""What a generation mode supplies: the one interface the shared code asks instead of branching on the mode.

A mode (`janus_jax.modes.get(cfg.generation_mode)`) owns everything that differs between the ways of generating an
image: its image tokenizer (VQ, KL-VAE), its Linen model class and param subtree, its training objective, its
sampler with its defaults, its checkpoint layout and its per-stage trainable sets. The understanding path, the LLM
and the text head are the same in every mode. Adding a mode is one module with a `GenerationMode` subclass, its
entry in `janus_jax.modes.MODES`, its config preset and its tests.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
  import jax
  from janus_jax.models.configs import JanusConfig


@dataclasses.dataclass(frozen=True)
class Objective:
  """A mode's training loss, as the shared train step (`janus_jax.train.step.make_train_step`) calls it.

  mask_dropped_prompts: CFG dropout also masks the dropped prompt positions out (JanusFlow's unconditional rows).
  normalizers(batch) -> the global-batch counts the loss sums are divided by (after CFG dropout).
  prepare(model, params, micro) -> micro with what the loss needs computed outside the gradient (e.g. VQ codes).
  loss(model, params, micro, rng, normalizers) -> (scalar loss, sums) with sums a pytree of float32 sums.
  zero_sums() -> sums of zeros (the accumulator of gradient accumulation).
  metrics(sums) -> {name: float32 scalar}.
  check_trainable(trainable) -> None or a ValueError message (e.g. a tokenizer that must stay frozen).
  """
  mask_dropped_prompts: bool
  normalizers: Any
  prepare: Any
  loss: Any
  zero_sums: Any
  metrics: Any
  check_trainable: Any


class GenerationMode:
  """One way of generating images; stateless. Subclasses set the attributes and implement the methods."""
  name = ""
  family = ""  # the model family, in messages ("Janus", "JanusFlow")
  tokenizer_module = ""  # top-level param module of the image tokenizer ("gen_vision_model", "vae")
  tokenizer_section = ""  # its model config section ("vq", "vae")
  config_parts: tuple[str, ...] = ()  # the model config sections this mode builds modules from (besides llm)
  und_boi_slot = False  # an understanding image also fills the `<begin_of_image>` slot (a learned embedding)
  und_encoders: tuple[str, ...] = ("siglip",)  # the model.und_encoder values it can build
  stages: Mapping[int, Mapping[str, Any]] = {}  # training stage -> {'trainable': [...] | None, 'frozen': [...]}
  sampling: Mapping[str, Any] = {}  # the sampler's defaults (cfg_weight, ...), the only place they are written
  sampler_options: tuple[str, ...] = ()  # the keyword arguments its sampler takes besides the shared ones
  shown_metrics: tuple[str, ...] = ()  # the training metrics the console line shows
  pixel_rounding = "truncate"  # decoded images -> uint8 (`janus_jax.processing.image.to_uint8`)
  not_in_checkpoint: tuple[str, ...] = ()  # param modules the released checkpoints do not hold
  train_section: str | None = None  # its `config.train.<section>` of objective settings (flow: 'flow')

  # --- model -----------------------------------------------------------------------------------------------
  def model_class(self):
    """The Linen class of the whole model (understanding + LLM + this mode's generation modules)."""
    raise NotImplementedError

  def init_params(self, cfg: "JanusConfig", rng: "jax.Array", boxed: bool = False):
    """Random-initialised params (plain nested dict; `boxed=True` keeps the logical-axis metadata boxes)."""
    import flax.linen as nn  # pylint: disable=import-outside-toplevel
    from janus_jax.models.janus import dummy_inputs  # pylint: disable=import-outside-toplevel
    variables = self.model_class()(cfg).init(rng, *dummy_inputs(cfg))
    return variables["params"] if boxed else nn.unbox(variables["params"])

  def generated_image_size(self, cfg: "JanusConfig") -> int:
    """Side in pixels of a generated image."""
    raise NotImplementedError

  def sampling_steps(self, cfg: "JanusConfig") -> int:
    """Steps of the sampler's loop at its defaults, the unit of `preview_every` (AR modes: the image tokens)."""
    return cfg.num_image_tokens

  def latent_size(self, cfg: "JanusConfig") -> int:
    """Side of the KL-VAE latent the mode generates (modes that generate latents)."""
    raise ValueError(f"generation_mode {self.name!r} generates no KL-VAE latents.")

  def problems(self, cfg: "JanusConfig") -> list[str]:
    """What in `cfg` this mode cannot build, each naming the field and the fix ([] when fine)."""
    if cfg.und_encoder in self.und_encoders:
      return []
    from janus_jax import modes  # pylint: disable=import-outside-toplevel
    others = [m.name for m in modes.MODES.values() if cfg.und_encoder in m.und_encoders]
    needs = f"generation_mode {' or '.join(repr(n) for n in others)}" if others else "another generation mode"
    return [f"model.und_encoder={cfg.und_encoder!r} needs {needs}: generation_mode {self.name!r} ({self.family}) "
            f"builds only {list(self.und_encoders)}. Fix: --config.model.und_encoder={self.und_encoders[0]}"
            + (f", or --config.model.generation_mode={others[0]} with a `model.{modes.get(others[0]).tokenizer_section}`"
               " section." if others else ".")]

  # --- training --------------------------------------------------------------------------------------------
  def stage_trainable(self, stage: int) -> dict[str, Any]:
    """{'trainable': [...] | None, 'frozen': [...]} for training stage `stage` (ValueError naming the valid ones)."""
    if stage not in self.stages:
      raise ValueError(f"Unknown {self.family} training stage {stage!r}; valid stages: {sorted(self.stages)}.")
    s = self.stages[stage]
    return dict(trainable=None if s["trainable"] is None else list(s["trainable"]), frozen=list(s["frozen"]))

  def objective(self, cfg: "JanusConfig", train_cfg: Mapping[str, Any]) -> Objective:
    """The training loss of this mode for `cfg` (`train_cfg`: the resolved `config.train`)."""
    raise NotImplementedError

  # --- image tokenizer ----------------------------------------------------------------------------------
  def train_tokenizer(self, cfg: "JanusConfig", settings, train_images, eval_images, *, seed: int, workdir: str):
    """Trains (or resumes) the image tokenizer of `cfg` on uint8[N, H, W, 3] images with the main job's section
    `settings` (config.<tokenizer_section>); returns (params of `tokenizer_module`, report dict)."""
    raise NotImplementedError

  def with_tokenizer_report(self, cfg: "JanusConfig", report: Mapping[str, Any]) -> "JanusConfig":
    """`cfg` using what training the tokenizer measured (e.g. the VAE's latent scale); default: unchanged."""
    del report
    return cfg

  def with_tokenizer_of(self, cfg: "JanusConfig", stored: "JanusConfig") -> "JanusConfig":
    """`cfg` using the calibration of the tokenizer stored with config `stored`; default: unchanged."""
    del stored
    return cfg

  def tokenizer_summary(self, report: Mapping[str, Any]) -> str:
    """One console line about a trained tokenizer."""
    return str(dict(report))

  # --- checkpoint layout ------------------------------------------------------------------------------------
  def consistency_problems(self, cfg: "JanusConfig") -> list[str]:
    """Widths of `cfg` that do not chain (a checkpoint config.json read into `cfg`), each as 'a=x != b=y'."""
    raise NotImplementedError

  def config_dict(self, cfg: "JanusConfig", language: dict, vision: dict, torch_dtype: str) -> dict:
    """The official config.json dict of `cfg` (given its language and vision sub-dicts)."""
    raise NotImplementedError

  def conversion_inputs(self, cfg: "JanusConfig", src_dir, *, vae, vae_variant, dtype: str):
    """`janus-jax convert`: (cfg, params the checkpoint does not hold, e.g. {'vae': ...}) before the tensors are
    mapped; ConfigError for options this mode does not take."""
    raise NotImplementedError

  def conversion_target(self, abstract: Mapping[str, Any]) -> tuple[dict, tuple[str, ...]]:
    """(the part of the abstract param tree the official checkpoint holds, source tensor prefixes to ignore)."""
    raise NotImplementedError

  reads_transformers_layout = False  # its checkpoints may come in transformers' tensor names

  def conversion_note(self, cfg: "JanusConfig", vae) -> str:
    """A line for the converter's summary ('' for none)."""
    del cfg, vae
    return ""

  # --- sampling --------------------------------------------------------------------------------------------
  def generate(self, model, params, cfg: "JanusConfig", tokenizer, template: str, prompts, *, num_images: int,
               cfg_weight: float | None, seed: int, progress: bool, mesh, rules, preview_every: int = 0,
               on_preview=None, **options):
    """Text-to-image -> `janus_jax.sampling.text_to_image.GenerationResult`. `options`: this mode's
    `sampler_options` (None: its default); other modes' options are ignored, unknown names raise TypeError.
    `preview_every=k > 0`: `on_preview(step, uint8[N, H, W, 3])` gets the mode's partial image every k steps of its
    loop and, last, the returned images (`janus_jax.sampling.previews`)."""
    raise NotImplementedError

  def _own_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
    """This mode's options out of `options` (TypeError for a name no mode takes)."""
    from janus_jax import modes  # pylint: disable=import-outside-toplevel
    known = {k for m in modes.MODES.values() for k in m.sampler_options}
    unknown = sorted(set(options) - known)
    if unknown:
      raise TypeError(f"generate() got unknown sampler option(s) {unknown}; the modes take "
                      + "; ".join(f"{m.name}: {', '.join(m.sampler_options)}" for m in modes.MODES.values()) + ".")
    return {k: v for k, v in options.items() if k in self.sampler_options}

  def sampling_default(self, key: str, value=None):
    """`value`, or this mode's default for sampling argument `key` when `value` is None."""
    return self.sampling[key] if value is None else value

  def __repr__(self) -> str:
    return f"<generation mode {self.name!r} ({self.family})>"


__all__ = ["GenerationMode", "Objective"]
