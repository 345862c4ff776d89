"""`janus-jax convert`: a PyTorch Janus / Janus-Pro / JanusFlow checkpoint directory -> a janus_jax checkpoint
(see store.py).

Accepts the official DeepSeek `MultiModalityCausalLM` layout (model.safetensors or pytorch_model*.bin), the
transformers `JanusForConditionalGeneration` layout and the official JanusFlow layout (janusflow_layout.py); the
layout is detected from config.json. JanusFlow's VAE is not in its checkpoint: pass the diffusers AutoencoderKL
directory it was trained with (a local copy of stabilityai/sdxl-vae) as `vae=` / `--vae`; it is stored under
params["vae"]. JanusFlow's training-only REPA head is neither expected nor stored (training initialises it).
The mapping is strict: one error lists every missing, unexpected or mis-shaped tensor, before any tensor is read.
Tensors are then read one at a time, mapped and cast into the output, so the converter's memory is about the output
plus the largest source tensor. Every path may be local or remote (`gs://...`; PyTorch `.bin` files local only).

    python -m janus_jax.checkpoint.convert --from JanusFlow-1.3B --vae sdxl-vae --to ckpts/janusflow-1.3b
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from etils import epath

from janus_jax import paths
from janus_jax.checkpoint import hf_layout, store
from janus_jax.checkpoint.config_json import ConfigError, load_janus_config
from janus_jax.checkpoint.mapping import CheckpointMismatchError, state_dict_to_params
from janus_jax.checkpoint.reader import open_state_dict

# Tensors the official checkpoints contain but no janus_jax module uses: the SigLIP attention-pool head (built but
# never run, `ignore_head=True`) and the VQ codebook-usage buffer (janus_models.md 1.2, 1.5).
IGNORED_PREFIXES = ("vision_model.vision_tower.attn_pool.", "gen_vision_model.quantize.codebook_used")
DTYPES = ("float32", "bfloat16", "float16")
LM_HEAD = "language_model.lm_head.weight"
EMBED = "language_model.model.embed_tokens.weight"
VAE_HINT = ("JanusFlow checkpoints do not contain their VAE. Pass the diffusers AutoencoderKL directory of the "
            "SDXL-VAE (e.g. a local copy of stabilityai/sdxl-vae: config.json + diffusion_pytorch_model.safetensors) "
            "with --vae DIR (CLI) or vae=DIR (convert()).")


class MissingVAEError(ConfigError):
  """A JanusFlow checkpoint was converted without the diffusers VAE directory it needs."""


def convert(src_dir, dst_dir, *, vae=None, dtype: str | None = "float32", progress: bool = True,
            overwrite: bool = False, vae_variant: str | None = None) -> epath.Path:
  """Converts `src_dir` (PyTorch checkpoint) into a janus_jax checkpoint at `dst_dir`.

  Args:
    src_dir: checkpoint directory with config.json and weights (+ tokenizer files, copied along).
    dst_dir: output directory (created).
    vae: JanusFlow only (required there): a diffusers AutoencoderKL directory (the SDXL-VAE); its config
      becomes `cfg.vae` and its weights `params["vae"]`.
    dtype: param dtype of the output, 'float32' (default; None means the same), 'bfloat16' or 'float16'.
      The stored config's `param_dtype` fields record it.
    progress: tqdm bar while converting, and a printed summary.
    overwrite: replace an existing janus_jax checkpoint at `dst_dir`.
    vae_variant: weight-file variant of the VAE directory, e.g. 'fp16' for diffusion_pytorch_model.fp16.safetensors.
  Returns:
    the absolute path of the written checkpoint (an epath.Path).
  Raises:
    CheckpointMismatchError listing every missing / unexpected / mis-shaped tensor; MissingVAEError for a JanusFlow
    checkpoint without `vae`; ConfigError, CheckpointReadError or FileNotFoundError for unreadable inputs.
  """
  from janus_jax.models.janus import abstract_params  # pylint: disable=import-outside-toplevel
  dtype = dtype or "float32"
  if dtype not in DTYPES:
    raise ValueError(f"dtype={dtype!r} is not supported; choose one of {list(DTYPES)}.")
  t0 = time.time()
  src_dir = paths.resolve(src_dir)
  cfg, info = load_janus_config(src_dir)
  mode = cfg.mode
  cfg, outside = mode.conversion_inputs(cfg, src_dir, vae=vae, vae_variant=vae_variant, dtype=dtype)
  cfg = store.with_param_dtype(cfg, dtype)
  state = open_state_dict(src_dir)  # Headers only: each tensor is read when it is mapped.
  source_keys = len(state)
  hf = mode.reads_transformers_layout and hf_layout.is_hf_layout(state)
  if hf:
    state = hf_layout.hf_to_deepseek(state)
  if LM_HEAD not in state and EMBED in state and info.get("tie_word_embeddings"):
    state[LM_HEAD] = state[EMBED]  # Tied checkpoint: janus_jax always has a separate lm_head.
  target, ignore = mode.conversion_target(abstract_params(cfg))
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=sum(not k.startswith(ignore) for k in state), desc=f"converting {src_dir.name}", unit="tensor")
  try:
    params = state_dict_to_params(state, target, ignore=ignore, what=f"checkpoint {src_dir}", bar=bar)
  finally:
    if bar is not None:
      bar.close()
  del state
  params.update(outside)
  n_params = sum(int(np.size(x)) for x in _leaves(params))
  extra = dict(source=str(src_dir), source_layout=info["layout"], weights_layout=(
      "transformers" if hf else "deepseek"), source_torch_dtype=info.get("torch_dtype"), dtype=dtype,
               num_params=n_params, image_token_id=info.get("image_token_id"), bos_token_id=info.get("bos_token_id"),
               eos_token_id=info.get("eos_token_id"), pad_token_id=info.get("pad_token_id"),
               config_defaults_used=info.get("defaults_used", []), template=chat_template_of(src_dir),
               generation_mode=cfg.generation_mode, vae_source=str(paths.resolve(vae)) if vae else None)
  out = store.save_checkpoint(dst_dir, params, cfg, tokenizer_dir=src_dir, extra_info=extra, overwrite=overwrite)
  if progress:
    copied = store.load_info(out).get("tokenizer_files", [])
    print(f"Converted {src_dir} ({info['layout']} config, {'transformers' if hf else 'DeepSeek'} tensor names, "
          f"{source_keys} tensors) -> {out}\n"
          f"  {n_params / 1e9:.3f} B params as {dtype}; LLM {cfg.llm.num_layers} layers x {cfg.llm.hidden_size}, "
          f"vision {cfg.vision.num_blocks} blocks x {cfg.vision.width}, {cfg.num_image_tokens} image tokens\n"
          f"  tokenizer files: {copied or 'none found'}; {time.time() - t0:.1f} s")
    note = mode.conversion_note(cfg, vae)
    if note:
      print(f"  {note}")
    if info.get("defaults_used"):
      print(f"  config fields filled from reference defaults: {info['defaults_used']}")
  return out


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """The `convert` options (--from, --to, --vae, --vae-variant, --dtype, --overwrite, --quiet) on `parser`."""
  parser.add_argument("--from", dest="src", required=True, help="checkpoint directory (config.json + weights; local "
                      "or gs://...)")
  parser.add_argument("--to", dest="dst", required=True, help="output directory (janus_jax checkpoint; local or gs://)")
  parser.add_argument("--vae", default=None, help="JanusFlow only: diffusers AutoencoderKL directory (SDXL-VAE, "
                      "e.g. a local copy of stabilityai/sdxl-vae)")
  parser.add_argument("--vae-variant", default=None, help="VAE weight variant, e.g. fp16")
  parser.add_argument("--dtype", default=None, choices=list(DTYPES), help="stored param dtype")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing janus_jax checkpoint")
  parser.add_argument("--quiet", action="store_true")
  return parser


def run(args: argparse.Namespace) -> int:
  """Runs a conversion from parsed `add_arguments` options; prints the output path."""
  out = convert(args.src, args.dst, vae=args.vae, vae_variant=args.vae_variant, dtype=args.dtype,
                progress=not args.quiet, overwrite=args.overwrite)
  print(f"converted checkpoint written to {out}")
  return 0


def main(argv=None) -> int:
  """`python -m janus_jax.checkpoint.convert --from SRC --to DST [--vae DIR] [--dtype bfloat16]`."""
  parser = add_arguments(argparse.ArgumentParser(prog="python -m janus_jax.checkpoint.convert",
                                                 description=__doc__,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))
  return run(parser.parse_args(argv))


def chat_template_of(src_dir) -> str:
  """The checkpoint's chat template: `sft_format` of processor_config.json ('deepseek' for Janus-Pro,
  'deepseek_old' for Janus-1.3B / JanusFlow); 'deepseek' when the file is absent (transformers layout)."""
  path = paths.resolve(src_dir) / "processor_config.json"
  if path.is_file():
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


__all__ = ["convert", "main", "add_arguments", "run", "IGNORED_PREFIXES", "CheckpointMismatchError",
           "MissingVAEError"]


if __name__ == "__main__":
  sys.exit(main())
