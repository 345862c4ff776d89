"""Small local assets the tests create: a byte-level BPE tokenizer.json with the Janus special tokens."""
from __future__ import annotations

import json
import os

# Order fixes the ids: pad 0, BOS 1, EOS 2, <|User|> 3, <|Assistant|> 4, <image_placeholder> 5, <end_of_image> 6,
# <begin_of_image> 7 — matching the tiny transformers config (image_token_id 5, boi 7, pad 0, bos 1, eos 2).
SPECIAL_TOKENS = [
    "<\uff5c\u2581pad\u2581\uff5c>", "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>",
    "<|User|>", "<|Assistant|>", "<image_placeholder>", "<end_of_image>", "<begin_of_image>",
]
CORPUS = [
    "a red circle left of a blue square", "two green triangles", "what colour is the circle?",
    "You are a helpful language and vision assistant.", "How many shapes are there in the picture?",
    "a photo of a cat sitting on a mat", "draw a yellow star above a purple hexagon",
] * 5


def make_tiny_tokenizer(directory: str, vocab_size: int = 400) -> str:
  """Trains a byte-level BPE on CORPUS and writes tokenizer.json (+ special_tokens_map.json); returns the dir."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer)
  os.makedirs(directory, exist_ok=True)
  tok.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
    json.dump({"bos_token": SPECIAL_TOKENS[1], "eos_token": SPECIAL_TOKENS[2], "pad_token": SPECIAL_TOKENS[0]}, f)
  return directory


def make_tiny_checkpoint(directory: str, seed: int = 0) -> str:
  """A randomly initialised `janus_tiny` janus_jax checkpoint with the tiny tokenizer (no torch needed)."""
  import jax
  from janus_jax.checkpoint import store
  from janus_jax.configs import models
  from janus_jax.models.configs import JanusConfig
  from janus_jax.models.janus import init_params
  cfg = JanusConfig.from_dict(models.janus_tiny())
  params = init_params(cfg, jax.random.PRNGKey(seed))
  tok_dir = make_tiny_tokenizer(os.path.join(directory, "_tokenizer_src"))
  out = os.path.join(directory, "ckpt")
  store.save_checkpoint(out, params, cfg, tokenizer_dir=tok_dir, extra_info={"template": "deepseek"})
  return out
