"""`janus-jax convert`: a PyTorch Janus / Janus-Pro checkpoint directory -> a janus_jax checkpoint (see store.py).

Accepts the official DeepSeek `MultiModalityCausalLM` layout (model.safetensors or pytorch_model*.bin) and the
transformers `JanusForConditionalGeneration` layout. The mapping is strict: one error lists every missing,
unexpected or mis-shaped tensor.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from janus_jax.checkpoint import hf_layout, store
from janus_jax.checkpoint.config_json import load_janus_config
from janus_jax.checkpoint.mapping import CheckpointMismatchError, state_dict_to_params
from janus_jax.checkpoint.reader import read_state_dict

# Tensors the official checkpoints contain but no janus_jax module uses: the SigLIP attention-pool head (built but
# never run, `ignore_head=True`) and the VQ codebook-usage buffer (janus_models.md 1.2, 1.5).
IGNORED_PREFIXES = ("vision_model.vision_tower.attn_pool.", "gen_vision_model.quantize.codebook_used")
DTYPES = ("float32", "bfloat16", "float16")
LM_HEAD = "language_model.lm_head.weight"
EMBED = "language_model.model.embed_tokens.weight"


def convert(src_dir, dst_dir, *, dtype: str | None = "float32", progress: bool = True,
            overwrite: bool = False) -> Path:
  """Converts `src_dir` (PyTorch checkpoint) into a janus_jax checkpoint at `dst_dir`.

  Args:
    src_dir: local checkpoint directory with config.json and weights (+ tokenizer files, copied along).
    dst_dir: output directory (created).
    dtype: param dtype of the output, 'float32' (default; None means the same), 'bfloat16' or 'float16'.
      The stored config's `param_dtype` fields record it.
    progress: tqdm bar while reading, and a printed summary.
    overwrite: replace an existing janus_jax checkpoint at `dst_dir`.
  Returns:
    the absolute path of the written checkpoint.
  Raises:
    CheckpointMismatchError listing every missing / unexpected / mis-shaped tensor; ConfigError, CheckpointReadError
    or FileNotFoundError for unreadable inputs.
  """
  from janus_jax.models.janus import abstract_params  # pylint: disable=import-outside-toplevel
  dtype = dtype or "float32"
  if dtype not in DTYPES:
    raise ValueError(f"dtype={dtype!r} is not supported; choose one of {list(DTYPES)}.")
  t0 = time.time()
  src_dir = Path(src_dir).expanduser()
  cfg, info = load_janus_config(src_dir)
  cfg = store.with_param_dtype(cfg, dtype)
  state = read_state_dict(src_dir, progress=progress)
  source_keys = len(state)
  hf = hf_layout.is_hf_layout(state)
  if hf:
    state = hf_layout.hf_to_deepseek(state)
  if LM_HEAD not in state and EMBED in state and info.get("tie_word_embeddings"):
    state[LM_HEAD] = state[EMBED]  # Tied checkpoint: janus_jax always has a separate lm_head.
  params = state_dict_to_params(state, abstract_params(cfg), ignore=IGNORED_PREFIXES, what=f"checkpoint {src_dir}")
  del state
  n_params = sum(int(np.size(x)) for x in _leaves(params))
  extra = dict(source=str(src_dir.absolute()), source_layout=info["layout"], weights_layout=(
      "transformers" if hf else "deepseek"), source_torch_dtype=info.get("torch_dtype"), dtype=dtype,
               num_params=n_params, image_token_id=info.get("image_token_id"), bos_token_id=info.get("bos_token_id"),
               eos_token_id=info.get("eos_token_id"), pad_token_id=info.get("pad_token_id"),
               config_defaults_used=info.get("defaults_used", []), template=chat_template_of(src_dir))
  out = store.save_checkpoint(dst_dir, params, cfg, tokenizer_dir=src_dir, extra_info=extra, overwrite=overwrite)
  if progress:
    copied = store.load_info(out).get("tokenizer_files", [])
    print(f"Converted {src_dir} ({info['layout']} config, {'transformers' if hf else 'DeepSeek'} tensor names, "
          f"{source_keys} tensors) -> {out}\n"
          f"  {n_params / 1e9:.3f} B params as {dtype}; LLM {cfg.llm.num_layers} layers x {cfg.llm.hidden_size}, "
          f"vision {cfg.vision.num_blocks} blocks x {cfg.vision.width}, {cfg.num_image_tokens} image tokens\n"
          f"  tokenizer files: {copied or 'none found'}; {time.time() - t0:.1f} s")
    if info.get("defaults_used"):
      print(f"  config fields filled from reference defaults: {info['defaults_used']}")
  return out


def chat_template_of(src_dir: Path) -> str:
  """The checkpoint's chat template: `sft_format` of processor_config.json ('deepseek' for Janus-Pro,
  'deepseek_old' for Janus-1.3B / JanusFlow); 'deepseek' when the file is absent (transformers layout)."""
  path = Path(src_dir) / "processor_config.json"
  if path.is_file():
    import json  # pylint: disable=import-outside-toplevel
    fmt = json.loads(path.read_text()).get("sft_format")
    if fmt in ("deepseek", "deepseek_old"):
      return fmt
  return "deepseek"


def _leaves(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield tree


__all__ = ["convert", "IGNORED_PREFIXES", "CheckpointMismatchError"]
