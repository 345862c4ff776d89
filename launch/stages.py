r"""Runs a whole staged recipe: stage 1 -> 2 -> 3, each stage starting from the model the previous one exported.

  python launch/stages.py --config=experiments/janus_stages.py:family=janus_pro,size=shapes --root=DIR
  python launch/stages.py --config=experiments/janus_stages.py:family=janusflow,size=shapes --root=DIR
  python launch/stages.py --config=experiments/janus_stages.py:family=janus_pro,size=1b --root=DIR \
      --init_from=~/ckpts/janus-pro-1b-jax --stages=2,3 --config.input.sources="(...)"

Stage N runs `python -m janus_jax.main --config=<file>:<arg>,stage=N --workdir=<root>/stage_N
--config.init_from=<root>/stage_{N-1}/model <--config.* overrides>`; the first stage run starts from `--init_from`
(needed at released sizes; at size=shapes stage 1 trains the image tokenizer and starts from random weights).
Configs with a `data` section share one Shapes copy in <root>/data. Resumable: a stage whose <root>/stage_N/model
exists is skipped, an unfinished one continues from its last checkpoint. Exit status: 0 when every stage is done,
else the failing stage's (75 after a preemption: run the same command again).
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from janus_jax import paths  # noqa: E402  pylint: disable=wrong-import-position
from janus_jax.checkpoint import store  # noqa: E402  pylint: disable=wrong-import-position
from janus_jax.configs.common import load_config  # noqa: E402  pylint: disable=wrong-import-position


def stage_spec(config: str, stage: int) -> str:
  """`file.py:arg` -> `file.py:arg,stage=N` (the recipe chooses the stage)."""
  path, _, arg = config.partition(":")
  if any(item.split("=")[0].strip() == "stage" for item in arg.split(",")):
    raise SystemExit(f"launch/stages.py: --config={config} names a stage; the recipe runs --stages itself. Drop "
                     "`stage=` from the config argument.")
  return f"{path}:{arg + ',' if arg else ''}stage={stage}"


def stage_commands(config: str, root: str, stages: list[int], init_from: str | None, overrides: list[str]
                   ) -> list[tuple[int, str, list[str]]]:
  """[(stage, workdir, argv)] of the recipe, each stage from the previous stage's export."""
  out, previous = [], init_from
  for n in stages:
    spec = stage_spec(config, n)
    workdir = paths.join(root, f"stage_{n}")
    cmd = [sys.executable, "-m", "janus_jax.main", f"--config={spec}", f"--workdir={workdir}"]
    if "data" in load_config(spec):
      cmd.append(f"--config.data.data_dir={paths.join(root, 'data')}")
    if previous:
      cmd.append(f"--config.init_from={previous}")
    out.append((n, workdir, cmd + list(overrides)))
    previous = paths.join(workdir, "model")
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", required=True, help="experiments/<file>.py[:arg] without stage=")
  ap.add_argument("--root", required=True, help="parent of the stages' workdirs")
  ap.add_argument("--stages", default="1,2,3", help="comma-separated stages, in order (default 1,2,3)")
  ap.add_argument("--init_from", default=None, help="checkpoint the first stage starts from")
  ap.add_argument("--dry_run", action="store_true", help="print the commands")
  args, rest = ap.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    ap.error(f"unknown argument(s) {bad}; pass config overrides as --config.<field>=<value>.")
  try:
    stages = [int(s) for s in args.stages.split(",") if s.strip()]
  except ValueError:
    ap.error(f"--stages={args.stages!r}: expected comma-separated stage numbers, e.g. 1,2,3.")
  root = str(paths.resolve(args.root))  # local (made absolute) or gs://
  init_from = str(paths.resolve(args.init_from)) if args.init_from else None
  try:
    plan = stage_commands(args.config, root, stages, init_from, rest)
  except (ValueError, FileNotFoundError) as e:
    ap.error(str(e))
  for n, workdir, cmd in plan:
    if args.dry_run:
      print(shlex.join(cmd))
      continue
    if store.is_checkpoint(paths.join(workdir, "model")):
      print(f"[stages] stage {n}: done ({workdir}/model exists), skipped", flush=True)
      continue
    print(f"[stages] stage {n}: {shlex.join(cmd)}", flush=True)
    t = time.time()
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
      print(f"[stages] stage {n} ended with exit status {rc}; fix the cause (or, after a preemption, just run the "
            "same command again): finished stages are skipped, this one resumes.", file=sys.stderr, flush=True)
      return rc
    print(f"[stages] stage {n}: done in {time.time() - t:.0f} s -> {workdir}/model", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
