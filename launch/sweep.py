r"""Expands an experiment's `get_hyper` sweep into work units and runs or submits them.

  python launch/sweep.py --config=experiments/ablations.py:repa --root=sweeps --name=repa --dry_run   # the commands
  python launch/sweep.py --config=experiments/ablations.py:repa --root=sweeps --name=repa --local     # run them here
  python launch/sweep.py --config=experiments/ablations.py:repa --root=sweeps --name=repa --local --parallel 2
  janus-jax report sweeps/repa        # mean ± 95% CI per variant: sweeps/repa/report/{report.md, *.csv, *.png}
  python launch/sweep.py --config=experiments/janus_stages.py --root=/tmp/sweep --xm         # XManager, this machine
  GOOGLE_CLOUD_BUCKET_NAME=bucket python launch/sweep.py --config=experiments/janus_stages.py \
      --root=gs://bucket/janus --xm --xm_executor=vertex --xm_accelerator=A100 --xm_count=8
  python launch/sweep.py --config=experiments/janus_stages.py --root=gs://bucket/janus --xm \
      --xm_executor=kubernetes --xm_accelerator=tpu_v5e --xm_count=2x4                       # GKE (kubectl context)

`get_hyper(h)` (or `get_hyper(h, arg)`, which receives the `:arg` of --config, e.g. the claim of
experiments/ablations.py) returns override dicts (janus_jax.configs.hyper). Each work unit becomes
`python -m janus_jax.main --config=<file>[:<config_arg>] --config.<k>=<v> ... --workdir=<root>/<name>/<i>`; a unit's
'variant' key names it in reports (default: the overrides that differ between units, seed aside). Every override is
checked against the config before anything starts. The launcher writes `unit.json` (variant, seed, overrides,
command) into each unit's workdir; --local also writes `log.txt` and, when the unit ends, `exit.json` (return code,
seconds). --local runs --parallel N units at a time (default 1) and keeps going when one fails; the exit status is 1
when any failed. Running the same command again (same --name) skips finished units and resumes the others from their
checkpoints; Ctrl-C stops the running units with SIGTERM (they save a checkpoint first).
--xm (`pip install -e '.[xm]'`, launch/xm_launch.py) makes each unit an XManager work unit running that command:
`local` starts all of them at once as subprocesses (no Docker) and waits; `vertex` (GPUs) and `kubernetes` (GKE GPUs,
single-host TPU slices) build a Docker image of the repository (local Docker, or Cloud Build with
--xm_build_image_locally=false) and submit. XManager's own --xm_* flags pass through, e.g. --xm_db_yaml_config_path
(its experiment database, default ~/.xmanager). Multi-host TPU slices: launch/tpu_vm.sh.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
from janus_jax import paths  # noqa: E402  pylint: disable=wrong-import-position
from janus_jax.configs import hyper  # noqa: E402  pylint: disable=wrong-import-position

_LABEL_KEYS = ("variant",)  # unit keys that name a unit and are not passed to the job


class SweepError(ValueError):
  """A sweep that cannot start; the message names the fix."""


def _load_module(config_path: str):
  if not os.path.isfile(config_path):
    raise SweepError(f"--config={config_path}: no such file (expected experiments/<name>.py[:arg]).")
  spec = importlib.util.spec_from_file_location("experiment", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def work_units(config: str) -> list[dict]:
  """The override dicts of `get_hyper` of the file in `config` ("file.py[:arg]"; [{}] when it has none).
  `get_hyper(h, arg)` receives the arg; a `get_hyper(h)` leaves the arg to the units' `--config=file:arg`."""
  path, _, arg = config.partition(":")
  module = _load_module(path)
  if not hasattr(module, "get_hyper"):
    return [{}]
  if len(inspect.signature(module.get_hyper).parameters) >= 2:
    return module.get_hyper(hyper, arg or None)
  return module.get_hyper(hyper)


def _config_arg(config: str, unit: dict) -> str | None:
  """The unit's `config_arg`, else the arg of --config when get_hyper does not consume it."""
  path, _, arg = config.partition(":")
  if "config_arg" in unit:
    return unit["config_arg"]
  module = _load_module(path)
  takes_arg = hasattr(module, "get_hyper") and len(inspect.signature(module.get_hyper).parameters) >= 2
  return None if takes_arg else (arg or None)


