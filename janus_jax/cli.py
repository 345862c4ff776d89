"""`janus-jax` command line: a thin layer over `janus_jax.api` and `janus_jax.checkpoint.convert`.

  janus-jax convert    --from HF_DIR --to OUT_DIR [--dtype bfloat16]
  janus-jax understand --checkpoint DIR --image PATH --question TEXT [--greedy | --temperature T --top-p P]
  janus-jax generate   --checkpoint DIR --prompt TEXT --num-images N [--cfg-weight W --temperature T --seed S]
                       --out DIR [--save-tokens FILE.npy] [--greedy]
  janus-jax eval       --checkpoint DIR --data-dir DIR [--tfds-name janus_shapes/default] --out eval.json
  janus-jax pairs      --jsonl ROWS.jsonl --out TRAIN.arrayrecord [--image-root DIR]   (your own training data)
  janus-jax report     ROOT/NAME [--out DIR]   (a sweep of launch/sweep.py: mean ± 95% CI per variant, CSV, plots)
  janus-jax plan       --config=experiments/<x>.py[:arg] [--config.a.b=v] --devices N [--platform gpu|tpu|cpu]
                       [--json OUT]   (the train step compiled for N devices: memory per device, FLOPs, fit)
Checkpoint, image, data and output paths may be local or remote (gs://...).
Training: python -m janus_jax.main --config=experiments/<x>.py[:arg] --workdir=DIR
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from janus_jax import paths
from janus_jax.processing.image import image_grid


def _convert(args) -> int:
  from janus_jax.checkpoint import convert
  return convert.run(args)


def _understand(args) -> int:
  import janus_jax
  pipe = janus_jax.load(args.checkpoint, dtype=args.dtype, matmul_precision=args.matmul_precision,
                        quantize=args.quantize)
  answers = pipe.understand([args.image], [args.question], greedy=args.greedy, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_p=args.top_p, seed=args.seed)
  print(answers[0])
  return 0


def _pairs(args) -> int:
  from janus_jax.data.sources import write_pairs
  out = paths.resolve(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  n = write_pairs(paths.resolve(args.jsonl), out, paths.resolve(args.image_root) if args.image_root else None)
  print(f"wrote {n} record(s) to {out}; train on it with "
        f"--config.input.sources=\"({{'kind': 'pairs', 'paths': '{out}'}},)\"")
  return 0


def _eval(args) -> int:
  from janus_jax.evals.run import evaluate_checkpoint, write_json
  results = evaluate_checkpoint(args.checkpoint, args.data_dir, args.tfds_name, n_per_category=args.n_per_category,
                                num_questions=args.num_questions, cfg_weight=args.cfg_weight,
                                temperature=args.temperature, seed=args.seed)
  write_json(results, args.out)
  print(f"generation overall {results['generation']['overall']:.3f}, understanding overall "
        f"{results['understanding']['overall']:.3f}; details in {args.out}")
  return 0


def _generate(args) -> int:
  from PIL import Image
  import janus_jax
  if bool(args.preview_every) != bool(args.preview_out):
    raise ValueError("--preview-every K and --preview-out DIR go together: the frames are written to DIR.")
  pipe = janus_jax.load(args.checkpoint, dtype=args.dtype, matmul_precision=args.matmul_precision,
                        quantize=args.quantize)
  noise = None
  if args.noise:
    with paths.resolve(args.noise).open("rb") as f:
      noise = np.load(f)
  frames = []
  out = pipe.generate(args.prompt, num_images=args.num_images, cfg_weight=args.cfg_weight,
                      temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=args.greedy,
                      seed=args.seed, progress=not args.quiet, num_steps=args.num_steps, solver=args.solver,
                      time_shift=args.time_shift, prompt_cache=not args.no_prompt_cache, noise=noise,
                      preview_every=args.preview_every or 0,
                      on_preview=(lambda step, x: frames.append((step, image_grid(x)))) if args.preview_every else None)
  if frames:
    write_preview_frames(frames, paths.resolve(args.preview_out))
    print(f"wrote {len(frames)} preview frame(s) and preview.gif to {args.preview_out}")
  out_dir = paths.resolve(args.out)
  out_dir.mkdir(parents=True, exist_ok=True)
  images = [(f"image_{i:03d}.png", img) for i, img in enumerate(out.images)]
  for name, img in images + [("grid.png", image_grid(out.images))]:
    with (out_dir / name).open("wb") as f:
      Image.fromarray(img).save(f, format="PNG")
  if args.save_tokens:
    tokens = paths.resolve(args.save_tokens)
    if not tokens.name.endswith(".npy"):  # What np.save(filename) does.
      tokens = tokens.with_name(tokens.name + ".npy")
    with tokens.open("wb") as f:
      np.save(f, out.tokens if out.tokens is not None else out.latents)
  print(f"wrote {len(images)} image(s) and grid.png to {args.out}")
  return 0


def write_preview_frames(frames, out_dir) -> None:
  """[(step, uint8 grid)] -> out_dir/frame_<step>.png each, and out_dir/preview.gif (the frames in order)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  out_dir.mkdir(parents=True, exist_ok=True)
  pictures = [Image.fromarray(grid) for _, grid in frames]
  for (step, _), picture in zip(frames, pictures):
    with (out_dir / f"frame_{step:05d}.png").open("wb") as f:
      picture.save(f, format="PNG")
  with (out_dir / "preview.gif").open("wb") as f:
    pictures[0].save(f, format="GIF", save_all=True, append_images=pictures[1:], duration=120, loop=0)


