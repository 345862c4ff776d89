"""The demo's train step against this machine's fp32 matmul peak, same run.

  python bench/bench_train_flops.py [--config experiments/shapes_demo.py] [--steps 20] [--compare-xla-defaults]

Prints the CPU (model, vector extensions), the measured fp32 matmul peak (a 2048^3 `jnp.dot`, median of repeats),
then the train step of the config (its model, batch and sequence length; random weights, a synthetic batch of its
shapes, with as many understanding-image slots per sequence as packing gives): ms/step, steps/s, FLOPs per step
(XLA's cost analysis of the step with its layer scans unrolled) and the achieved FLOP/s as a share of that peak;
then the step of the VQ tokenizer the config trains first (section `vq`: its batch of random images), ms/step.
--compare-xla-defaults times both steps again without `janus_jax.compile_options`'s choices (XLA's defaults, plain
autodiff), same run, and prints the ratios.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import machine  # bench/machine.py
import timing  # bench/timing.py
from janus_jax import compile_options, plan, sharding
from janus_jax.configs import common
from janus_jax.train import batch as batch_lib, state as state_lib, step as step_lib, vq_trainer
from janus_jax.train.inputs import model_config


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of a compiled fp32 n x n x n matmul (median)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  dot = jax.jit(lambda x, y: jnp.dot(x, y, precision=jax.lax.Precision.HIGHEST))
  return 2 * n ** 3 / timing.median_seconds(lambda: dot(a, b).block_until_ready(), repeats)


def train_step_rate(config, steps: int) -> tuple[float, float]:
  """(seconds per step, FLOPs per step) of the train step of `config` (a spec "experiments/x.py[:arg]" or a
  ConfigDict) on a synthetic batch of its shapes, the whole batch in one forward/backward."""
  config = common.load_config(config) if isinstance(config, str) else config
  cfg = model_config(config)
  train = dict(config.train.to_dict(), pad_id=0, grad_accum_steps=1, max_rows_per_device=None)
  mesh = sharding.make_mesh([tuple(x) for x in config.mesh])
  rules = [tuple(r) for r in config.sharding_rules]
  shardings = state_lib.state_shardings(cfg, config.optim, mesh, rules)
  state = state_lib.create_sharded_train_state(cfg, config.optim, shardings, rng=jax.random.PRNGKey(0))
  packed = bool(config.input.packing.enabled) if "packing" in config.input else False
  batch = batch_lib.synthetic_batch(cfg, int(config.input.batch_size), int(config.input.seq_len), 0, gen_pixels=True,
                                    segments=packed)
  if packed:  # a packed sequence has `max_und_images` image slots (SigLIP encodes them all), as the real batches
    slots = int(config.input.packing.get("max_und_images", 2)) - batch["und_pixels"].shape[1]
    batch["und_pixels"] = np.pad(batch["und_pixels"], [(0, 0), (0, max(slots, 0))] + [(0, 0)] * 3)
  batch_sharding = step_lib.batch_sharding(mesh)
  batch = jax.device_put(batch, batch_sharding)
  run = step_lib.compile_train_step(step_lib.make_train_step(cfg, train), shardings, batch_sharding, mesh, rules)
  rng = jax.random.PRNGKey(1)
  holder = [state]

  def once():
    holder[0], metrics = run(holder[0], batch, rng)
    jax.block_until_ready(metrics)

  seconds = timing.median_seconds(once, steps)
  state = holder[0]
  abstract = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)
  flops = plan.step_flops(cfg, config.optim, train, abstract(state), abstract(batch),
                          jax.ShapeDtypeStruct((2,), "uint32"), mesh, rules)
  return seconds, flops


def vq_step_seconds(config, steps: int) -> float | None:
  """Seconds per step of training the VQ tokenizer of `config` (its `vq` section's batch, random images in [-1, 1]);
  None when the config trains no VQ."""
  config = common.load_config(config) if isinstance(config, str) else config
  if "vq" not in config or "vq" not in config.model:
    return None
  janus = model_config(config)
  cfg, size = janus.vq, janus.generated_image_size
  model, tx, step, _ = vq_trainer.make_step(cfg, float(config.vq.lr), 10, int(config.vq.steps))
  x = jax.random.uniform(jax.random.PRNGKey(0), (int(config.vq.batch_size), size, size, 3), minval=-1, maxval=1)
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  holder = [params, tx.init(params)]

  def once():
    holder[0], holder[1], metrics = step(holder[0], holder[1], x)
    jax.block_until_ready(metrics)

  return timing.median_seconds(once, steps)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default="experiments/shapes_demo.py")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--matmul-size", type=int, default=2048)
  p.add_argument("--compare-xla-defaults", action="store_true",
                 help="also time both steps without janus_jax.compile_options's choices")
  args = p.parse_args(argv)
  print(f"cpu: {machine.cpu_description()}; jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} "
        "device(s)", flush=True)
  peak = matmul_peak(args.matmul_size)
  print(f"fp32 matmul peak ({args.matmul_size}^3, highest precision): {peak / 1e9:.1f} GFLOP/s", flush=True)
  seconds, flops = train_step_rate(args.config, args.steps)
  print(f"train step ({args.config}): {1e3 * seconds:.1f} ms/step ({1 / seconds:.2f} steps/s), "
        f"{flops / 1e9:.2f} GFLOP/step -> {flops / seconds / 1e9:.1f} GFLOP/s = {flops / seconds / peak:.1%} of the "
        "matmul peak", flush=True)
  vq = vq_step_seconds(args.config, args.steps)
  if vq is not None:
    print(f"VQ tokenizer step ({args.config}): {1e3 * vq:.1f} ms/step", flush=True)
  if args.compare_xla_defaults:
    with compile_options.xla_defaults():
      plain, _ = train_step_rate(args.config, args.steps)
      plain_vq = vq_step_seconds(args.config, args.steps)
    print(f"with XLA's defaults (no janus_jax.compile_options): train step {1e3 * plain:.1f} ms/step "
          f"({plain / seconds:.2f}x the time)" + (f", VQ step {1e3 * plain_vq:.1f} ms/step "
                                                   f"({plain_vq / vq:.2f}x the time)" if vq is not None else ""))


if __name__ == "__main__":
  main()
