r"""JanusFlow sampling time per image with and without the prompt KV cache (same model, same run, same noise).

  python bench/bench_flow_sampling.py                        # a mid-size random model, CPU friendly
  python bench/bench_flow_sampling.py --preset=janusflow_1_3b --dtype=bfloat16   # the released shape (GPU/TPU)
  python bench/bench_flow_sampling.py --checkpoint=workdir/demo_flow/model        # a trained model, real prompts

Both samplers are compiled once (excluded from the timing) and run `--repeats` times; the median is reported.
Without the cache every ODE step recomputes the prompt (the official loop); with it the prompt's keys/values are
computed once and each step runs only the 1 + N image-block positions, so the saving grows with the prompt length
relative to N (the image tokens). The outputs of the two samplers are compared as well.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import machine  # bench/machine.py

from janus_jax.configs import models
from janus_jax.models import janus, param_layout
from janus_jax.models.configs import JanusConfig
from janus_jax.models.janus_flow import JanusFlowModel
from janus_jax.sampling import flow_image


def mid_config() -> dict:
  """LLM 512 x 8 layers, 24x24 = 576 latent tokens of a 48x48x4 latent (the released geometry, small widths)."""
  return dict(
      llm=dict(vocab_size=4096, hidden_size=512, intermediate_size=1408, num_layers=8, num_heads=8, num_kv_heads=8,
               max_position_embeddings=2048),
      vision=dict(image_size=384, patch_size=16, width=64, depth=1, num_heads=4, mlp_dim=128),
      aligner=dict(kind="linear", input_dim=64, output_dim=512, depth=1),
      uvit=dict(channels=128, hidden_size=512, layers_in_middle=2),
      vae=dict(block_out_channels=(16, 16, 16, 16), layers_per_block=1, norm_num_groups=8),
      repa=dict(layer=2, hidden_dim=256, output_dim=64, depth=3),
      generation_mode="flow")


DEMO_PROMPTS = ("a red circle", "two blue squares", "a green triangle left of a yellow circle",
                "a purple square above a cyan triangle")


def time_call(call, repeats: int) -> tuple[float, float, np.ndarray]:
  """(compile-including first call seconds, median seconds of `repeats` calls, last output as numpy)."""
  t = time.perf_counter()
  call()
  first = time.perf_counter() - t
  samples = []
  for _ in range(repeats):
    t = time.perf_counter()
    out = np.asarray(call())
    samples.append(time.perf_counter() - t)
  return first, float(np.median(samples)), out


def bench_checkpoint(args) -> None:
  """End to end through `janus_jax.api` (tokenize, sample, VAE decode) on a saved model and real prompts."""
  from janus_jax import api  # pylint: disable=import-outside-toplevel
  pipe = api.load(args.checkpoint)
  if pipe.cfg.generation_mode != "flow":
    raise SystemExit(f"{args.checkpoint} is not a JanusFlow (generation_mode=flow) checkpoint.")
  prompts = list(args.prompts or DEMO_PROMPTS)
  print(f"device {jax.devices()[0].device_kind}, {args.checkpoint}: {pipe.cfg.num_image_tokens} image tokens, "
        f"{args.steps} Euler steps, {len(prompts)} prompts x {args.images} image(s) per call + CFG twins")
  out, times = {}, {}
  for cache in (True, False):
    call = lambda: pipe.generate(prompts, num_images=args.images, num_steps=args.steps, prompt_cache=cache,
                                 seed=0).latents
    compile_s, median, out[cache] = time_call(call, args.repeats)
    times[cache] = median / (len(prompts) * args.images)
    print(f"  prompt cache {'on ' if cache else 'off'}: {times[cache] * 1e3:8.1f} ms/image (median of "
          f"{args.repeats}; first call incl. compile {compile_s:.1f} s)")
  diff = float(np.abs(out[True] - out[False]).max())
  print(f"  -> speed-up {times[False] / times[True]:.2f}x; max |cached - recompute| latent = {diff:.2e}")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--preset", default="mid", choices=["mid", "janusflow_1_3b", "janusflow_tiny"])
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--prompt_len", type=int, nargs="+", default=[32, 256])
  ap.add_argument("--images", type=int, default=1, help="images per call (each with its unconditional twin)")
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--checkpoint", default=None, help="a saved JanusFlow model dir: time it end to end instead")
  ap.add_argument("--prompts", nargs="*", default=None, help="with --checkpoint (default: the demo prompts)")
  args = ap.parse_args()
  print(machine.describe())
  if args.checkpoint:
    bench_checkpoint(args)
    return
  model_dict = mid_config() if args.preset == "mid" else getattr(models, args.preset)()
  cfg = JanusConfig.from_dict(model_dict).with_dtypes(dtype=args.dtype)
  params = jax.jit(lambda r: janus.init_params(cfg, r))(jax.random.PRNGKey(0))
  params, cfg = param_layout.for_decoding(params, cfg)  # unrolled layers, one cache buffer each (as the pipeline)
  model = JanusFlowModel(cfg)
  print(f"device {jax.devices()[0].device_kind}, preset {args.preset}, dtype {args.dtype}, "
        f"{cfg.num_image_tokens} image tokens, {args.steps} Euler steps, {args.images} image(s) + CFG twins")
  for p_len in args.prompt_len:
    rng = np.random.default_rng(p_len)
    ids = rng.integers(10, cfg.llm.vocab_size, (args.images, p_len)).astype(np.int32)
    ids[:, 0] = 1
    valid = np.ones_like(ids, bool)
    z0 = rng.standard_normal(flow_image.latent_shape(cfg, args.images)).astype(np.float32)
    out, times = {}, {}
    for cache in (True, False):
      run = flow_image.compiled_flow_generate(model, num_steps=args.steps, prompt_cache=cache)
      call = lambda: run(params, jnp.asarray(ids), jnp.asarray(valid), jnp.asarray(z0), jnp.float32(2.0),
                         jnp.int32(0)).block_until_ready()
      compile_s, times[cache], out[cache] = time_call(call, args.repeats)
      print(f"  prompt {p_len:4d} tokens, prompt cache {'on ' if cache else 'off'}: "
            f"{times[cache] / args.images:7.3f} s/image (median of {args.repeats}; first call incl. compile "
            f"{compile_s:.1f} s)")
    diff = float(np.abs(out[True] - out[False]).max())
    print(f"  -> speed-up {times[False] / times[True]:.2f}x; max |cached - recompute| = {diff:.2e}")


if __name__ == "__main__":
  main()
