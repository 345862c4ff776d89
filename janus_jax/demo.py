"""`make demo`: the main job on the embedded default, end to end, on CPU.

Until the training pipeline lands (issue 3), the demo exercises the inference stack on a locally built model:
it writes a tiny randomly initialised Janus checkpoint with a locally trained BPE tokenizer (no network),
reloads it through `janus_jax.load`, runs compiled text-to-image generation with CFG and compiled
understanding, and writes a PNG grid, the token grid and a JSON summary to the work directory it prints.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np


def _tokenizer(directory: str) -> str:
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from janus_jax.processing import tokenizer as tok_lib
  specials = [tok_lib.PAD_TOKEN, tok_lib.BOS_TOKEN, tok_lib.EOS_TOKEN, "<|User|>", "<|Assistant|>",
              tok_lib.IMAGE_PLACEHOLDER, tok_lib.END_OF_IMAGE, tok_lib.BEGIN_OF_IMAGE]
  corpus = ["a red circle left of a blue square", "two green triangles", "what colour is the shape?",
            "You are a helpful language and vision assistant."] * 8
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  os.makedirs(directory, exist_ok=True)
  tok.save(os.path.join(directory, "tokenizer.json"))
  return directory


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", default="workdir/demo")
  args = ap.parse_args(argv)
  from PIL import Image
  import janus_jax
  from janus_jax.checkpoint import store
  from janus_jax.cli import image_grid
  from janus_jax.configs import models
  from janus_jax.models.configs import JanusConfig
  from janus_jax.models.janus import init_params, param_count

  t0 = time.time()
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)
  cfg = JanusConfig.from_dict(models.janus_tiny())
  ckpt = os.path.join(workdir, "checkpoint")
  if not store.is_checkpoint(ckpt):
    store.save_checkpoint(ckpt, init_params(cfg, jax.random.PRNGKey(0)), cfg,
                          tokenizer_dir=_tokenizer(os.path.join(workdir, "tokenizer_src")),
                          extra_info={"template": "deepseek"})
  pipe = janus_jax.load(ckpt)
  prompts = ["a red circle left of a blue square", "two green triangles"]
  out = pipe.generate(prompts, num_images=4, seed=0, progress=True)
  Image.fromarray(image_grid(out.images, cols=4)).resize((512, 256), Image.NEAREST).save(
      os.path.join(workdir, "samples.png"))
  np.save(os.path.join(workdir, "tokens.npy"), out.tokens)
  answers = pipe.understand([out.images[0]], ["what colour is the shape?"], max_new_tokens=8)
  summary = dict(params=param_count(cfg), prompts=prompts, image_tokens=out.tokens.shape, answer=answers[0],
                 seconds=round(time.time() - t0, 1), note="random weights: the pictures are noise by design")
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, default=str)
  print(json.dumps(summary, indent=2, default=str))
  print(f"demo outputs written to {workdir}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
