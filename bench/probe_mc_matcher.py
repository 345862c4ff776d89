r"""Can the Shapes-demo LLM learn to pick an option's letter? A text-only probe of the multiple-choice "matcher".

Each row is a two-turn text conversation about a random Shapes scene (no image): the open question with its true
answer, then the same question with lettered options (the dataset's multiple-choice questions, VLMEvalKit style):

  <|User|>: What shape is the red object?\n\n<|Assistant|>: circle<eos>
  <|User|>: What shape is the red object?\nA. square\nB. circle\nC. triangle\nAnswer with ...\n\n<|Assistant|>: B<eos>

Only the letter (and its EOS) is a loss target, so the one skill trained is finding the given answer among the
options and copying its letter. The LLM is the demo's (`experiments/shapes_demo.py` model.llm, trained from scratch)
and the optimizer the demo's AdamW / cosine schedule at `--lr`. Prints the letter accuracy per question kind on 400
held-out rows every 100 steps (chance: colour / count 0.25, shape 0.33, position ~0.4).

  python bench/probe_mc_matcher.py --lr=2.5e-4          # ~4.5 min on 2 CPU cores
  python bench/probe_mc_matcher.py --lr=2e-3            # the demo's rate
"""
from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from janus_jax.configs.common import load_config
from janus_jax.data import shapes
from janus_jax.data.examples import RowBuilder, RowSpec
from janus_jax.data.prepare import train_shapes_tokenizer
from janus_jax.models.configs import LlamaConfig
from janus_jax.models.llama import LlamaForCausalLM, causal_mask
from janus_jax.processing.tokenizer import load_tokenizer
from janus_jax.train import optim

SEQ_LEN = 96


def letter_row(builder: RowBuilder, spec: shapes.ShapesSpec, rng: np.random.Generator):
  """(input_ids int32[T], targets int32[T], loss_mask bool[T], valid bool[T], kind, index of the letter target)."""
  scene = shapes.sample_scene(rng, spec)
  mc = [qa for qa in shapes.questions(scene, rng, spec) if qa.choices]
  qa = mc[int(rng.integers(len(mc)))]
  open_question, answer = qa.question.split("\n")[0], qa.choices[ord(qa.answer) - ord("A")]
  row = builder.conversation(None, [(open_question, answer, False), (qa.question, qa.answer)])  # loss: letter + EOS
  mask = row["text_loss_mask"]
  return row["input_ids"], row["targets"], mask, row["valid"], qa.kind, int(np.flatnonzero(mask)[0])


def batch_of(builder, spec, rng, n: int):
  rows = [letter_row(builder, spec, rng) for _ in range(n)]
  return [np.stack([r[i] for r in rows]) for i in range(4)] + [[r[4] for r in rows], np.array([r[5] for r in rows])]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--lr", type=float, default=2e-3)
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--batch_size", type=int, default=32)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--config", default="experiments/shapes_demo.py", help="config whose model.llm is probed")
  ap.add_argument("--tokenizer_dir", default=None, help="a Shapes tokenizer dir (default: train one, ~2 s)")
  args = ap.parse_args(argv)

  spec = shapes.ShapesSpec()
  tok_dir = args.tokenizer_dir or train_shapes_tokenizer(tempfile.mkdtemp(prefix="probe_tok_"), spec, 512)
  builder = RowBuilder(load_tokenizer(tok_dir), RowSpec(seq_len=SEQ_LEN, num_image_tokens=16, und_image_size=32,
                                                        gen_image_size=32))
  cfg = LlamaConfig(**load_config(args.config).model.llm.to_dict())
  model = LlamaForCausalLM(cfg)

  def logits(params, ids, valid):
    return model.apply(params, ids, valid, method=logits_of)

  params = model.init(jax.random.PRNGKey(args.seed), jnp.zeros((1, SEQ_LEN), jnp.int32),
                      jnp.ones((1, SEQ_LEN), bool), method=logits_of)
  tx, _ = optim.make_optimizer(dict(lr=args.lr, schedule="cosine", warmup_steps=min(60, args.steps // 2),
                                    total_steps=args.steps, end_lr_factor=0.05), params)
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, ids, targets, mask, valid):
    def loss_fn(p):
      ce = optax.softmax_cross_entropy_with_integer_labels(logits(p, ids, valid), targets)
      return (ce * mask).sum() / mask.sum()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  predict = jax.jit(lambda p, ids, valid: logits(p, ids, valid).argmax(-1))
  rng, held_out = np.random.default_rng(args.seed), batch_of(builder, spec, np.random.default_rng(10**6), 400)

  def accuracy():
    ids, targets, _, valid, kinds, at = held_out
    rows = np.arange(len(at))
    ok = np.asarray(predict(params, ids, valid))[rows, at] == targets[rows, at]
    per_kind = collections.defaultdict(list)
    for k, o in zip(kinds, ok):
      per_kind[k].append(o)
    return float(ok.mean()), {k: round(float(np.mean(v)), 2) for k, v in sorted(per_kind.items())}

  print(f"probe: LLM {cfg.num_layers}x{cfg.hidden_size}, {cfg.num_heads} heads, lr {args.lr}, batch {args.batch_size}")
  t0 = time.time()
  for step in range(1, args.steps + 1):
    ids, targets, mask, valid, _, _ = batch_of(builder, spec, rng, args.batch_size)
    params, opt_state, loss = train_step(params, opt_state, ids, targets, mask, valid)
    if step % 100 == 0 or step == args.steps:
      overall, per_kind = accuracy()
      print(f"step {step:5d}  loss {float(loss):.3f}  letter accuracy {overall:.3f}  {per_kind}  "
            f"{time.time() - t0:.0f}s", flush=True)
  return 0


def logits_of(module: LlamaForCausalLM, ids, valid):
  """int32[B, T] ids, bool[B, T] valid (right-padded rows) -> float32[B, T, V]: embed -> decoder -> lm_head."""
  positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
  h, _ = module(module.embed(ids), positions, causal_mask(valid, ids.shape[1]))
  return module.logits(h)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  raise SystemExit(main())
