"""Python API for notebooks and scripts: `janus_jax.load(checkpoint_dir)` -> `JanusPipeline`.

    pipe = janus_jax.load("ckpts/janus-pro-1b")
    answers = pipe.understand(["cat.png"], ["What animal is this?"])
    out = pipe.generate(["a red circle"], num_images=4, seed=0)   # out.images uint8[4, 384, 384, 3], out.tokens

The CLI (`janus_jax.cli`) is a thin layer over this module. Every loop is compiled once per shape.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from janus_jax import paths, precision, quantization, sharding

from janus_jax.models.configs import JanusConfig
from janus_jax.models import param_layout
from janus_jax.models.janus import JanusModel
from janus_jax.processing import chat, image as image_proc
from janus_jax.processing.tokenizer import Tokenizer, load_tokenizer
from janus_jax.sampling import text_to_image
from janus_jax.sampling.text_to_image import PROMPT_BUCKET, GenerationResult  # Both also part of this API.
from janus_jax.sampling.understand import compiled_understand

MAX_NEW_TOKENS = 512  # Default cap on answer length (the model's context may allow less).


class JanusPipeline:
  """A loaded model: params, config, tokenizer and the compiled sampling loops."""

  def __init__(self, params: Any, cfg: JanusConfig, tokenizer: Tokenizer, template: str = "deepseek", *,
               mesh: jax.sharding.Mesh | None = None, rules=sharding.DEFAULT_RULES, quantize: str | None = None):
    """Args: params/cfg as loaded (scanned or unrolled layout, remat on or off); `mesh` shards the params by their
    logical axis names through `rules` (e.g. a ("fsdp", "tensor") mesh for a model that does not fit one device);
    `quantize` "int8": weight-only int8 decode matmuls (`janus_jax.quantization`)."""
    quantization.check_qtype(quantize)
    params, cfg = param_layout.for_decoding(params, cfg)
    self.cfg = cfg
    self.model = cfg.mode.model_class()(cfg)
    self.tokenizer = tokenizer
    self.template = template
    self.mesh, self.rules = mesh, tuple(rules)
    if mesh is not None:  # a no-op for params `load` restored onto the mesh (unrolling keeps their shardings)
      from janus_jax.checkpoint.store import param_shardings  # pylint: disable=import-outside-toplevel
      # Training-only subtrees (JanusFlow's REPA head) may be absent from an inference checkpoint.
      params = jax.device_put(params, param_shardings(cfg, mesh, rules, keys=set(params)))
    self.params = quantization.quantize_weights(params, quantize) if quantize else params

  def _context(self):
    """Mesh + logical-rules context under which the compiled loops are traced and run."""
    return text_to_image.context(self.mesh, self.rules)

  def _where(self) -> dict[str, Any]:
    return dict(mesh=self.mesh, rules=self.rules)

  # --- understanding ----------------------------------------------------------------------------------------
  def understand(self, images: Sequence[Any], questions: Sequence[str] | str, *, greedy: bool = True,
                 max_new_tokens: int | None = None, temperature: float = 0.1, top_p: float = 0.95, top_k: int = 0,
                 seed: int = 0, system_prompt: str = chat.DEFAULT_SYSTEM_PROMPT) -> list[str]:
    """Answers each question about its image(s).

    Args:
      images: one image per question (path, PIL image or uint8 array), or a list of images per question.
      questions: the questions (a single string is one question), each with some text.
      greedy: argmax decoding (default, as VLMEvalKit; temperature unused); otherwise temperature (> 0) / top-p
        sampling (demo defaults).
      max_new_tokens: answer length limit; None = what the model's context leaves after the (bucketed) prompt,
        at most 512. An explicit value must fit that context.
    Returns: the decoded answers, special tokens removed.
    """
    if isinstance(questions, str):
      questions = [questions]
      if not isinstance(images, (list, tuple)) or len(images) != 1:
        images = [images]
    questions = chat.require_texts(questions, "questions")
    if len(images) != len(questions):
      raise ValueError(f"Got {len(images)} image entries for {len(questions)} questions; pass one image "
                       "(or one list of images) per question.")
    text_to_image.check_sampling_args(greedy=greedy, temperature=temperature, top_p=top_p, top_k=top_k)
    if max_new_tokens is not None and not (isinstance(max_new_tokens, (int, np.integer)) and max_new_tokens >= 1):
      raise ValueError(f"max_new_tokens must be an int >= 1 (or None for the default), got {max_new_tokens!r}.")
    per_q = [list(x) if isinstance(x, (list, tuple)) else [x] for x in images]
    counts = [len(x) for x in per_q]
    context_len = self.cfg.llm.max_position_embeddings
    batch = chat.prepare_understanding_batch(
        self.tokenizer, questions, counts, self.template, self.cfg.num_image_tokens, max_len=context_len - 1,
        system_prompt=system_prompt, pad_to_multiple_of=PROMPT_BUCKET, extra_boi_slot=self.cfg.mode.und_boi_slot)
    max_new_tokens = _answer_budget(max_new_tokens, context_len, int(batch["attention_mask"].sum(1).max()),
                                    batch["input_ids"].shape[1])
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

  # --- text-to-image (janus_jax.sampling.text_to_image) -----------------------------------------------------
  def generation_inputs(self, prompts: Sequence[str], num_images: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Stacked [cond; uncond] prompt rows (int32[2P, T], bool[2P, T]) with each prompt repeated num_images×."""
    return text_to_image.generation_inputs(self.cfg, self.tokenizer, self.template, prompts, num_images)

  def generate_tokens(self, prompts: Sequence[str] | str, *, num_images: int = 1, cfg_weight: float | None = None,
                      temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                      greedy: bool = False, seed: int = 0, progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """ar_vq: samples image tokens int32[len(prompts) * num_images, num_image_tokens] and the prompt of each row.

    None takes the mode's default (`janus_jax.modes.ar_vq`: weight 5, temperature 1, full softmax); `progress=True`
    shows a tqdm bar fed from inside the compiled loop (a separate executable).
    """
    return text_to_image.generate_tokens(
        self.model, self.params, self.cfg, self.tokenizer, self.template, prompts, num_images=num_images,
        cfg_weight=cfg_weight, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, seed=seed,
        progress=progress, **self._where())

  def generate(self, prompts: Sequence[str] | str, *, num_images: int = 1, cfg_weight: float | None = None,
               temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
               greedy: bool = False, seed: int = 0, progress: bool = False, num_steps: int | None = None,
               solver: str | None = None, time_shift: float | None = None, prompt_cache: bool = True,
               noise: np.ndarray | None = None, preview_every: int = 0, on_preview=None) -> GenerationResult:
    """Text-to-image with classifier-free guidance; deterministic for a given seed.

    Every prompt needs text (unconditional generation: cfg_weight=0); cfg_weight >= 0 (1 = no guidance). None takes
    the generation mode's default (`janus_jax.modes`, `self.cfg.mode.sampling`); each mode ignores the other's
    options.
    ar_vq (Janus): official defaults weight 5, temperature 1 (must be > 0; greedy=True for argmax), full softmax;
    returns images and token grids.
    flow (JanusFlow): weight 2, `num_steps` (30) ODE steps of `solver` ('euler' official, 'heun') on a
    `time_shift`-warped grid, prompt KV cache reused across steps (`prompt_cache=False`: recompute, official);
    `noise` float32[len(prompts) * num_images, h, w, C] gives the initial latent z0 explicitly (else from seed).
    Streaming previews: `preview_every=k > 0` calls `on_preview(step, uint8[N, H, W, 3])` while sampling with the
    partial image every k steps of the mode's loop (ar_vq / ar_continuous: tokens, the unsampled ones grey; flow:
    ODE steps, the decoded clean-image estimate z_t + (1 - t) v), then once with the returned images. Without it
    the sampler is the same compiled program as before.
    """
    return text_to_image.generate(
        self.model, self.params, self.cfg, self.tokenizer, self.template, prompts, num_images=num_images,
        cfg_weight=cfg_weight, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, seed=seed,
        progress=progress, num_steps=num_steps, solver=solver, time_shift=time_shift, prompt_cache=prompt_cache,
        noise=noise, preview_every=preview_every, on_preview=on_preview, **self._where())

  # --- VQ tokenizer -----------------------------------------------------------------------------------------
  @property
  def generation_image_size(self) -> int:
    return self.cfg.generated_image_size

  def decode_tokens(self, codes: np.ndarray) -> np.ndarray:
    """int[N, num_image_tokens] -> uint8[N, H, W, 3]."""
    return text_to_image.decode_tokens(self.model, self.params, self.cfg, codes, **self._where())

  def encode_images(self, images: Sequence[Any]) -> np.ndarray:
    """Images (paths / PIL / uint8 arrays) -> int32[N, h*w] VQ codes (short side resize + centre crop)."""
    if not isinstance(images, (list, tuple)):
      images = [images]
    size = self.generation_image_size
    pixels = np.stack([image_proc.preprocess_generation(x, size) for x in images])
    with self._context():
      return np.asarray(_compiled_encode(self.model)(self.params, jnp.asarray(pixels)))


def _answer_budget(max_new_tokens: int | None, context_len: int, prompt_len: int, padded_len: int) -> int:
  """max_new_tokens checked against the context left after the longest prompt (None: the room after the padded
  prompt, so prompts in one length bucket share an executable, at most MAX_NEW_TOKENS)."""
  room = context_len - prompt_len
  if max_new_tokens is None:
    return min(MAX_NEW_TOKENS, context_len - padded_len if context_len > padded_len else room)
  if max_new_tokens > room:
    raise ValueError(f"max_new_tokens={max_new_tokens} does not fit: the model has max_position_embeddings="
                     f"{context_len} and the longest prompt is {prompt_len} tokens long (images included), so at "
                     f"most {room} new tokens; lower max_new_tokens (None picks what fits) or shorten the prompt.")
  return int(max_new_tokens)


@functools.lru_cache(maxsize=None)
def _compiled_encode(model: JanusModel):
  return jax.jit(lambda params, x: model.apply({"params": params}, x, method=JanusModel.encode_image_tokens))


def load(checkpoint_dir: str, *, dtype: str | None = "auto", matmul_precision: str = "auto",
         template: str | None = None, mesh: jax.sharding.Mesh | None = None,
         rules=sharding.DEFAULT_RULES, quantize: str | None = None) -> JanusPipeline:
  """Loads a converted janus_jax checkpoint (see `janus-jax convert`). No network, no torch.

  Args:
    checkpoint_dir: directory written by `janus_jax.checkpoint.convert` / `store.save_checkpoint` (local or remote,
      e.g. `gs://bucket/ckpt`).
    dtype: compute and param dtype, e.g. "bfloat16"; "auto" (default) is the platform's (`janus_jax.precision`):
      bfloat16 on GPU and TPU, on CPU as stored; None: as stored.
    matmul_precision: "highest", "high", "default", or "auto" (default): CPU highest, GPU and TPU default.
    template: chat template override ("deepseek" for Janus-Pro, "deepseek_old" for Janus-1.3B).
    mesh, rules: shard the params over a device mesh by logical axis names (see `janus_jax.sharding`).
    quantize: None (float weights) or "int8": weight-only int8 LLM and image-head matmuls for decoding
      (`janus_jax.quantization`; activations stay in `dtype`).
  """
  from janus_jax.checkpoint import store
  checkpoint_dir = paths.resolve(checkpoint_dir)
  if dtype == precision.AUTO:
    dtype = precision.defaults()[0]
    dtype = None if dtype == "float32" else dtype  # CPU: as stored
  precision.resolve(dtype or "auto", matmul_precision, where="janus_jax.load({field}=...)")  # errors before I/O
  quantization.check_qtype(quantize, where="janus_jax.load(quantize=...)")
  params, cfg = store.load_checkpoint(checkpoint_dir, dtype=dtype, mesh=mesh, rules=rules)  # straight onto the mesh
  cfg = cfg.with_dtypes(dtype=dtype, matmul_precision=matmul_precision)
  info = store.load_info(checkpoint_dir)
  tok_dir = store.tokenizer_path(checkpoint_dir)
  if tok_dir is None:
    raise FileNotFoundError(f"{checkpoint_dir} has no tokenizer/ folder; convert the checkpoint from a directory "
                            "that holds tokenizer.json (or a sentencepiece *.model).")
  tokenizer = load_tokenizer(tok_dir)
  return JanusPipeline(params, cfg, tokenizer, template or info.get("template", "deepseek"), mesh=mesh, rules=rules,
                       quantize=quantize)
