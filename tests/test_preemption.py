"""Preemption and faults as a cluster delivers them, from outside the process: SIGKILL at random moments, SIGTERM
(the run saves, exports nothing and exits with 75, EX_TEMPFAIL), a truncated newest checkpoint; running the same
command again each time finishes bit-identically to an uninterrupted run."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from janus_jax.checkpoint import store

USER_ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # this machine's devices, as a user runs it
STEPS = 30  # checkpoints every 5 steps


def _command(workdir, data_dir):
  return [sys.executable, "-m", "janus_jax.main", "--config=experiments/janus_stages.py:stage=2,size=shapes",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", "--config.data.config_name=tiny",
          "--config.vq.steps=2", "--config.vq.num_images=32", f"--config.train.num_steps={STEPS}",
          "--config.input.batch_size=4", "--config.optim.warmup_steps=1", "--config.train.log_every=1",
          "--config.train.checkpoint_every=5"]


def _metrics(workdir):
  return open(workdir / "janus" / "metrics.jsonl").read().splitlines()


def _last_step(workdir):
  steps = [0]
  for line in _metrics(workdir) if (workdir / "janus" / "metrics.jsonl").exists() else []:
    try:
      steps.append(json.loads(line)["step"])
    except json.JSONDecodeError:  # a line being written
      pass
  return max(steps)


def _start(workdir, data_dir):
  return subprocess.Popen(_command(workdir, data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=USER_ENV)


def _wait_for_step(workdir, step, proc, timeout=300):
  deadline = time.time() + timeout
  while _last_step(workdir) < step and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  assert proc.poll() is None, f"the run ended before step {step}"


def test_kills_sigterm_and_a_corrupt_checkpoint_end_bit_identical(tmp_path):
  """SIGKILL at 3 random moments after the first checkpoint, then SIGTERM (saves, exit 75, nothing exported),
  then the newest checkpoint truncated: each restart of the same command goes on, and the last one ends with
  every step's metrics line and every exported param bit-identical to an uninterrupted run."""
  data_dir = tmp_path / "data"
  reference = tmp_path / "straight"
  out = subprocess.run(_command(reference, data_dir), capture_output=True, text=True, env=USER_ENV)
  assert out.returncode == 0, out.stderr[-3000:]

  workdir = tmp_path / "preempted"
  checkpoints = workdir / "janus" / "checkpoints"
  rng = random.Random(17)
  targets = sorted(rng.sample(range(6, 24), 3))  # after the first checkpoint (step 5), each past the previous
  for target in targets:
    proc = _start(workdir, data_dir)
    _wait_for_step(workdir, target, proc)
    time.sleep(rng.uniform(0.0, 0.3))  # mid-step, mid-save or mid-log
    proc.kill()
    proc.communicate()
  print(f"SIGKILL once each after logged steps {targets}")
  assert not (workdir / "model").exists()

  proc = _start(workdir, data_dir)
  _wait_for_step(workdir, 26, proc)
  proc.send_signal(signal.SIGTERM)
  t = time.time()
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 75, (proc.returncode, stderr[-3000:])
  assert time.time() - t < 60  # stops within a bounded time
  assert "preempted (SIGTERM)" in stdout and "Run the same command again" in stdout
  assert not (workdir / "model").exists()  # nothing half-trained is exported
  stopped_at = _last_step(workdir)
  assert stopped_at < STEPS and (checkpoints / str(stopped_at)).is_dir()  # saved the step it stopped at

  for f in (checkpoints / str(stopped_at) / "state").rglob("*"):  # the newest checkpoint, truncated
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  out = subprocess.run(_command(workdir, data_dir), capture_output=True, text=True, env=USER_ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"the checkpoint at step {stopped_at} cannot be read" in out.stdout
  assert (checkpoints / f"unreadable_{stopped_at}").is_dir()  # kept, not deleted
  assert _metrics(workdir) == _metrics(reference)  # every step's metrics line, bit for bit, none twice
  resumed, _ = store.load_checkpoint(str(workdir / "model"))
  straight, _ = store.load_checkpoint(str(reference / "model"))
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sigterm_in_the_image_tokenizer_stage_saves_and_exits_75(tmp_path):
  """SIGTERM while the VQ trains (before the Janus loop): a VQ checkpoint at the next step, exit 75, and the same
  command resumes the VQ from it."""
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "janus_jax.main", "--config=experiments/janus_stages.py:stage=2,size=shapes",
         f"--workdir={workdir}", "--config.data.config_name=tiny", "--config.vq.steps=100000",
         "--config.vq.num_images=32", "--mode=vq"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=USER_ENV)
  deadline = time.time() + 300
  while not (workdir / "vq" / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, proc.communicate()[1][-3000:]
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 75, (out[-2000:], err[-3000:])
  assert "[vq] SIGTERM: checkpoint written at step" in out and "preempted (SIGTERM)" in out
  saved = [int(p.name) for p in (workdir / "vq" / "checkpoints").iterdir() if p.name.isdigit()]
  assert saved and max(saved) >= 50 and not (workdir / "init_model").exists()
  again = subprocess.Popen(cmd + ["--config.vq.steps=%d" % (max(saved) + 2)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=USER_ENV)
  out, err = again.communicate(timeout=300)
  assert again.returncode == 0, err[-3000:]
  assert f"resumed vq training from step {max(saved)}" in out and (workdir / "init_model").exists()
