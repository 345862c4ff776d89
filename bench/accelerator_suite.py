"""Speed and memory at the released shapes, random weights in bfloat16, against the device's floors.

  python bench/accelerator_suite.py                 # on a GPU / TPU: every case at the released shapes
  python bench/accelerator_suite.py --size tiny     # the CPU smoke run (CI): same code, tiny shapes
  python bench/accelerator_suite.py --only decode   # decode | flow | train (repeatable)
  python bench/accelerator_suite.py --only decode --quantize int8   # also int8 weights (int8_dynamic too)

Cases (each in its own process, so each peak-memory figure is its own):
  decode  Janus-Pro-1B and -7B AR image decode, 576 tokens, CFG (2 rows per image), 1 and 16 images: ms per step
          against the HBM floor (bytes each step reads: decode weights + the KV cache at the mean context).
  flow    JanusFlow-1.3B, 30 Euler steps with CFG, prompt KV cache: ms per image against the compute floor.
  train   Janus-Pro-1B train step (stage-2 trainable set, rows of 4096 tokens): tokens/s and MFU (FLOPs from XLA's
          cost analysis of the step, remat recomputation included, over the device's dense bf16 peak).
Prints the device, then one line per case. Floors need the device's bandwidth and peak (DEVICE_PEAKS); on other
devices (and on CPU) they print as n/a.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import timing  # bench/timing.py

# device_kind substring -> (HBM bytes/s, dense bf16 FLOP/s); performance.md section 4.1.
DEVICE_PEAKS = {"H100": (3.35e12, 989e12), "H200": (4.8e12, 989e12), "A100": (2.0e12, 312e12),
                "TPU v5p": (2.76e12, 459e12), "TPU v5 lite": (0.82e12, 197e12), "TPU v6": (1.64e12, 918e12)}
SIZES = {
    "released": dict(decode=(("janus_pro_1b", (1, 16)), ("janus_pro_7b", (1, 16))), flow="janusflow_1_3b",
                     train="janus_pro:1b", seq_len=4096, train_rows=1, steps=30, repeats=3),
    "tiny": dict(decode=(("janus_tiny", (2,)),), flow="janusflow_tiny", train="janus_pro:shapes", seq_len=64,
                 train_rows=2, steps=3, repeats=1),
}
PROMPT_TOKENS = 32


def _peaks():
  import jax  # pylint: disable=import-outside-toplevel
  kind = jax.devices()[0].device_kind
  return next((v for k, v in DEVICE_PEAKS.items() if k.lower() in kind.lower()), (None, None))


def _peak_memory() -> int | None:
  import jax  # pylint: disable=import-outside-toplevel
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _model(name: str, dtype: str = "bfloat16"):
  from janus_jax.configs import models  # pylint: disable=import-outside-toplevel
  from janus_jax.models.configs import JanusConfig  # pylint: disable=import-outside-toplevel
  return JanusConfig.from_dict(getattr(models, name)()).with_dtypes(dtype, dtype, "default")


def _bytes(tree) -> int:
  """Bytes of a param tree (quantized kernels count their int8 values and scales)."""
  import jax  # pylint: disable=import-outside-toplevel
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def _llm_params(params) -> int:
  """Weights of the LLM's layers (every token's matmuls; not the embedding table)."""
  import jax  # pylint: disable=import-outside-toplevel
  llm = params["language_model"]["model"]
  return int(sum(x.size for k, v in llm.items() if k != "embed_tokens" for x in jax.tree.leaves(v)))


def _prompts(rows: int, vocab: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  ids = np.random.default_rng(0).integers(10, min(vocab, 1000), (rows, PROMPT_TOKENS)).astype(np.int32)
  ids[:, 0] = 1
  return ids


def case_decode(name: str, images: int, repeats: int, qtype: str = "none") -> dict:
  """Greedy AR decode of `images` images with CFG (weights quantized to `qtype` unless "none"): ms per step and the
  HBM floor of the bytes it reads."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from janus_jax.models import param_layout  # pylint: disable=import-outside-toplevel
  from janus_jax.models.janus import JanusModel, init_params  # pylint: disable=import-outside-toplevel
  from janus_jax.sampling.ar_image import compiled_generate  # pylint: disable=import-outside-toplevel
  cfg = _model(name)
  params = jax.jit(lambda k: init_params(cfg, k))(jax.random.PRNGKey(0))
  params, cfg = param_layout.for_decoding(params, cfg)
  if qtype != "none":
    from janus_jax import quantization  # pylint: disable=import-outside-toplevel
    params = quantization.quantize_weights(params, qtype)
  ids = _prompts(images, cfg.llm.vocab_size)
  ids = jnp.asarray(ids.tolist() + [[1] + [0] * (PROMPT_TOKENS - 1)] * images)  # conditional + unconditional rows
  run = compiled_generate(JanusModel(cfg), greedy=True)
  args = (params, ids, jnp.ones(ids.shape, bool), jax.random.PRNGKey(0), jnp.float32(5.0), jnp.float32(1.0),
          jnp.float32(1.0))
  seconds = timing.median_seconds(lambda: run(*args).block_until_ready(), repeats)
  n = cfg.num_image_tokens
  read = {k: v for k, v in params.items() if k not in ("vision_model", "aligner", "gen_vision_model")}
  weights = _bytes(read.get("language_model", {}).get("model", {})) + sum(
      _bytes(read[k]) for k in ("gen_head", "gen_aligner", "gen_embed") if k in read)
  weights -= _bytes(read.get("language_model", {}).get("model", {}).get("embed_tokens", {}))  # gathered, not read
  llm = cfg.llm
  kv_per_token = 2 * llm.num_layers * llm.num_kv_heads * llm.resolved_head_dim * 2  # bf16 K and V
  step_bytes = weights + 2 * images * (PROMPT_TOKENS + n / 2) * kv_per_token
  bandwidth, _ = _peaks()
  suffix = "" if qtype == "none" else f", {qtype} weights"
  return dict(case=f"decode {name} {images} image(s) ({2 * images} rows){suffix}", ms_per_step=1e3 * seconds / n,
              floor_ms=1e3 * step_bytes / bandwidth if bandwidth else None, seconds_per_image=seconds / images)


