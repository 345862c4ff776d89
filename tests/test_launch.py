"""Sweep expansion (`get_hyper`) into `python -m janus_jax.main` work units."""
import subprocess
import sys

from launch import sweep


def test_get_hyper_expands_to_main_commands():
  units = sweep.work_units("experiments/janus_stages.py")
  assert len(units) == 3
  cmd = sweep.command("experiments/janus_stages.py", units[1], "/tmp/root/x/1")
  assert cmd[1:4] == ["-m", "janus_jax.main", "--config=experiments/janus_stages.py:stage=1,size=shapes"]
  assert "--config.optim.lr=0.002" in cmd and cmd[-1] == "--workdir=/tmp/root/x/1"


def test_dry_run_cli():
  out = subprocess.run([sys.executable, "launch/sweep.py", "--config=experiments/shapes_demo.py", "--root=/r",
                        "--name=e", "--dry_run"], capture_output=True, text=True, check=True).stdout
  assert out.strip().endswith("--workdir=/r/e/0")
