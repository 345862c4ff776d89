"""Image-token decode throughput: janus_jax's compiled AR loop vs transformers' `generate(generation_mode="image")`.

Same random config, same machine, same run (parity_references.md section 4): LLM hidden 512, 8 layers, 8 heads,
intermediate 1376, vocab 16384, codebook 16384, 576 image tokens, 2 prompts of 16 tokens with CFG (4 rows), fp32,
greedy. Prints tokens/s for both (median of --repeats runs after one warm-up/compile run) and the speed-up.

  python bench/bench_ar_decode.py [--repeats 3] [--skip-torch] [--tokens 576]
  python bench/bench_ar_decode.py --quantize int8   # float vs weight-only int8 janus_jax decode, same run
  python bench/bench_ar_decode.py --compare-xla-defaults --skip-torch

--compare-xla-defaults times janus_jax's loop again as XLA compiles it by default, without
`janus_jax.compile_options.decode_compiler_options()` (on CPU: every dot off YNNPACK), and checks the tokens agree.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from janus_jax.models.configs import JanusConfig
from janus_jax.models import param_layout
from janus_jax.models.janus import JanusModel, init_params
import machine  # bench/machine.py
import timing  # bench/timing.py
from janus_jax import compile_options, quantization
from janus_jax.sampling import ar_image
from janus_jax.sampling.ar_image import compiled_generate
from janus_jax.sampling.sample import cfg_combine

HIDDEN, LAYERS, HEADS, INTER, VOCAB, CODES = 512, 8, 8, 1376, 16384, 16384


def janus_config(tokens: int, dtype: str = "float32") -> JanusConfig:
  grid = int(tokens ** 0.5)
  cfg = JanusConfig.from_dict(dict(
      llm=dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_layers=LAYERS, num_heads=HEADS,
               num_kv_heads=HEADS, max_position_embeddings=1024),
      vision=dict(image_size=grid * 8, patch_size=8, width=64, depth=1, num_heads=4, mlp_dim=128),
      aligner=dict(input_dim=64, output_dim=HIDDEN),
      vq=dict(codebook_size=CODES, codebook_dim=8, base_channels=32, channel_mult=(1, 2), z_channels=32,
              num_res_blocks=1),
      gen_aligner=dict(input_dim=8, output_dim=HIDDEN),
      gen_head=dict(n_embed=HIDDEN, image_token_embed=HIDDEN, image_token_size=CODES)))
  return cfg if dtype == "float32" else cfg.with_dtypes(dtype, dtype)


def _setup(tokens: int, prompts: np.ndarray, dtype: str):
  cfg = janus_config(tokens, dtype)
  params = init_params(cfg, jax.random.PRNGKey(0))
  params, cfg = param_layout.for_decoding(params, cfg)  # What `janus_jax.load` does.
  uncond = np.where((np.arange(prompts.shape[1]) == 0) | (np.arange(prompts.shape[1]) == prompts.shape[1] - 1),
                    prompts, 0)
  return JanusModel(cfg), params, jnp.asarray(np.concatenate([prompts, uncond]))


def _time_loop(model, params, ids, repeats: int, label: str) -> tuple[float, np.ndarray]:
  run = compiled_generate(model, greedy=True)
  args = (params, ids, jnp.ones(ids.shape, bool), jax.random.PRNGKey(0), jnp.float32(5.0), jnp.float32(1.0),
          jnp.float32(1.0))
  t0 = time.perf_counter()
  codes = run(*args).block_until_ready()
  print(f"  {label} compile + first run: {time.perf_counter() - t0:.1f} s")
  return timing.median_seconds(lambda: run(*args).block_until_ready(), repeats, warmup=False), np.asarray(codes)


def bench_jax(tokens: int, prompts: np.ndarray, repeats: int, dtype: str = "float32") -> tuple[float, np.ndarray]:
  model, params, ids = _setup(tokens, prompts, dtype)
  return _time_loop(model, params, ids, repeats, "janus_jax")


def bench_quantized(tokens: int, prompts: np.ndarray, repeats: int, dtype: str, qtype: str) -> None:
  """Float and weight-only `qtype` decode of the same model in this run: time, logits error, token agreement."""
  model, params, ids = _setup(tokens, prompts, dtype)
  qparams = quantization.quantize_weights(params, qtype)
  fp_s, fp_codes = _time_loop(model, params, ids, repeats, dtype)
  q_s, q_codes = _time_loop(model, qparams, ids, repeats, qtype)
  p = prompts.shape[0]
  both = jnp.asarray(np.concatenate([fp_codes, fp_codes]))
  lf, lq = (np.asarray(ar_image.teacher_forced_logits(model, x, ids, both)) for x in (params, qparams))
  guided = lambda l: np.asarray(cfg_combine(l[:p], l[p:], 5.0))
  gf, gq = guided(lf), guided(lq)
  rel = np.abs(gq - gf).max() / (gf.max() - gf.min())
  top1 = np.mean(np.argmax(gq, -1) == np.argmax(gf, -1))
  free = np.mean(q_codes == fp_codes)
  first = [int(np.flatnonzero(a != b)[0]) if (a != b).any() else tokens for a, b in zip(q_codes, fp_codes)]
  print(f"{dtype:>12} : {1000 * fp_s / tokens:.2f} ms/step ({p * tokens / fp_s:.1f} image tok/s)")
  print(f"{qtype:>12} : {1000 * q_s / tokens:.2f} ms/step ({p * tokens / q_s:.1f} image tok/s), "
        f"{fp_s / q_s:.2f}x the {dtype} speed")
  print(f"  guided logits (teacher-forced on the {dtype} tokens): max |error| {rel:.2%} of their range; "
        f"same argmax at {top1:.1%} of the positions")
  print(f"  free-running greedy grids: {free:.1%} of the {tokens} tokens equal, first difference at token "
        f"{first} (random weights: near-uniform logits make greedy ties fragile)")


def bench_torch(tokens: int, prompts: np.ndarray, repeats: int, dtype: str = "float32") -> float:
  import torch
  from transformers import JanusConfig as HFConfig, JanusForConditionalGeneration
  torch.manual_seed(0)
  grid = int(tokens ** 0.5)
  cfg = HFConfig(
      text_config=dict(model_type="llama", vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER,
                       num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                       max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                       tie_word_embeddings=False),
      vision_config=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=grid * 8,
                         patch_size=8, num_image_tokens=tokens, projection_dim=HIDDEN, mlp_ratio=2.0),
      vq_config=dict(embed_dim=8, num_embeddings=CODES, latent_channels=32, base_channels=32,
                     channel_multiplier=[1, 2], num_res_blocks=1, projection_dim=HIDDEN,
                     image_token_embed_dim=HIDDEN),
      image_token_id=5, tie_word_embeddings=False)
  model = JanusForConditionalGeneration(cfg).eval().to(getattr(torch, dtype))
  model.generation_config.pad_token_id = 0
  model.generation_config.bos_token_id = 1
  model.generation_config.generation_kwargs = {"boi_token_id": int(prompts[0, -1])}
  ids = torch.from_numpy(prompts).long()

  def once():
    with torch.no_grad():
      return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                            do_sample=False, guidance_scale=5.0)

  t0 = time.perf_counter()
  once()
  print(f"  transformers warm-up run: {time.perf_counter() - t0:.1f} s")
  return timing.median_seconds(once, repeats, warmup=False)


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--tokens", type=int, default=576)
  ap.add_argument("--skip-torch", action="store_true")
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                  help="params and compute dtype of both implementations")
  ap.add_argument("--compare-xla-defaults", action="store_true",
                  help="also time janus_jax's loop without janus_jax.compile_options' decode choices")
  ap.add_argument("--quantize", default=None, choices=sorted(quantization.QTYPES),
                  help="instead: janus_jax float vs weight-only quantized decode of the same model, same run")
  args = ap.parse_args()
  rng = np.random.default_rng(0)
  prompts = rng.integers(10, 1000, (2, 16))
  prompts[:, 0], prompts[:, -1] = 1, 7
  n = prompts.shape[0] * args.tokens
  if jax.default_backend() == "cpu":
    print(f"cpu: {machine.cpu_description()}")
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); {n} image tokens per run "
        f"({prompts.shape[0]} prompts x {args.tokens}, CFG => {2 * prompts.shape[0]} rows)")
  print(f"dtype: {args.dtype}")
  if args.quantize:
    bench_quantized(args.tokens, prompts, args.repeats, args.dtype, args.quantize)
    return
  print(f"decode compiler options: {compile_options.decode_compiler_options(args.dtype)}")
  jax_s, codes = bench_jax(args.tokens, prompts, args.repeats, args.dtype)
  print(f"janus_jax    : {jax_s:.2f} s  -> {n / jax_s:7.1f} image tok/s  ({1000 * jax_s / args.tokens:.2f} ms/step)")
  if args.compare_xla_defaults:
    with compile_options.xla_defaults():
      default_s, default_codes = bench_jax(args.tokens, prompts, args.repeats, args.dtype)
    print(f"XLA defaults : {default_s:.2f} s  -> {n / default_s:7.1f} image tok/s  "
          f"({1000 * default_s / args.tokens:.2f} ms/step); the decode options are {default_s / jax_s:.2f}x as "
          f"fast; tokens {'identical' if np.array_equal(codes, default_codes) else 'DIFFER'}")
  if not args.skip_torch:
    torch_s = bench_torch(args.tokens, prompts, args.repeats, args.dtype)
    print(f"transformers : {torch_s:.2f} s  -> {n / torch_s:7.1f} image tok/s  "
          f"({1000 * torch_s / args.tokens:.2f} ms/step)")
    print(f"speed-up     : {torch_s / jax_s:.2f}x")


if __name__ == "__main__":
  main()
