"""When the main job calls jax.distributed.initialize(): cluster detection from the environment, the
--distributed flag, and clear errors (exit 2) for a half-configured cluster, a forced start without one, and a
workdir that is a file. (Two real processes: tests/test_multihost.py.)"""
import os
import subprocess
import sys

import pytest

from janus_jax import distributed

USER_ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith(("JAX_", "SLURM_", "OMPI_"))}
MAIN = [sys.executable, "-m", "janus_jax.main", "--config=experiments/janus_stages.py:stage=1,size=shapes"]


@pytest.mark.parametrize("env, kind", [
    ({}, None),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "1"}, "jax"),
    ({"JAX_NUM_PROCESSES": "2"}, "jax"),
    ({"JAX_NUM_PROCESSES": "1"}, None),
    ({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "16", "SLURM_PROCID": "3"}, "slurm"),
    ({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1"}, None),  # an interactive one-task allocation
    ({"OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.0.0.1:34911"}, "openmpi"),
    ({"OMPI_COMM_WORLD_SIZE": "8"}, "openmpi"),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, "tpu"),
    ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),  # a single-host TPU VM
    ({"MEGASCALE_COORDINATOR_ADDRESS": "t0:8080"}, "tpu"),
])
def test_cluster_environment_is_detected_from_variables(env, kind):
  assert distributed.cluster_environment(env) == kind


def test_modes_that_do_not_initialize():
  cluster = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "16", "SLURM_PROCID": "3"}
  assert distributed.initialize("off", cluster) is None  # forced off inside a cluster
  assert distributed.initialize("auto", {}) is None  # a workstation
  with pytest.raises(ValueError, match="choose one of"):
    distributed.initialize("maybe", {})
  with pytest.raises(distributed.DistributedInitError, match=r"missing: \['JAX_COORDINATOR_ADDRESS', 'JAX_PROCESS_ID'\]"):
    distributed.initialize("auto", {"JAX_NUM_PROCESSES": "2"})
  with pytest.raises(distributed.DistributedInitError, match=r"JAX_PROCESS_ID=2 is not in 0..1"):
    distributed.initialize("auto", {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
                                    "JAX_PROCESS_ID": "2"})


def _fails(args, env, tmp_path):
  out = subprocess.run(MAIN + args, capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  assert not (tmp_path / "w" / "data").exists()
  return out.stderr


def test_cluster_faults_are_named_by_the_main_job(tmp_path):
  err = _fails([f"--workdir={tmp_path / 'w'}"], dict(USER_ENV, JAX_NUM_PROCESSES="2"), tmp_path)
  assert "needs all three of JAX_COORDINATOR_ADDRESS" in err and "--distributed=off" in err
  err = _fails([f"--workdir={tmp_path / 'w'}", "--distributed=on"], USER_ENV, tmp_path)
  assert "jax.distributed.initialize() failed (no cluster environment was detected)" in err
  assert "JAX_COORDINATOR_ADDRESS=host:port" in err
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  err = _fails([f"--workdir={blocker}"], USER_ENV, tmp_path)
  assert "is a file, not a folder" in err and "--workdir" in err
  assert blocker.read_text() == "not a folder"
