"""Data preparation for the embedded default: the Shapes TFDS dataset and a sentencepiece tokenizer trained on
its text (captions, questions, answers and the chat-template words), with the Janus special tokens.

    python -m janus_jax.data.prepare --data_dir=workdir/data [--config=default]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from janus_jax import paths
from janus_jax.data import shapes
from janus_jax.processing import chat
from janus_jax.processing.tokenizer import train_sentencepiece


def shapes_texts(spec: shapes.ShapesSpec, num: int, seed: int = 0) -> list[str]:
  """Captions, questions and answers of `num` training scenes, plus the template phrases the rows contain."""
  texts = []
  for s in shapes.split_seeds("train", num, spec):
    ex = shapes.make_example(int(s), spec)
    texts.extend(ex["captions"])
    texts.extend(ex["qa"]["question"])
    texts.extend(" " + a for a in ex["qa"]["answer"])
  for name in ("deepseek", "deepseek_old"):
    texts.append(chat.understanding_prompt("what colour is it?", name, system_prompt=""))
    texts.append(chat.generation_prompt("a red circle", name))
  texts.append(shapes.DESCRIBE_PROMPT)
  np.random.default_rng(seed).shuffle(texts)
  return texts


def train_shapes_tokenizer(out_dir: str, spec: shapes.ShapesSpec, vocab_size: int = 512, num_scenes: int = 2000) -> str:
  """Trains the Shapes sentencepiece model into `out_dir/tokenizer.model` (local or remote) unless it is there;
  returns the directory."""
  out = paths.resolve(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  if not (out / "tokenizer.model").exists():
    train_sentencepiece(shapes_texts(spec, num_scenes), os.fspath(out / "tokenizer"), vocab_size)
  return out_dir


def prepare(data_dir: str, config_name: str = "default", vocab_size: int = 512, **split_sizes) -> dict:
  """Builds janus_shapes/<config_name> in `data_dir` (local or remote) and its tokenizer in `data_dir/tokenizer`;
  returns the absolute paths."""
  from janus_jax.data import shapes_tfds  # pylint: disable=import-outside-toplevel
  data_dir = paths.resolve(data_dir)
  builder = shapes_tfds.prepare_shapes(os.fspath(data_dir), config_name=config_name, **split_sizes)
  spec = shapes_tfds.spec_of(builder)
  tok_dir = train_shapes_tokenizer(os.fspath(data_dir / "tokenizer"), spec, vocab_size)
  return {"data_dir": os.fspath(data_dir), "tfds_name": f"janus_shapes/{config_name}", "tokenizer": tok_dir,
          "spec": spec}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data_dir", required=True)
  ap.add_argument("--config", default="default")
  ap.add_argument("--vocab_size", type=int, default=512)
  args = ap.parse_args(argv)
  out = prepare(args.data_dir, args.config, args.vocab_size)
  print({k: v for k, v in out.items() if k != "spec"})
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
