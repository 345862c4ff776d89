"""The demo's input pipeline alone: wall and CPU milliseconds per batch for each `input.read_threads`, same run.

  python bench/bench_input_pipeline.py [--config experiments/shapes_demo.py] [--data_dir DIR] [--batches 50]
      [--read_threads 0 16]

Builds the config's Shapes data in `--data_dir` (default: a temporary folder; an existing one is reused), then
iterates the training iterator the main job builds (`train.loop.data_iterator`: mixture, packing, batch size of the
config) without the prefetch thread, so wall and CPU time are those of making the batches. The CPU time counts
every thread of the process (grain's read threads too): it is what the pipeline takes from the training step's
cores. Prints the CPU model first.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from absl import flags

import machine  # bench/machine.py
from janus_jax import main as main_lib
from janus_jax.configs import common
from janus_jax.data.prepare import prepare
from janus_jax.processing.tokenizer import load_tokenizer
from janus_jax.train import loop
from janus_jax.train.inputs import model_config


def batch_cost(config, data: dict, read_threads: int, batches: int, warmup: int = 5) -> tuple[float, float]:
  """(wall ms, process CPU ms) per batch of the config's training iterator with `read_threads`."""
  config = config.copy_and_resolve_references()
  config.input.prefetch, config.input.read_threads = 0, read_threads
  it = loop.data_iterator(config, model_config(config), load_tokenizer(data["tokenizer"]),
                          [main_lib.shapes_source(config.data, data)])
  try:
    for _ in range(warmup):
      next(it)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
      next(it)
    return 1e3 * (time.perf_counter() - wall) / batches, 1e3 * (time.process_time() - cpu) / batches
  finally:
    it.close()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default="experiments/shapes_demo.py")
  p.add_argument("--data_dir", default="")
  p.add_argument("--batches", type=int, default=50)
  p.add_argument("--read_threads", type=int, nargs="+", default=[0, 16])
  args = p.parse_args(argv)
  flags.FLAGS.mark_as_parsed()
  print(f"cpu: {machine.cpu_description()}", flush=True)
  config = common.load_config(args.config)
  data_dir = args.data_dir or tempfile.mkdtemp(prefix="janus_shapes_")
  data = prepare(data_dir, config.data.config_name, config.data.vocab_size)
  print(f"{args.config}: batch {config.input.batch_size} x {config.input.seq_len} tokens, packing "
        f"{bool(config.input.packing.enabled)}, data {data_dir}", flush=True)
  for threads in args.read_threads:
    wall, cpu = batch_cost(config, data, threads, args.batches)
    print(f"read_threads={threads:3d}: {wall:6.1f} ms/batch wall, {cpu:6.1f} ms/batch CPU", flush=True)


if __name__ == "__main__":
  main()