def _report(args) -> int:
  from janus_jax import report  # pylint: disable=import-outside-toplevel
  files = report.write_report(args.root, args.out)
  print(paths.resolve(files["markdown"]).read_text().split("\n## Every metric")[0].rstrip())
  print("\nwrote " + ", ".join(files.values()))
  return 0


def _plan(args) -> int:
  from janus_jax import plan  # pylint: disable=import-outside-toplevel
  plan.run(args.config_args, args.devices, args.platform, args.json)
  return 0


def _mode_defaults(key: str) -> str:
  """The generation modes' default for sampler setting `key`, e.g. '5 ar_vq / 2 flow / 2 ar_continuous'."""
  from janus_jax import modes
  return " / ".join(f"{m.sampling[key]:g} {name}" for name, m in modes.MODES.items() if key in m.sampling)


def _add_compute_options(p: argparse.ArgumentParser) -> None:
  """--dtype, --matmul-precision and --quantize: how a loaded model computes (`janus_jax.load`'s arguments)."""
  p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                 help="compute dtype (auto: bfloat16 on GPU/TPU, as stored on CPU)")
  p.add_argument("--matmul-precision", default="auto", choices=["auto", "highest", "high", "default"],
                 help="matmul precision (auto: highest on CPU, default on GPU/TPU)")
  p.add_argument("--quantize", default=None, choices=["int8", "int8_dynamic"],
                 help="int8 LLM and image-head matmul weights for decoding (int8_dynamic: activations too, per "
                 "row; default: float)")


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="janus-jax", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)

  c = sub.add_parser("convert", help="import a DeepSeek / transformers Janus or a JanusFlow checkpoint directory")
  from janus_jax.checkpoint.convert import add_arguments  # pylint: disable=import-outside-toplevel
  add_arguments(c)
  c.set_defaults(fn=_convert)

  u = sub.add_parser("understand", help="answer a question about an image")
  u.add_argument("--checkpoint", required=True)
  u.add_argument("--image", required=True)
  u.add_argument("--question", required=True)
  u.add_argument("--greedy", action="store_true", help="argmax decoding (otherwise temperature/top-p sampling)")
  u.add_argument("--temperature", type=float, default=0.1, help="> 0 (unused with --greedy)")
  u.add_argument("--top-p", type=float, default=0.95)
  u.add_argument("--max-new-tokens", type=int, default=None,
                 help="answer length limit (default: what the model's context leaves after the prompt, at most 512)")
  u.add_argument("--seed", type=int, default=0)
  _add_compute_options(u)
  u.set_defaults(fn=_understand)

  g = sub.add_parser("generate", help="text-to-image")
  g.add_argument("--checkpoint", required=True)
  g.add_argument("--prompt", required=True, action="append", help="repeat for several prompts")
  g.add_argument("--num-images", type=int, default=1, help="images per prompt")
  g.add_argument("--cfg-weight", type=float, default=None,
                 help=f"guidance weight (default: the mode's, {_mode_defaults('cfg_weight')})")
  g.add_argument("--temperature", type=float, default=None,
                 help=f"ar_vq: > 0, --greedy for argmax; ar_continuous: scales the initial noise (default "
                 f"{_mode_defaults('temperature')})")
  g.add_argument("--top-k", type=int, default=None, help="ar_vq: 0 = full softmax (the default, official)")
  g.add_argument("--top-p", type=float, default=None, help="ar_vq: nucleus (default 1 = off)")
  g.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
  g.add_argument("--seed", type=int, default=0)
  g.add_argument("--out", required=True, help="output directory for PNGs and grid.png")
  g.add_argument("--save-tokens", default=None, help="also write the int32 token grid (flow: the final latents) to "
                 "this .npy file")
  g.add_argument("--num-steps", type=int, default=None, help=f"flow: ODE steps; ar_continuous: the head's ODE steps per token "
                 f"(default {_mode_defaults('num_steps')})")
  g.add_argument("--solver", default=None, choices=["euler", "heun"], help="flow: ODE solver (default euler)")
  g.add_argument("--time-shift", type=float, default=None, help="flow: time-grid shift (default 1 = uniform)")
  g.add_argument("--no-prompt-cache", action="store_true", help="JanusFlow: recompute the prompt every step")
  g.add_argument("--noise", default=None, help="JanusFlow: .npy float32[N, h, w, C] initial latents z0")
  _add_compute_options(g)
  g.add_argument("--preview-every", type=int, default=0, help="stream a partial image every K tokens / ODE steps")
  g.add_argument("--preview-out", default=None, help="with --preview-every: write frame_<step>.png and preview.gif here")
  g.add_argument("--quiet", action="store_true")
  g.set_defaults(fn=_generate)

  e = sub.add_parser("eval", help="Shapes-GenEval + understanding accuracy of a checkpoint (JSON)")
  e.add_argument("--checkpoint", required=True)
  e.add_argument("--data-dir", required=True, help="data_dir holding the prepared janus_shapes dataset")
  e.add_argument("--tfds-name", default="janus_shapes/default")
  e.add_argument("--n-per-category", type=int, default=25)
  e.add_argument("--num-questions", type=int, default=300)
  e.add_argument("--cfg-weight", type=float, default=None,
                 help=f"default: the mode's ({_mode_defaults('cfg_weight')})")
  e.add_argument("--temperature", type=float, default=None,
                 help=f"ar_vq, ar_continuous (default {_mode_defaults('temperature')})")
  e.add_argument("--seed", type=int, default=0)
  e.add_argument("--out", default="eval.json")
  e.set_defaults(fn=_eval)

  r = sub.add_parser("pairs", help="your own JSONL of image-caption / image-question-answer rows -> ArrayRecord")
  r.add_argument("--jsonl", required=True, help='one JSON object per line: {"image": PATH, "text": CAPTION} and/or '
                 '{"image": PATH, "question": Q, "answer": A}')
  r.add_argument("--out", required=True, help="ArrayRecord file to write (plus OUT.kinds.json)")
  r.add_argument("--image-root", default=None, help="folder relative image paths start at (default: the JSONL's)")
  r.set_defaults(fn=_pairs)

  s = sub.add_parser("report", help="a sweep's units -> mean ± 95%% CI per variant (Markdown, CSV, PNG plots)")
  s.add_argument("root", help="the sweep folder ROOT/NAME of `launch/sweep.py --root=ROOT --name=NAME`")
  s.add_argument("--out", default=None, help="output folder (default ROOT/NAME/report)")
  s.set_defaults(fn=_report)

  n = sub.add_parser("plan", help="compile the train step for N devices ahead of time: memory per device, FLOPs, "
                     "which accelerators it fits (--config=... and --config.a.b=v as for python -m janus_jax.main)")
  n.add_argument("--devices", type=int, required=True, help="number of devices (fake CPU devices compile it)")
  n.add_argument("--platform", default="gpu", choices=["gpu", "tpu", "cpu"],
                 help="the target: what 'auto' dtypes and precisions resolve to (gpu, tpu: bfloat16)")
  n.add_argument("--json", default=None, help="also write the figures as JSON here")
  n.set_defaults(fn=_plan)
  return p


def main(argv=None) -> int:
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if args.command == "plan":
    args.config_args = extra
  elif extra:
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  try:
    return args.fn(args)
  except (ValueError, FileNotFoundError, KeyError) as e:
    print(f"janus-jax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