def command(config_path: str, unit: dict, workdir: str, config_arg: str | None = None) -> list[str]:
  """The `python -m janus_jax.main` argv of one work unit (`config_arg`: its `:arg` unless the unit has one)."""
  arg = unit.get("config_arg", config_arg)
  cmd = [sys.executable, "-m", "janus_jax.main", f"--config={config_path}" + (f":{arg}" if arg else "")]
  for key, value in sorted(unit.items()):
    if key.startswith("config."):
      cmd.append(f"--{key}={value}")
    elif key not in ("config_arg",) + _LABEL_KEYS:
      raise SweepError(f"Sweep key {key!r} is neither 'config_arg', 'variant' nor 'config.<path>'.")
  return cmd + [f"--workdir={workdir}"]


def variant_labels(units: list[dict]) -> list[str]:
  """Each unit's name in reports: its 'variant' key, else 'k=v, ...' of the overrides (and config_arg) that differ
  between units, the seed aside; '' for a sweep over seeds only."""
  keys = [k for k in dict.fromkeys(k for u in units for k in u) if k != "config.seed" and k not in _LABEL_KEYS]
  varying = [k for k in keys if len({repr(u.get(k)) for u in units}) > 1]
  labels = []
  for u in units:
    if "variant" in u:
      labels.append(str(u["variant"]))
    else:
      labels.append(", ".join(f"{k.removeprefix('config.')}={u[k] if k in u else '(default)'}" for k in varying))
  return labels


def check_units(config: str, units: list[dict]) -> None:
  """Loads each unit's config and applies its overrides: a key the config lacks or a value of the wrong type raises
  SweepError naming the unit, the key and the fix, before any unit starts."""
  from janus_jax.configs.common import load_config  # pylint: disable=import-outside-toplevel
  path = config.partition(":")[0]
  loaded = {}
  for i, unit in enumerate(units):
    arg = _config_arg(config, unit)
    spec = path + (f":{arg}" if arg else "")
    try:
      if spec not in loaded:
        loaded[spec] = load_config(spec)
      base = loaded[spec]
      hyper.apply_overrides(base.copy_and_resolve_references(),
                            {k: v for k, v in unit.items() if k.startswith("config.")})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
      raise SweepError(f"work unit {i} ({unit}): {msg} Fix the override in get_hyper of {path} (or its config "
                       f"argument), then launch again.") from e


def _unit_record(i: int, unit: dict, label: str, cmd: list[str]) -> dict:
  return {"unit": i, "variant": label, "seed": unit.get("config.seed"),
          "overrides": {k: v for k, v in unit.items() if k not in _LABEL_KEYS}, "command": cmd}


def _write_json(path, value) -> None:
  paths.resolve(path).write_text(json.dumps(value, indent=2, default=str) + "\n")


def finished(workdir) -> bool:
  """The local runner saw the unit exit 0."""
  exit_file = paths.resolve(workdir) / "exit.json"
  if not exit_file.exists():
    return False
  try:
    return json.loads(exit_file.read_text()).get("returncode") == 0
  except json.JSONDecodeError:
    return False


def _pump(proc, log_path: str, prefix: str) -> None:
  """Copies the unit's output to its log.txt and to the console, line by line, with the unit's prefix."""
  with open(log_path, "a", encoding="utf-8") as log:
    for line in proc.stdout:
      log.write(line)
      log.flush()
      sys.stdout.write(f"{prefix} {line}")
      sys.stdout.flush()


