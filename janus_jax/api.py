"""Python API for notebooks and scripts: `janus_jax.load(checkpoint_dir)` -> `JanusPipeline`.

    pipe = janus_jax.load("ckpts/janus-pro-1b")
    answers = pipe.understand(["cat.png"], ["What animal is this?"])
    out = pipe.generate(["a red circle"], num_images=4, seed=0)   # out.images uint8[4, 384, 384, 3], out.tokens

The CLI (`janus_jax.cli`) is a thin layer over this module. Every loop is compiled once per shape.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from janus_jax import sharding

from janus_jax.models.configs import JanusConfig
from janus_jax.models import param_layout
from janus_jax.models.janus import JanusModel, model_class
from janus_jax.processing import chat, image as image_proc
from janus_jax.processing.tokenizer import Tokenizer, load_tokenizer
from janus_jax.sampling import progress as progress_lib
from janus_jax.sampling import flow_image
from janus_jax.sampling.ar_image import compiled_decode, compiled_generate
from janus_jax.sampling.understand import compiled_understand

PROMPT_BUCKET = 32  # Prompts are left-padded to a multiple of this, so similar lengths share one executable.


@dataclasses.dataclass
class GenerationResult:
  """images: uint8[N, H, W, 3]; prompts[i] made row i. AR mode: tokens int32[N, num_image_tokens] (raster
  order); flow mode: latents float32[N, h, w, C] (scaled VAE latents) and tokens None."""
  images: np.ndarray
  tokens: np.ndarray | None
  prompts: list[str]
  latents: np.ndarray | None = None


class JanusPipeline:
  """A loaded model: params, config, tokenizer and the compiled sampling loops."""

  def __init__(self, params: Any, cfg: JanusConfig, tokenizer: Tokenizer, template: str = "deepseek", *,
               mesh: jax.sharding.Mesh | None = None, rules=sharding.DEFAULT_RULES):
    """Args: params/cfg as loaded (scanned or unrolled layout); `mesh` shards the params by their logical axis
    names through `rules` (e.g. a ("fsdp", "tensor") mesh for a model that does not fit one device)."""
    params, cfg = param_layout.for_decoding(params, cfg)
    self.cfg = cfg
    self.model = model_class(cfg)(cfg)
    self.tokenizer = tokenizer
    self.template = template
    self.mesh, self.rules = mesh, tuple(rules)
    if mesh is not None:
      from janus_jax.models.janus import abstract_params  # pylint: disable=import-outside-toplevel
      shardings = sharding.logical_to_sharding(abstract_params(cfg, boxed=True), mesh, rules)
      # Training-only subtrees (JanusFlow's REPA head) may be absent from an inference checkpoint.
      params = jax.device_put(params, {k: v for k, v in shardings.items() if k in params})
    self.params = params

  def _context(self):
    """Mesh + logical-rules context under which the compiled loops are traced and run."""
    stack = contextlib.ExitStack()
    if self.mesh is not None:
      stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  # --- understanding ----------------------------------------------------------------------------------------
  def understand(self, images: Sequence[Any], questions: Sequence[str] | str, *, greedy: bool = True,
                 max_new_tokens: int = 512, temperature: float = 0.1, top_p: float = 0.95, top_k: int = 0,
                 seed: int = 0, system_prompt: str = chat.DEFAULT_SYSTEM_PROMPT) -> list[str]:
    """Answers each question about its image(s).

    Args:
      images: one image per question (path, PIL image or uint8 array), or a list of images per question.
      questions: the questions (a single string is one question).
      greedy: argmax decoding (default, as VLMEvalKit); otherwise temperature / top-p sampling (demo defaults).
    Returns: the decoded answers, special tokens removed.
    """
    if isinstance(questions, str):
      questions = [questions]
      if not isinstance(images, (list, tuple)) or len(images) != 1:
        images = [images]
    if len(images) != len(questions):
      raise ValueError(f"Got {len(images)} image entries for {len(questions)} questions; pass one image "
                       "(or one list of images) per question.")
    per_q = [list(x) if isinstance(x, (list, tuple)) else [x] for x in images]
    counts = [len(x) for x in per_q]
    batch = chat.prepare_understanding_batch(
        self.tokenizer, questions, counts, self.template, self.cfg.num_image_tokens,
        max_len=self.cfg.llm.max_position_embeddings - max_new_tokens, system_prompt=system_prompt,
        pad_to_multiple_of=PROMPT_BUCKET, extra_boi_slot=self.cfg.is_flow)
    size = self.cfg.vision.image_size
    n_max = max(max(counts), 1)
    pixels = np.zeros((len(questions), n_max, size, size, 3), np.float32)
    for row, imgs in enumerate(per_q):
      if imgs:
        pixels[row, :len(imgs)] = image_proc.preprocess_understanding(imgs, size)
    run = compiled_understand(self.model, greedy=greedy, max_new_tokens=max_new_tokens, top_k=top_k)
    with self._context():
      tokens, lengths = run(self.params, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
                            jnp.asarray(batch["image_seq_mask"]), jnp.asarray(pixels), jax.random.PRNGKey(seed),
                            jnp.float32(temperature), jnp.float32(top_p), jnp.int32(self.tokenizer.eos_id))
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    return [self.tokenizer.decode(tokens[i, :lengths[i]].tolist()) for i in range(len(questions))]

  # --- text-to-image ----------------------------------------------------------------------------------------
  def generation_inputs(self, prompts: Sequence[str], num_images: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Stacked [cond; uncond] prompt rows (int32[2P, T], bool[2P, T]) with each prompt repeated num_images×."""
    rows = [p for p in prompts for _ in range(num_images)]
    batch = chat.prepare_generation_batch(
        self.tokenizer, rows, self.template,
        max_len=self.cfg.llm.max_position_embeddings - self.cfg.num_image_tokens,
        pad_to_multiple_of=PROMPT_BUCKET)
    ids = np.concatenate([batch["input_ids"], batch["uncond_input_ids"]])
    valid = np.concatenate([batch["attention_mask"], batch["uncond_attention_mask"]])
    return ids, valid, rows

  def generate_tokens(self, prompts: Sequence[str] | str, *, num_images: int = 1, cfg_weight: float = 5.0,
                      temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
                      seed: int = 0, progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """Samples image tokens: int32[len(prompts) * num_images, num_image_tokens] and the prompt of each row.

    `progress=True` shows a tqdm bar fed from inside the compiled loop (a separate executable).
    """
    if isinstance(prompts, str):
      prompts = [prompts]
    if num_images < 1:
      raise ValueError(f"num_images must be >= 1, got {num_images}.")
    ids, valid, rows = self.generation_inputs(prompts, num_images)
    n = self.cfg.num_image_tokens
    run = compiled_generate(self.model, greedy=greedy, top_k=top_k, progress_every=max(n // 24, 1) if progress else 0)
    args = (self.params, jnp.asarray(ids), jnp.asarray(valid), jax.random.PRNGKey(seed), jnp.float32(cfg_weight),
            jnp.float32(temperature), jnp.float32(top_p))
    with self._context():
      if not progress:
        return np.asarray(run(*args)), rows
      with progress_lib.reporting(n, f"generating {len(rows)} image(s)"):
        codes = np.asarray(run(*args))
    return codes, rows

  def generate(self, prompts: Sequence[str] | str, *, num_images: int = 1, cfg_weight: float | None = None,
               temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
               seed: int = 0, progress: bool = False, num_steps: int = 30, solver: str = "euler",
               time_shift: float = 1.0, prompt_cache: bool = True, noise: np.ndarray | None = None
               ) -> GenerationResult:
    """Text-to-image with classifier-free guidance; deterministic for a given seed.

    AR mode (Janus): official defaults weight 5, temperature 1, full softmax; returns images and token grids.
    Flow mode (JanusFlow): weight 2 by default, `num_steps` ODE steps of `solver` ('euler' official, 'heun') on a
    `time_shift`-warped grid, prompt KV cache reused across steps (`prompt_cache=False`: recompute, official);
    `noise` float32[len(prompts) * num_images, h, w, C] gives the initial latent z0 explicitly (else from seed).
    """
    if self.cfg.is_flow:
      return self._generate_flow(prompts, num_images=num_images, cfg_weight=2.0 if cfg_weight is None else cfg_weight,
                                 seed=seed, progress=progress, num_steps=num_steps, solver=solver,
                                 time_shift=time_shift, prompt_cache=prompt_cache, noise=noise)
    cfg_weight = 5.0 if cfg_weight is None else cfg_weight
    tokens, rows = self.generate_tokens(prompts, num_images=num_images, cfg_weight=cfg_weight,
                                        temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                                        seed=seed, progress=progress)
    return GenerationResult(images=self.decode_tokens(tokens), tokens=tokens, prompts=rows)

  def _generate_flow(self, prompts, *, num_images, cfg_weight, seed, progress, num_steps, solver, time_shift,
                     prompt_cache, noise) -> GenerationResult:
    if isinstance(prompts, str):
      prompts = [prompts]
    if num_images < 1:
      raise ValueError(f"num_images must be >= 1, got {num_images}.")
    rows = [p for p in prompts for _ in range(num_images)]
    batch = chat.prepare_generation_batch(
        self.tokenizer, rows, self.template,
        max_len=self.cfg.llm.max_position_embeddings - self.cfg.num_image_tokens - 1,
        pad_to_multiple_of=PROMPT_BUCKET)
    shape = flow_image.latent_shape(self.cfg, len(rows))
    if noise is None:
      noise = jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)
    elif tuple(np.shape(noise)) != shape:
      raise ValueError(f"noise must be float32{list(shape)} (one scaled latent per generated image: "
                       f"{len(prompts)} prompt(s) x {num_images}); got shape {tuple(np.shape(noise))}.")
    run = flow_image.compiled_flow_generate(self.model, num_steps=num_steps, solver=solver, shift=time_shift,
                                            prompt_cache=prompt_cache, progress_every=1 if progress else 0)
    args = (self.params, jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
            jnp.asarray(noise, jnp.float32), jnp.float32(cfg_weight), jnp.int32(self.tokenizer.pad_id))
    with self._context():
      if progress:
        with progress_lib.reporting(num_steps, f"generating {len(rows)} image(s)"):
          z = run(*args)
      else:
        z = run(*args)
      images = np.asarray(flow_image.compiled_decode_latents(self.model)(self.params, z))
    return GenerationResult(images=images, tokens=None, prompts=rows, latents=np.asarray(z))

  # --- VQ tokenizer -----------------------------------------------------------------------------------------
  @property
  def generation_image_size(self) -> int:
    return self.cfg.generated_image_size

  def decode_tokens(self, codes: np.ndarray) -> np.ndarray:
    """int[N, num_image_tokens] -> uint8[N, H, W, 3]."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != self.cfg.num_image_tokens:
      raise ValueError(f"Expected codes of shape [N, {self.cfg.num_image_tokens}], got {codes.shape}.")
    if codes.size and (codes.min() < 0 or codes.max() >= self.cfg.image_token_size):
      raise ValueError(f"Image token ids must lie in [0, {self.cfg.image_token_size}); got "
                       f"[{codes.min()}, {codes.max()}].")
    with self._context():
      return np.asarray(compiled_decode(self.model)(self.params, jnp.asarray(codes, jnp.int32)))

  def encode_images(self, images: Sequence[Any]) -> np.ndarray:
    """Images (paths / PIL / uint8 arrays) -> int32[N, h*w] VQ codes (short side resize + centre crop)."""
    if not isinstance(images, (list, tuple)):
      images = [images]
    size = self.generation_image_size
    pixels = np.stack([image_proc.preprocess_generation(x, size) for x in images])
    with self._context():
      return np.asarray(_compiled_encode(self.model)(self.params, jnp.asarray(pixels)))


@functools.lru_cache(maxsize=None)
def _compiled_encode(model: JanusModel):
  return jax.jit(lambda params, x: model.apply({"params": params}, x, method=JanusModel.encode_image_tokens))


def load(checkpoint_dir: str, *, dtype: str | None = None, template: str | None = None,
         mesh: jax.sharding.Mesh | None = None, rules=sharding.DEFAULT_RULES) -> JanusPipeline:
  """Loads a converted janus_jax checkpoint (see `janus-jax convert`). No network, no torch.

  Args:
    checkpoint_dir: directory written by `janus_jax.checkpoint.convert` / `store.save_checkpoint`.
    dtype: compute and param dtype override, e.g. "bfloat16" (default: as stored).
    template: chat template override ("deepseek" for Janus-Pro, "deepseek_old" for Janus-1.3B).
    mesh, rules: shard the params over a device mesh by logical axis names (see `janus_jax.sharding`).
  """
  from janus_jax.checkpoint import store
  params, cfg = store.load_checkpoint(checkpoint_dir, dtype=dtype)
  if dtype is not None:
    cfg = cfg.with_dtype(dtype)
  info = store.load_info(checkpoint_dir)
  tok_dir = store.tokenizer_path(checkpoint_dir)
  if tok_dir is None:
    raise FileNotFoundError(f"{checkpoint_dir} has no tokenizer/ folder; convert the checkpoint from a directory "
                            "that holds tokenizer.json (or a sentencepiece *.model).")
  tokenizer = load_tokenizer(tok_dir)
  return JanusPipeline(params, cfg, tokenizer, template or info.get("template", "deepseek"), mesh=mesh, rules=rules)
