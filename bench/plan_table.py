"""The README's fit-to-memory table: `janus-jax plan` for every released size x stage on 8 and 64 devices.

  python bench/plan_table.py [--devices 8 64] [--platform gpu] [--only janus_pro:7b] [--out plans.json]
      [-- --config.train.max_rows_per_device=2 ...]   (overrides for every row)

Each plan runs in its own process (the fake device count is fixed when JAX starts); prints one Markdown row per
plan as it finishes, then the whole table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

RELEASED = (("janus", "1_3b"), ("janus_pro", "1b"), ("janus_pro", "7b"), ("janusflow", "1_3b"))
DEVICES = ("H100 80GB", "H200 141GB", "TPU v5p 95GB", "TPU v5e 16GB")
HEADER = ("| model | stage | devices | mesh | batch / rows at once | remat | params / trainable | peak GiB / device | "
          "TFLOPs / device / step | " + " | ".join(DEVICES) + " |")


def row(p: dict) -> str:
  family, size, stage = p["name"]
  mesh = " ".join(f"{k}={v}" for k, v in p["mesh"].items() if v > 1) or "1"
  dp = p["mesh"].get("data", 1) * p["mesh"].get("fsdp", 1)
  at_once = p["global_batch"] // (dp * p["grad_accum_steps"])
  fits = " | ".join("yes" if p["fits"][d] else "**no**" for d in DEVICES)
  return (f"| {family} {size} | {stage} | {p['num_devices']} | {mesh} | {p['global_batch']} / {at_once} | "
          f"{p['remat_policy']} | {p['num_params'] / 1e9:.2f}B / {p['num_trainable'] / 1e9:.2f}B | "
          f"{p['peak_bytes'] / 2 ** 30:.1f} | {p['flops_per_device'] / 1e12:.0f} | {fits} |")


def plan(family: str, size: str, stage: int, devices: int, platform: str, overrides: list[str]) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "plan.json")
    cmd = [sys.executable, "-m", "janus_jax.cli", "plan",
           f"--config=experiments/janus_stages.py:stage={stage},family={family},size={size}",
           f"--devices={devices}", f"--platform={platform}", f"--json={out}", *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
      raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    with open(out) as f:
      return dict(json.load(f), name=(family, size, stage))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--devices", type=int, nargs="+", default=[8, 64])
  p.add_argument("--platform", default="gpu")
  p.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
  p.add_argument("--only", nargs="+", default=None, help="family:size entries (default: every released size)")
  p.add_argument("--out", default=None, help="also write every plan as JSON here")
  p.add_argument("overrides", nargs="*", help="after --: --config.a.b=v for every plan")
  args = p.parse_args(argv)
  models = [tuple(m.split(":")) for m in args.only] if args.only else RELEASED
  plans = []
  print(HEADER, flush=True)
  for family, size in models:
    for stage in args.stages:
      for n in args.devices:
        plans.append(plan(family, size, stage, n, args.platform, args.overrides))
        print(row(plans[-1]), flush=True)
  print()
  print("\n".join([HEADER, "|" + "---|" * (HEADER.count("|") - 1)] + [row(x) for x in plans]))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(plans, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
