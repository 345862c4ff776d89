r"""Expands an experiment's `get_hyper` sweep into work units and runs or submits them.

  python launch/sweep.py --config=experiments/janus_stages.py --root=gs://bucket/janus --dry_run
  python launch/sweep.py --config=experiments/janus_stages.py --root=/tmp/sweep --local   # one after another
  python launch/sweep.py --config=experiments/janus_stages.py --root=gs://bucket/janus --xm \
      --xm_platform=tpu --xm_accelerator=v5p --xm_count=64                                   # XManager

Each work unit becomes `python -m janus_jax.main --config=<file>[:<config_arg>] --config.<k>=<v> ...
--workdir=<root>/<experiment id>/<unit index>`. XManager (`pip install xmanager`) is imported only with --xm.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
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
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--config", required=True)
  ap.add_argument("--root", required=True, help="parent of the work units' workdirs")
  ap.add_argument("--name", default=None, help="experiment id (default: timestamp)")
  mode = ap.add_mutually_exclusive_group(required=True)
  mode.add_argument("--dry_run", action="store_true", help="print the commands")
  mode.add_argument("--local", action="store_true", help="run the units here, one after another")
  mode.add_argument("--xm", action="store_true", help="submit with XManager")
  ap.add_argument("--xm_platform", default="tpu", choices=["tpu", "gpu", "cpu"])
  ap.add_argument("--xm_accelerator", default="v5p")
  ap.add_argument("--xm_count", type=int, default=8)
  args = ap.parse_args(argv)
  name = args.name or time.strftime("%Y%m%d_%H%M%S")
  units = work_units(args.config)
  cmds = [command(args.config, u, os.path.join(args.root, name, str(i))) for i, u in enumerate(units)]
  if args.dry_run:
    for c in cmds:
      print(shlex.join(c))
    return 0
  if args.local:
    for c in cmds:
      print("+", shlex.join(c), flush=True)
      subprocess.run(c, check=True)
    return 0
  return _submit_xm(args, name, units, cmds)


def _submit_xm(args, name: str, units: list[dict], cmds: list[list[str]]) -> int:
  try:
    from xmanager import xm, xm_local  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SystemExit("XManager is not installed: `pip install xmanager` (or use --local / --dry_run).") from e
  with xm_local.create_experiment(experiment_title=name) as experiment:
    requirements = {args.xm_accelerator: args.xm_count} if args.xm_platform != "cpu" else {}
    [executable] = experiment.package([xm.python_container(
        executor_spec=xm_local.Vertex.Spec(), path=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        entrypoint=xm.ModuleName("janus_jax.main"))])
    for i, (unit, cmd) in enumerate(zip(units, cmds)):
      flags = dict(a.lstrip("-").split("=", 1) for a in cmd[3:])
      experiment.add(xm.Job(executable=executable, executor=xm_local.Vertex(
          requirements=xm.JobRequirements(**requirements)), args=flags), args={"unit": i})
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
