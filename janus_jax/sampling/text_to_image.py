"""Text-to-image end to end: prompts -> CFG prompt rows -> the generation mode's compiled sampler -> uint8.

Plain functions over (model, params, cfg, tokenizer, template), shared by `janus_jax.api.JanusPipeline` (which adds
loading and sharding) and the training loop, which calls `sample_images` with its own params and config (scanned
or unrolled layers, remat on or off) without importing the API or the CLI. `generate` asks `cfg.mode` (its
`generate` and its `sampling` defaults); `generate_tokens` / `decode_tokens` are the AR-VQ sampler (compiled AR loop,
`ar_image`), `generate_flow` the flow sampler (compiled ODE, `flow_image`). Every loop is compiled once per shape.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from janus_jax import sharding
from janus_jax.models import param_layout
from janus_jax.models.configs import JanusConfig
from janus_jax.models.janus import model_class
from janus_jax.processing import chat
from janus_jax.processing.tokenizer import Tokenizer
from janus_jax.sampling import flow_image
from janus_jax.sampling import previews
from janus_jax.sampling import progress as progress_lib
from janus_jax.sampling.ar_image import compiled_decode, compiled_generate

PROMPT_BUCKET = 32  # Prompts are left-padded to a multiple of this, so similar lengths share one executable.


@dataclasses.dataclass
class GenerationResult:
  """images: uint8[N, H, W, 3]; prompts[i] made row i. AR mode: tokens int32[N, num_image_tokens] (raster
  order); flow mode: latents float32[N, h, w, C] (scaled VAE latents) and tokens None."""
  images: np.ndarray
  tokens: np.ndarray | None
  prompts: list[str]
  latents: np.ndarray | None = None


def context(mesh: jax.sharding.Mesh | None = None, rules=sharding.DEFAULT_RULES) -> contextlib.ExitStack:
  """Mesh + logical-rules context under which the compiled loops are traced and run."""
  stack = contextlib.ExitStack()
  if mesh is not None:
    stack.enter_context(jax.set_mesh(mesh))
  stack.enter_context(nn.logical_axis_rules(tuple(rules)))
  return stack


def default_cfg_weight(cfg: JanusConfig) -> float:
  """The official guidance weight of `cfg`'s generation mode (`cfg.mode.sampling`: 5 ar_vq, 2 flow)."""
  return cfg.mode.sampling["cfg_weight"]


# --- argument checks ----------------------------------------------------------------------------------------
def check_sampling_args(*, greedy: bool, temperature: float, top_p: float, top_k: int) -> None:
  """ValueError for sampling arguments the token sampler cannot use (temperature is unused when greedy)."""
  if not greedy and not (_is_number(temperature) and temperature > 0):
    raise ValueError(f"temperature must be > 0, got {temperature!r}; for argmax decoding pass greedy=True "
                     "(CLI: --greedy) instead of temperature 0.")
  if not (_is_number(top_p) and 0 < top_p <= 1):
    raise ValueError(f"top_p must be in (0, 1], got {top_p!r} (1 = no nucleus filtering).")
  if not (isinstance(top_k, (int, np.integer)) and top_k >= 0):
    raise ValueError(f"top_k must be an int >= 0, got {top_k!r} (0 = full softmax).")


def check_cfg_weight(cfg_weight: float) -> None:
  if not (_is_number(cfg_weight) and cfg_weight >= 0):
    from janus_jax import modes  # pylint: disable=import-outside-toplevel
    defaults = ", ".join(f"{m.sampling['cfg_weight']:g} {m.name}" for m in modes.MODES.values())
    raise ValueError(f"cfg_weight must be >= 0, got {cfg_weight!r}: 1 = no guidance, 0 = unconditional, > 1 "
                     f"stronger guidance (defaults: {defaults}).")


def _is_number(x) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def repeat_prompts(prompts: Sequence[str] | str, num_images: int) -> list[str]:
  """The prompt of every generated row: each prompt `num_images` times (checked: non-empty text, num_images >= 1)."""
  if isinstance(prompts, str):
    prompts = [prompts]
  prompts = chat.require_texts(prompts, "prompts", " For unconditional generation keep a real prompt and pass "
                               "cfg_weight=0 (the unconditional rows drop the prompt text).")
  if not (isinstance(num_images, (int, np.integer)) and num_images >= 1):
    raise ValueError(f"num_images must be >= 1, got {num_images}.")
  return [p for p in prompts for _ in range(num_images)]


