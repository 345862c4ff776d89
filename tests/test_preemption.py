"""Preemption as a scheduler delivers it, from outside the process: SIGTERM -> the run saves, exports nothing and
exits with 75 (EX_TEMPFAIL); running the same command again finishes bit-identically to an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from janus_jax.checkpoint import store

USER_ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # this machine's devices, as a user runs it
STEPS = 30


def _command(workdir, data_dir):
  return [sys.executable, "-m", "janus_jax.main", "--config=experiments/janus_stages.py:stage=2,size=shapes",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", "--config.data.config_name=tiny",
          "--config.vq.steps=2", "--config.vq.num_images=32", f"--config.train.num_steps={STEPS}",
          "--config.input.batch_size=4", "--config.optim.warmup_steps=1", "--config.train.log_every=1",
          "--config.train.checkpoint_every=5"]


def _losses(workdir):
  rows = [json.loads(l) for l in open(workdir / "janus" / "metrics.jsonl")]
  return {r["step"]: r["train/loss"] for r in rows}


def test_sigterm_saves_exits_75_and_the_rerun_is_bit_identical(tmp_path):
  data_dir = tmp_path / "data"
  reference = tmp_path / "straight"
  out = subprocess.run(_command(reference, data_dir), capture_output=True, text=True, env=USER_ENV)
  assert out.returncode == 0, out.stderr[-3000:]

  workdir = tmp_path / "preempted"
  proc = subprocess.Popen(_command(workdir, data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=USER_ENV)
  first = workdir / "janus" / "checkpoints" / "5"
  deadline = time.time() + 300
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  assert proc.poll() is None, "the run ended before its first checkpoint"
  proc.send_signal(signal.SIGTERM)
  t = time.time()
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 75, (proc.returncode, stderr[-3000:])
  assert time.time() - t < 60  # stops within a bounded time
  assert "preempted (SIGTERM)" in stdout and "Run the same command again" in stdout
  assert not (workdir / "model").exists()  # nothing half-trained is exported
  stopped_at = max(_losses(workdir))
  assert stopped_at < STEPS

  out = subprocess.run(_command(workdir, data_dir), capture_output=True, text=True, env=USER_ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"at step {stopped_at}" in out.stdout  # resumed where SIGTERM saved
  assert _losses(workdir) == _losses(reference)  # every step's metrics, bit for bit
  resumed, _ = store.load_checkpoint(str(workdir / "model"))
  straight, _ = store.load_checkpoint(str(reference / "model"))
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
