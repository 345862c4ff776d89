"""Where a CPU decode step of the bench model goes: the compiled loop taken apart, same run, same shapes.

  python bench/profile_ar_decode.py [--tokens 576] [--repeats 3] [--dtype float32] [--quantize int8]

The model and prompts of bench/bench_ar_decode.py (LLM hidden 512, 8 layers, vocab and codebook 16384, 2 prompts
with CFG = 4 rows). Each part runs as its own compiled `fori_loop` of `--tokens` iterations, so its ms/step is
what it costs inside the real loop:
  full      the whole AR loop (`ar_image.compiled_generate`, greedy)
  llm       the one-token LLM step (8 layers, KV cache read + write at the growing slot)
  head      the image head (hidden -> n_embed -> 16384 logits) + CFG combine + argmax
  embed     the next step's input (gen_embed + gen_aligner of the sampled code)
and the floors of this machine: the bytes one step reads (its weights, and the KV cache averaged over the loop's
cache phases) over the measured memory bandwidth (a streaming sum of a 512 MiB array), and the step's FLOPs over
the measured fp32 matmul peak.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import bench_ar_decode  # bench/bench_ar_decode.py: the bench model and prompts
import machine  # bench/machine.py
import timing  # bench/timing.py
from bench_train_flops import matmul_peak
from janus_jax import compile_options, quantization
from janus_jax.sampling import ar_image
from janus_jax.models.janus import JanusModel
from janus_jax.models.llama import KVCache, causal_mask
from janus_jax.sampling.ar_image import compiled_generate
from janus_jax.sampling.sample import cfg_combine


def _time(fn, repeats: int) -> float:
  return timing.median_seconds(lambda: jax.block_until_ready(fn()), repeats)


def memory_bandwidth(mib: int = 512, repeats: int = 5) -> float:
  """Bytes/s of a streaming reduction over a `mib` MiB float32 array (larger than any cache)."""
  x = jnp.ones((mib * 2 ** 20 // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  return x.nbytes / _time(lambda: total(x), repeats)


def parts(model: JanusModel, params, ids, n: int):
  """Jitted thunks, one per part; each runs `n` iterations."""
  cfg = model.cfg
  apply = lambda method, *a: model.apply({"params": params}, *a, method=method)
  rows, t = ids.shape
  p = rows // 2
  full = compiled_generate(model, greedy=True)
  args = (params, ids, jnp.ones(ids.shape, bool), jax.random.PRNGKey(0), jnp.float32(5.0), jnp.float32(1.0),
          jnp.float32(1.0))
  key_valid = jnp.ones((rows, t + n), bool)
  hidden0 = jnp.ones((rows, cfg.llm.hidden_size), jnp.dtype(cfg.llm.dtype))
  options = compile_options.decode_compiler_options(  # as the full loop
      cfg.llm.dtype, integer_dots=quantization.has_integer_dots(params))
  jit = lambda fn: jax.jit(fn, compiler_options=options)

  @jit
  def llm_loop(params):
    emb = jnp.ones((rows, 1, cfg.llm.hidden_size), jnp.dtype(cfg.llm.dtype))

    def step(i, carry):
      cache, acc = carry
      slot = t + i
      h, cache = model.apply({"params": params}, emb, jnp.full((rows, 1), slot), causal_mask(key_valid, 1, slot),
                             cache, slot, method=JanusModel.llm)
      return cache, acc + h[:, 0, 0]
    return jax.lax.fori_loop(0, n, step, (KVCache.zeros(cfg.llm, rows, t + n), jnp.zeros(rows)))[1]

  @jit
  def head_loop(params):
    def step(i, acc):
      logits = model.apply({"params": params}, hidden0 + acc[:, None], method=JanusModel.image_logits)
      tok = jnp.argmax(cfg_combine(logits[:p], logits[p:], 5.0), -1)
      return acc + jnp.concatenate([tok, tok]).astype(acc.dtype) * 1e-9
    return jax.lax.fori_loop(0, n, step, jnp.zeros(rows, hidden0.dtype))

  @jit
  def embed_loop(params):
    def step(i, acc):
      e = model.apply({"params": params}, (jnp.arange(rows) + i)[:, None] % cfg.image_token_size,
                      method=JanusModel.embed_image_tokens)
      return acc + e[:, 0, 0]
    return jax.lax.fori_loop(0, n, step, jnp.zeros(rows, hidden0.dtype))

  del apply
  return {"full": lambda: full(*args), "llm": lambda: llm_loop(params), "head": lambda: head_loop(params),
          "embed": lambda: embed_loop(params)}


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--tokens", type=int, default=576)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  ap.add_argument("--quantize", default=None, choices=sorted(quantization.QTYPES))
  args = ap.parse_args(argv)
  print(f"cpu: {machine.cpu_description()}; jax {jax.__version__}", flush=True)
  rng = np.random.default_rng(0)
  prompts = rng.integers(10, 1000, (2, 16))
  prompts[:, 0], prompts[:, -1] = 1, 7
  model, params, ids = bench_ar_decode._setup(args.tokens, prompts, args.dtype)  # pylint: disable=protected-access
  if args.quantize:
    params = quantization.quantize_weights(params, args.quantize)
  n = args.tokens
  results = {name: 1e3 * _time(fn, args.repeats) / n for name, fn in parts(model, params, ids, n).items()}
  leaves = lambda tree: jax.tree.leaves(tree, is_leaf=quantization.is_quantized_leaf)
  nbytes = lambda tree: sum(sum(x.nbytes for x in jax.tree.leaves(leaf)) for leaf in leaves(tree))
  step_weights = nbytes({k: v for k, v in params["language_model"]["model"].items() if k != "embed_tokens"}) + \
      nbytes(params["gen_head"]) + nbytes(params["gen_aligner"])
  shape = lambda leaf: getattr(getattr(leaf, "weights", leaf), "qvalue", leaf).shape
  macs = sum(np.prod(shape(leaf))
             for tree in (params["language_model"]["model"], params["gen_head"], params["gen_aligner"])
             for leaf in leaves(tree) if getattr(leaf, "ndim", 2) == 2)
  bounds = ar_image.cache_phases(n, ar_image.PHASES)  # the KV slots each phase's steps attend over
  slots = sum((b - a) * (ids.shape[1] + b) for a, b in zip(bounds, bounds[1:])) / n
  llm = model.cfg.llm
  step_cache = 2 * llm.num_layers * ids.shape[0] * llm.num_kv_heads * llm.resolved_head_dim * slots * \
      jnp.dtype(llm.dtype).itemsize
  bandwidth, peak = memory_bandwidth(), matmul_peak(1024)
  print(f"{args.dtype}{' + ' + args.quantize + ' weights' if args.quantize else ''}, {ids.shape[0]} rows, "
        f"{n} tokens; ms per step:")
  for name, ms in results.items():
    print(f"  {name:6s} {ms:7.2f}" + ("" if name == "full" else f"   ({ms / results['full']:.0%} of full)"))
  other = results["full"] - results["llm"] - results["head"] - results["embed"]
  print(f"  rest   {other:7.2f}   (cache phases, sampling bookkeeping, loop overhead)")
  step_bytes = step_weights + step_cache
  print(f"floors: read per step {step_weights / 2 ** 20:.1f} MiB of weights + {step_cache / 2 ** 20:.1f} MiB of KV "
        f"cache ({slots:.0f} slots on average) / {bandwidth / 1e9:.1f} GB/s = {1e3 * step_bytes / bandwidth:.2f} ms "
        f"({step_bytes / (1e-3 * results['full']) / 1e9:.1f} GB/s achieved); {2 * macs * ids.shape[0] / 1e6:.0f} MFLOP / "
        f"{peak / 1e9:.0f} GFLOP/s = {1e3 * 2 * macs * ids.shape[0] / peak:.2f} ms")


if __name__ == "__main__":
  main()