# --- the ar_vq sampler (Janus / Janus-Pro) ---------------------------------------------------------------------------------
def generation_inputs(cfg: JanusConfig, tokenizer: Tokenizer, template: str, prompts: Sequence[str] | str,
                      num_images: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """AR prompt rows [cond; uncond] (int32[2P, T], bool[2P, T], P = len(prompts) * num_images) and each row's prompt."""
  rows = repeat_prompts(prompts, num_images)
  batch = chat.prepare_generation_batch(tokenizer, rows, template,
                                        max_len=cfg.llm.max_position_embeddings - cfg.num_image_tokens,
                                        pad_to_multiple_of=PROMPT_BUCKET)
  ids = np.concatenate([batch["input_ids"], batch["uncond_input_ids"]])
  valid = np.concatenate([batch["attention_mask"], batch["uncond_attention_mask"]])
  return ids, valid, rows


def generate_tokens(model, params, cfg: JanusConfig, tokenizer: Tokenizer, template: str,
                    prompts: Sequence[str] | str, *, num_images: int = 1, cfg_weight: float | None = None,
                    temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                    greedy: bool = False, seed: int = 0, progress: bool = False, mesh=None,
                    rules=sharding.DEFAULT_RULES, preview_every: int = 0, on_preview=None
                    ) -> tuple[np.ndarray, list[str]]:
  """AR image tokens int32[len(prompts) * num_images, num_image_tokens] and the prompt of each row.

  `model`/`params` in the decoding layout (`param_layout.for_decoding`); None arguments take the mode's defaults
  (`cfg.mode.sampling`); `progress=True` shows a tqdm bar fed from inside the compiled loop (a separate executable);
  `preview_every=k > 0` sends `on_preview(step, uint8[P, H, W, 3])` the partial grid every k tokens before the last
  (`previews`; the caller delivers the final image).
  """
  default = cfg.mode.sampling_default
  cfg_weight, temperature = default("cfg_weight", cfg_weight), default("temperature", temperature)
  top_k, top_p = default("top_k", top_k), default("top_p", top_p)
  check_cfg_weight(cfg_weight)
  check_sampling_args(greedy=greedy, temperature=temperature, top_p=top_p, top_k=top_k)
  ids, valid, rows = generation_inputs(cfg, tokenizer, template, prompts, num_images)
  n = cfg.num_image_tokens
  preview_every = previews.check_preview_args(preview_every, on_preview, n)
  run = compiled_generate(model, greedy=greedy, top_k=top_k, progress_every=max(n // 24, 1) if progress else 0,
                          preview_every=preview_every)
  args = (params, jnp.asarray(ids), jnp.asarray(valid), jax.random.PRNGKey(seed), jnp.float32(cfg_weight),
          jnp.float32(temperature), jnp.float32(top_p))
  with context(mesh, rules), sampling_hooks(progress, n, len(rows), on_preview if preview_every else None):
    codes = np.asarray(run(*args))
  return codes, rows


@contextlib.contextmanager
def sampling_hooks(progress: bool, total: int, rows: int, on_preview=None):
  """The host side of a compiled loop's callbacks: a tqdm bar (`progress`) and the preview handler."""
  with contextlib.ExitStack() as stack:
    if progress:
      stack.enter_context(progress_lib.reporting(total, f"generating {rows} image(s)"))
    if on_preview is not None:
      stack.enter_context(previews.previewing(on_preview))
    yield


def decode_tokens(model, params, cfg: JanusConfig, codes: np.ndarray, *, mesh=None,
                  rules=sharding.DEFAULT_RULES) -> np.ndarray:
  """VQ codes int[N, num_image_tokens] -> uint8[N, H, W, 3] (ids checked against the codebook)."""
  codes = np.asarray(codes)
  if codes.ndim != 2 or codes.shape[1] != cfg.num_image_tokens:
    raise ValueError(f"Expected codes of shape [N, {cfg.num_image_tokens}], got {codes.shape}.")
  if codes.size and (codes.min() < 0 or codes.max() >= cfg.image_token_size):
    raise ValueError(f"Image token ids must lie in [0, {cfg.image_token_size}); got "
                     f"[{codes.min()}, {codes.max()}].")
  with context(mesh, rules):
    return np.asarray(compiled_decode(model)(params, jnp.asarray(codes, jnp.int32)))


# --- the flow sampler (JanusFlow) ---------------------------------------------------------------------------------------
def generate_flow(model, params, cfg: JanusConfig, tokenizer: Tokenizer, template: str,
                  prompts: Sequence[str] | str, *, num_images: int = 1, cfg_weight: float | None = None,
                  seed: int = 0, progress: bool = False, num_steps: int | None = None, solver: str | None = None,
                  time_shift: float | None = None, prompt_cache: bool = True, noise: np.ndarray | None = None,
                  mesh=None, rules=sharding.DEFAULT_RULES, preview_every: int = 0, on_preview=None
                  ) -> GenerationResult:
  """JanusFlow CFG sampling: `num_steps` ODE steps, then the VAE decode; images uint8[P, H, W, 3] and latents.

  None arguments take the mode's defaults (`cfg.mode.sampling`); `noise` float32[len(prompts) * num_images, h, w,
  C] gives the initial latent z0 explicitly (else from seed). `preview_every=k > 0`: `on_preview(step, uint8[P, H,
  W, 3])` receives the decoded clean-image estimate every k ODE steps, and the returned images last.
  """
  default = cfg.mode.sampling_default
  cfg_weight, num_steps = default("cfg_weight", cfg_weight), default("num_steps", num_steps)
  solver, time_shift = default("solver", solver), default("time_shift", time_shift)
  check_cfg_weight(cfg_weight)
  rows = repeat_prompts(prompts, num_images)
  batch = chat.prepare_generation_batch(tokenizer, rows, template,
                                        max_len=cfg.llm.max_position_embeddings - cfg.num_image_tokens - 1,
                                        pad_to_multiple_of=PROMPT_BUCKET)
  shape = flow_image.latent_shape(cfg, len(rows))
  if noise is None:
    noise = jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)
  elif tuple(np.shape(noise)) != shape:
    raise ValueError(f"noise must be float32{list(shape)} (one scaled latent per generated image: "
                     f"{len(rows) // num_images} prompt(s) x {num_images}); got shape {tuple(np.shape(noise))}.")
  preview_every = previews.check_preview_args(preview_every, on_preview, num_steps)
  run = flow_image.compiled_flow_generate(model, num_steps=num_steps, solver=solver, shift=time_shift,
                                          prompt_cache=prompt_cache, progress_every=1 if progress else 0,
                                          preview_every=preview_every)
  args = (params, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
          jnp.asarray(noise, jnp.float32), jnp.float32(cfg_weight), jnp.int32(tokenizer.pad_id))
  with context(mesh, rules):
    with sampling_hooks(progress, num_steps, len(rows), on_preview if preview_every else None):
      z = run(*args)
    images = np.asarray(flow_image.compiled_decode_latents(model)(params, z))
  if preview_every:
    previews.final_frame(on_preview, num_steps, images)
  return GenerationResult(images=images, tokens=None, prompts=rows, latents=np.asarray(z))


# --- every mode ---------------------------------------------------------------------------------------------
def generate(model, params, cfg: JanusConfig, tokenizer: Tokenizer, template: str, prompts: Sequence[str] | str, *,
             num_images: int = 1, cfg_weight: float | None = None, seed: int = 0, progress: bool = False, mesh=None,
             rules=sharding.DEFAULT_RULES, preview_every: int = 0, on_preview=None, **options) -> GenerationResult:
  """Text-to-image with `cfg`'s generation mode (`cfg.mode.generate`; see `janus_jax.api.JanusPipeline.generate`).

  `options` are the samplers' own arguments (ar_vq: temperature, top_k, top_p, greedy; flow: num_steps, solver,
  time_shift, prompt_cache, noise; ar_continuous: num_steps, temperature); a mode ignores the others' options; None
  takes the mode's default. `preview_every=k > 0`: `on_preview(step, uint8[N, H, W, 3])` receives partial images
  while sampling (every k tokens / ODE steps) and the returned images as the last frame.
  """
  return cfg.mode.generate(model, params, cfg, tokenizer, template, prompts, num_images=num_images,
                           cfg_weight=cfg_weight, seed=seed, progress=progress, mesh=mesh, rules=rules,
                           preview_every=preview_every, on_preview=on_preview, **options)


def sample_images(params: Any, cfg: JanusConfig, tokenizer: Tokenizer, template: str, prompts: list[str], *,
                  cfg_weight: float | None = None, seed: int = 0) -> np.ndarray:
  """uint8[len(prompts), H, W, 3]: one CFG sample per prompt with `cfg`'s mode and its defaults (`cfg_weight=None`:
  the mode's). Takes params/cfg in the training layout (scanned layers, remat) or unrolled."""
  params, cfg = param_layout.for_decoding(params, cfg)
  model = model_class(cfg)(cfg)
  return generate(model, params, cfg, tokenizer, template, list(prompts), cfg_weight=cfg_weight, seed=seed).images
