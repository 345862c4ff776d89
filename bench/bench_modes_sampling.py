r"""Text-to-image sampling time per image for each generation mode, with and without streaming previews (same run).

  python bench/bench_modes_sampling.py                 # the demo's three models (shapes_demo.py:gen=...), random weights
  python bench/bench_modes_sampling.py --checkpoint workdir/demo/model --checkpoint workdir/demo_flow/model
  python bench/bench_modes_sampling.py --fast          # tiny models, seconds (the CI smoke run)

Each mode samples `--prompts` prompts x `--num-images` images at its own defaults (ar_vq: CFG 5, temperature 1;
flow: CFG 2, 30 Euler steps; ar_continuous: CFG 2, 10 head steps per token) through `janus_jax.api` (tokenize,
sample, decode), compiled once before timing; the median of `--repeats` calls is reported. Then the same call with
`preview_every = steps / --frames` (frames decoded inside the loop and sent to the host) gives the preview overhead.
Sampling time does not depend on the weights' values, so random weights time the same program as trained ones.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import jax
import numpy as np

import machine  # bench/machine.py
import timing  # bench/timing.py

from janus_jax import api
from janus_jax.configs.common import load_config
from janus_jax.data.prepare import train_shapes_tokenizer
from janus_jax.data.shapes import ShapesSpec
from janus_jax.models.configs import JanusConfig
from janus_jax.processing.tokenizer import load_tokenizer
from janus_jax.train.state import init_model_params

MODES = ("ar_vq", "flow", "ar_continuous")
PROMPTS = ("a red circle", "two blue squares", "a green triangle left of a yellow circle",
           "a purple square above a cyan triangle")


def demo_pipeline(gen: str, fast: bool, tokenizer) -> api.JanusPipeline:
  """The demo's model of mode `gen` (its config, random weights) with a Shapes tokenizer."""
  config = load_config(f"experiments/shapes_demo.py:gen={gen}" + (",fast" if fast else ""))
  cfg = JanusConfig.from_dict(config.model.to_dict())
  return api.JanusPipeline(init_model_params(cfg, jax.random.PRNGKey(0)), cfg, tokenizer, "deepseek")


def bench(pipe: api.JanusPipeline, name: str, args) -> None:
  prompts = list(PROMPTS[:args.prompts])
  n = len(prompts) * args.num_images
  steps = pipe.cfg.mode.sampling_steps(pipe.cfg)
  every = max(1, -(-steps // args.frames))
  frames = []

  def plain():
    return pipe.generate(prompts, num_images=args.num_images, seed=0).images

  def previewed():
    frames.clear()
    return pipe.generate(prompts, num_images=args.num_images, seed=0, preview_every=every,
                         on_preview=lambda step, x: frames.append(step)).images

  base = timing.median_seconds(plain, args.repeats)
  with_preview = timing.median_seconds(previewed, args.repeats)
  same = np.array_equal(plain(), previewed())
  print(f"{name:<40s} {pipe.cfg.generation_mode:<14s} {1e3 * base / n:9.1f} ms/image   previews every {every} of "
        f"{steps} steps ({len(frames)} frames): {1e3 * with_preview / n:9.1f} ms/image = "
        f"{with_preview / base:5.2f}x   same images: {same}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", action="append", default=[], help="a saved model (repeatable); default: the "
                      "demo's three models with random weights")
  parser.add_argument("--modes", default=",".join(MODES), help="demo models to time (comma-separated)")
  parser.add_argument("--fast", action="store_true", help="the demo configs' fast (tiny) models")
  parser.add_argument("--prompts", type=int, default=4)
  parser.add_argument("--num-images", type=int, default=4, help="images per prompt")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--frames", type=int, default=4, help="preview frames per sample")
  args = parser.parse_args()
  print(machine.describe())
  if not 1 <= args.prompts <= len(PROMPTS):
    parser.error(f"--prompts must be in [1, {len(PROMPTS)}]")
  print(f"jax {jax.__version__}; {args.prompts} prompts x {args.num_images} images, median of {args.repeats}")
  if args.checkpoint:
    for path in args.checkpoint:
      bench(api.load(path), path, args)
    return
  with tempfile.TemporaryDirectory() as tmp:
    tokenizer = load_tokenizer(train_shapes_tokenizer(os.path.join(tmp, "tok"), ShapesSpec(), num_scenes=200))
    for gen in args.modes.split(","):
      if gen not in MODES:
        parser.error(f"--modes: unknown mode {gen!r}; valid: {', '.join(MODES)}")
      bench(demo_pipeline(gen, args.fast, tokenizer), f"shapes_demo.py:gen={gen}" + (",fast" if args.fast else ""),
            args)


if __name__ == "__main__":
  main()