def run_local(cmds: list[list[str]], workdirs: list[str], parallel: int = 1) -> dict[int, int]:
  """Runs the units not finished yet, `parallel` at a time; returns {unit index: return code} of those it ran."""
  todo = [i for i in range(len(cmds)) if not finished(workdirs[i])]
  for i in sorted(set(range(len(cmds))) - set(todo)):
    print(f"[unit {i}] finished in an earlier run: skipped", flush=True)
  running: dict[int, tuple] = {}
  codes: dict[int, int] = {}
  # SIGTERM (`kill`, a scheduler; also the way to stop a sweep started with `nohup ... &`, which ignores SIGINT)
  # stops the units as Ctrl-C does.
  previous = signal.signal(signal.SIGTERM, _raise_interrupt)
  try:
    while todo or running:
      while todo and len(running) < parallel:
        i = todo.pop(0)
        log_path = os.path.join(str(paths.resolve(workdirs[i])), "log.txt")
        print(f"[unit {i}] + {shlex.join(cmds[i])}", flush=True)
        proc = subprocess.Popen(cmds[i], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        pump = threading.Thread(target=_pump, args=(proc, log_path, f"[unit {i}]"), daemon=True)
        pump.start()
        running[i] = (proc, pump, time.time())
      time.sleep(0.2)
      for i, (proc, pump, t0) in list(running.items()):
        if proc.poll() is not None:
          pump.join()
          seconds = round(time.time() - t0, 1)
          codes[i] = proc.returncode
          _write_json(paths.resolve(workdirs[i]) / "exit.json",
                      {"returncode": proc.returncode, "started": round(t0, 2), "seconds": seconds})
          print(f"[unit {i}] exit {proc.returncode} after {seconds:.0f} s", flush=True)
          del running[i]
  except KeyboardInterrupt:
    print("interrupted (Ctrl-C or SIGTERM): stopping the running units with SIGTERM (each saves a checkpoint; run "
          "the same command again to resume)", flush=True)
    for proc, _, _ in running.values():
      proc.send_signal(signal.SIGTERM)
    for i, (proc, pump, _) in running.items():
      proc.wait()
      pump.join()
    raise
  finally:
    signal.signal(signal.SIGTERM, previous)
  return codes


def _raise_interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                               allow_abbrev=False)  # XManager's --xm_* flags pass through
  ap.add_argument("--config", required=True)
  ap.add_argument("--root", required=True, help="parent of the work units' workdirs")
  ap.add_argument("--name", default=None, help="experiment id (default: timestamp)")
  mode = ap.add_mutually_exclusive_group(required=True)
  mode.add_argument("--dry_run", action="store_true", help="print the commands")
  mode.add_argument("--local", action="store_true", help="run the units here (--parallel at a time)")
  mode.add_argument("--xm", action="store_true", help="run or submit the units with XManager")
  ap.add_argument("--parallel", type=int, default=1, help="--local: units running at the same time")
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
  if args.parallel < 1:
    ap.error(f"--parallel={args.parallel}: must be >= 1.")
  if args.parallel > 1 and not args.local:
    ap.error("--parallel applies to --local only (XManager runs every unit at once).")
  try:
    units = work_units(args.config)
    if not units:
      raise SweepError(f"get_hyper of {args.config} returned no work units.")
    check_units(args.config, units)
    cmds = [command(config.partition(":")[0], u, paths.join(args.root, name, str(i)), _config_arg(args.config, u))
            for i, u in enumerate(units)]
  except (SweepError, ValueError) as e:  # get_hyper's own ValueError (e.g. an unknown claim) included
    print(f"launch/sweep.py: error: {e}", file=sys.stderr)
    return 2
  if args.dry_run:
    for c in cmds:
      print(shlex.join(c))
    return 0
  if args.xm:  # XManager and its flags are checked before anything is written
    try:
      from launch import xm_launch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise SystemExit(f"XManager is not installed ({e}): `pip install -e '.[xm]'` (or use --local / --dry_run)."
                       ) from e
    try:
      xm_launch.parse_flags(xm_flags)
      reqs = xm_launch.requirements(args.xm_executor, args.xm_accelerator, args.xm_count)
    except ValueError as e:
      ap.error(str(e))
  workdirs = [paths.join(args.root, name, str(i)) for i in range(len(units))]
  for i, (unit, label, workdir) in enumerate(zip(units, variant_labels(units), workdirs)):
    paths.resolve(workdir).mkdir(parents=True, exist_ok=True)
    _write_json(paths.resolve(workdir) / "unit.json", _unit_record(i, unit, label, cmds[i]))
  if args.local:
    try:
      codes = run_local(cmds, workdirs, args.parallel)
    except KeyboardInterrupt:
      return 130
    failed = sorted(i for i, rc in codes.items() if rc != 0)
    report = f"janus-jax report {paths.join(args.root, name)}"
    if failed:
      print(f"{len(failed)} of {len(cmds)} units failed: " + ", ".join(f"{i} (exit {codes[i]}, "
            f"{paths.join(workdirs[i], 'log.txt')})" for i in failed) + f". Fix and run the same command again "
            f"(finished units are skipped). The report shows them as failed: {report}", flush=True)
      return 1
    print(f"all {len(cmds)} units finished: {report}", flush=True)
    return 0
  if args.xm_executor != "local" and not args.root.startswith("gs://"):
    print(f"warning: --root={args.root} is not a gs:// path; cloud units write their workdirs there.", file=sys.stderr)
  xm_launch.launch(name, args.xm_executor, cmds, reqs, args.xm_base_image or xm_launch.BASE_IMAGE,
                   args.xm_push_image_tag)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