def case_flow(name: str, steps: int, repeats: int) -> dict:
  """One JanusFlow image (CFG, `steps` Euler steps, prompt cache): ms per image and the compute floor."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from janus_jax.models import param_layout  # pylint: disable=import-outside-toplevel
  from janus_jax.models.janus import init_params  # pylint: disable=import-outside-toplevel
  from janus_jax.models.janus_flow import JanusFlowModel  # pylint: disable=import-outside-toplevel
  from janus_jax.sampling import flow_image  # pylint: disable=import-outside-toplevel
  cfg = _model(name)
  params = jax.jit(lambda k: init_params(cfg, k))(jax.random.PRNGKey(0))
  params, cfg = param_layout.for_decoding(params, cfg)
  model = JanusFlowModel(cfg)
  ids = jnp.asarray(_prompts(1, cfg.llm.vocab_size))
  valid = jnp.ones(ids.shape, bool)
  z0 = jax.random.normal(jax.random.PRNGKey(1), flow_image.latent_shape(cfg, 1))
  args = (params, ids, valid, z0, jnp.float32(2.0), jnp.int32(0))
  run = flow_image.compiled_flow_generate(model, num_steps=steps)
  seconds = timing.median_seconds(lambda: run(*args).block_until_ready(), repeats)
  # XLA counts a loop body once: a 1-step program is prefill + one step; the prefill is counted once in total.
  one = flow_image.compiled_flow_generate(model, num_steps=1).lower(*args).cost_analysis()["flops"]
  prefill = 2 * 2 * (ids.shape[1] - 1) * _llm_params(params)  # 2 FLOPs per weight, 2 rows, the prompt tokens
  flops = prefill + steps * (one - prefill)
  _, peak = _peaks()
  return dict(case=f"flow {name} 1 image, {steps} steps, CFG", ms_per_image=1e3 * seconds, tflop_per_image=flops / 1e12,
              floor_ms=1e3 * flops / peak if peak else None)


def case_train(name: str, seq_len: int, rows: int, repeats: int) -> dict:
  """One train step of the stage-2 config of `name` ("family:size"), `rows` rows of `seq_len` tokens per device
  (und / t2i / text rows), bf16 compute, FSDP over every device: tokens/s and MFU."""
  import jax  # pylint: disable=import-outside-toplevel
  import bench_train_flops  # pylint: disable=import-outside-toplevel  # bench/bench_train_flops.py
  from janus_jax.configs import common  # pylint: disable=import-outside-toplevel
  family, size = name.split(":")
  config = common.load_config(f"experiments/janus_stages.py:stage=2,family={family},size={size},dtype=bfloat16,"
                              "precision=default")
  config.input.batch_size, config.input.seq_len = rows * jax.device_count(), seq_len
  config.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
  seconds, flops = bench_train_flops.train_step_rate(config, repeats)
  _, peak = _peaks()
  tokens = config.input.batch_size * seq_len
  return dict(case=f"train {name} stage 2, {rows} row(s) x {seq_len} tokens per device", tokens_per_s=tokens / seconds,
              step_ms=1e3 * seconds, mfu=flops / seconds / (peak * jax.device_count()) if peak else None)


def run_case(spec: list[str]) -> dict:
  kind, *rest = spec
  if kind == "decode":
    out = case_decode(rest[0], int(rest[1]), int(rest[2]), rest[3] if len(rest) > 3 else "none")
  elif kind == "flow":
    out = case_flow(rest[0], int(rest[1]), int(rest[2]))
  else:
    out = case_train(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
  peak = _peak_memory()
  out["peak_gib"] = peak / 2 ** 30 if peak is not None else None
  return out


def _fmt(x, spec=".2f", suffix=""):
  return "n/a" if x is None else f"{x:{spec}}{suffix}"


def line(r: dict) -> str:
  if "ms_per_step" in r:
    ratio = r["ms_per_step"] / r["floor_ms"] if r["floor_ms"] else None
    body = (f"{r['ms_per_step']:.2f} ms/step (floor {_fmt(r['floor_ms'])} ms, {_fmt(ratio, '.2f', 'x')}), "
            f"{r['seconds_per_image']:.3f} s/image")
  elif "ms_per_image" in r:
    ratio = r["ms_per_image"] / r["floor_ms"] if r["floor_ms"] else None
    body = (f"{r['ms_per_image']:.1f} ms/image ({r['tflop_per_image']:.3g} TFLOP; compute floor "
            f"{_fmt(r['floor_ms'], '.1f')} ms, {_fmt(ratio, '.2f', 'x')})")
  else:
    body = f"{r['tokens_per_s']:.0f} tokens/s, {r['step_ms']:.0f} ms/step, MFU {_fmt(r['mfu'], '.1%')}"
  return f"{r['case']}: {body}; peak memory {_fmt(r['peak_gib'], '.1f', ' GiB')}"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--size", default="released", choices=sorted(SIZES))
  p.add_argument("--only", action="append", choices=["decode", "flow", "train"], default=None)
  p.add_argument("--json", default=None, help="also write the results here")
  p.add_argument("--quantize", action="append", default=[], choices=["int8", "int8_dynamic"],
                 help="also run every decode case with these weights (repeatable)")
  p.add_argument("--case", nargs="+", default=None, help=argparse.SUPPRESS)  # one case, in this process
  args = p.parse_args(argv)
  if args.case:
    print("RESULT " + json.dumps(run_case(args.case)), flush=True)
    return 0
  import jax  # pylint: disable=import-outside-toplevel
  s = SIZES[args.size]
  bandwidth, peak = _peaks()
  print(f"device: {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}); HBM "
        f"{_fmt(bandwidth and bandwidth / 1e12, '.2f', ' TB/s')}, bf16 peak {_fmt(peak and peak / 1e12, '.0f', ' TFLOP/s')}"
        f"; shapes: {args.size}", flush=True)
  cases = []
  only = args.only or ["decode", "flow", "train"]
  if "decode" in only:
    cases += [["decode", name, str(n), str(s["repeats"]), q] for name, counts in s["decode"] for n in counts
              for q in ["none"] + args.quantize]
  if "flow" in only:
    cases.append(["flow", s["flow"], str(s["steps"]), str(s["repeats"])])
  if "train" in only:
    cases.append(["train", s["train"], str(s["seq_len"]), str(s["train_rows"]), str(s["repeats"])])
  results = []
  for case in cases:
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", *case], capture_output=True,
                          text=True)
    found = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    if done.returncode or not found:
      print(f"{' '.join(case)}: failed\n{done.stderr[-3000:]}", flush=True)
      return 1
    results.append(json.loads(found[-1][len("RESULT "):]))
    print(line(results[-1]), flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
