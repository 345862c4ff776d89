r"""Expands an experiment's `get_hyper` sweep into work units and runs or submits them.

  python launch/sweep.py --config=experiments/janus_stages.py --root=/tmp/sweep --dry_run    # print the commands
  python launch/sweep.py --config=experiments/janus_stages.py --root=/tmp/sweep --local      # one after another
  python launch/sweep.py --config=experiments/janus_stages.py --root=/tmp/sweep --xm         # XManager, this machine
  GOOGLE_CLOUD_BUCKET_NAME=bucket python launch/sweep.py --config=experiments/janus_stages.py \
      --root=gs://bucket/janus --xm --xm_executor=vertex --xm_accelerator=A100 --xm_count=8
  python launch/sweep.py --config=experiments/janus_stages.py --root=gs://bucket/janus --xm \
      --xm_executor=kubernetes --xm_accelerator=tpu_v5e --xm_count=2x4                       # GKE (kubectl context)

Each work unit becomes `python -m janus_jax.main --config=<file>[:<config_arg>] --config.<k>=<v> ...
--workdir=<root>/<experiment id>/<unit index>`. --xm (`pip install -e '.[xm]'`, launch/xm_launch.py) makes each unit
an XManager work unit running that command: `local` starts all of them at once as subprocesses (no Docker) and waits;
`vertex` (GPUs) and `kubernetes` (GKE GPUs, single-host TPU slices) build a Docker image of the repository (local
Docker, or Cloud Build with --xm_build_image_locally=false) and submit. XManager's own --xm_* flags pass through, e.g.
--xm_db_yaml_config_path (its experiment database, default ~/.xmanager). Multi-host TPU slices: launch/tpu_vm.sh.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
from janus_jax.configs import hyper  # noqa: E402  pylint: disable=wrong-import-position


def work_units(config_path: str) -> list[dict]:
  """The list of override dicts from the file's `get_hyper(hyper)` ([{}] when it has none)."""
  spec = importlib.util.spec_from_file_location("experiment", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_hyper"):
    return [{}]
  return module.get_hyper(hyper)


def command(config_path: str, unit: dict, workdir: str) -> list[str]:
  """The `python -m janus_jax.main` argv of one work unit."""
  arg = unit.get("config_arg")
  cmd = [sys.executable, "-m", "janus_jax.main", f"--config={config_path}" + (f":{arg}" if arg else "")]
  for key, value in sorted(unit.items()):
    if key.startswith("config."):
      cmd.append(f"--{key}={value}")
    elif key != "config_arg":
      raise ValueError(f"Sweep key {key!r} is neither 'config_arg' nor 'config.<path>'.")
  return cmd + [f"--workdir={workdir}"]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                               allow_abbrev=False)  # XManager's --xm_* flags pass through
  ap.add_argument("--config", required=True)
  ap.add_argument("--root", required=True, help="parent of the work units' workdirs")
  ap.add_argument("--name", default=None, help="experiment id (default: timestamp)")
  mode = ap.add_mutually_exclusive_group(required=True)
  mode.add_argument("--dry_run", action="store_true", help="print the commands")
  mode.add_argument("--local", action="store_true", help="run the units here, one after another")
  mode.add_argument("--xm", action="store_true", help="run or submit the units with XManager")
  ap.add_argument("--xm_executor", default="local", choices=["local", "vertex", "kubernetes"])
  ap.add_argument("--xm_accelerator", default=None, help="e.g. A100, L4, H100 (kubernetes), tpu_v5e (kubernetes)")
  ap.add_argument("--xm_count", default="1", help="chips per unit; a topology such as 2x4 for TPUs")
  ap.add_argument("--xm_base_image", default=None, help="vertex / kubernetes image base (default python:3.11-slim)")
  ap.add_argument("--xm_push_image_tag", default=None, help="vertex / kubernetes image tag (default gcr.io/<project>)")
  args, xm_flags = ap.parse_known_args(argv)
  if [f for f in xm_flags if not (args.xm and f.startswith("--xm_"))]:
    ap.error(f"unrecognized arguments: {' '.join(xm_flags)} (only --xm passes XManager's --xm_* flags on)")
  name = args.name or time.strftime("%Y%m%d_%H%M%S")
  config = args.config
  if args.xm and args.xm_executor != "local":  # the image holds the repository at its working directory
    config = os.path.relpath(os.path.abspath(config), _REPO)
    if config.startswith(".."):
      ap.error(f"--config={args.config} must be inside {_REPO} to be in the image.")
  units = work_units(args.config)
  cmds = [command(config, u, os.path.join(args.root, name, str(i))) for i, u in enumerate(units)]
  if args.dry_run:
    for c in cmds:
      print(shlex.join(c))
    return 0
  if args.local:
    for c in cmds:
      print("+", shlex.join(c), flush=True)
      subprocess.run(c, check=True)
    return 0
  try:
    from launch import xm_launch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SystemExit(f"XManager is not installed ({e}): `pip install -e '.[xm]'` (or use --local / --dry_run).") from e
  try:
    xm_launch.parse_flags(xm_flags)
    reqs = xm_launch.requirements(args.xm_executor, args.xm_accelerator, args.xm_count)
  except ValueError as e:
    ap.error(str(e))
  if args.xm_executor != "local" and not args.root.startswith("gs://"):
    print(f"warning: --root={args.root} is not a gs:// path; cloud units write their workdirs there.", file=sys.stderr)
  xm_launch.launch(name, args.xm_executor, cmds, reqs, args.xm_base_image or xm_launch.BASE_IMAGE,
                   args.xm_push_image_tag)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
