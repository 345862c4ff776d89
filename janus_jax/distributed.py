"""Many hosts: when to call `jax.distributed.initialize()`, decided from the environment before JAX starts.

    initialize("auto")   # in a cluster (see `cluster_environment`): initialize; on a workstation: nothing
    initialize("on")     # always (jax must then find the coordinator itself; a clear error if it cannot)
    initialize("off")    # never (e.g. to debug one host of a pod on its own)

Detection reads environment variables only (no metadata-server queries): explicit JAX variables, SLURM with more
than one task, Open MPI (mpirun), and multi-host Cloud TPU (GKE `TPU_WORKER_HOSTNAMES` with several hosts, or
`MEGASCALE_COORDINATOR_ADDRESS`). On a multi-host GCE TPU VM whose environment has none of these, pass `on`.
CPU multi-process runs (tests, debugging) use gloo collectives, JAX's default on CPU.
"""
from __future__ import annotations

import os
from typing import Mapping

MODES = ("auto", "on", "off")


class DistributedInitError(RuntimeError):
  """`jax.distributed.initialize()` failed; the message names the environment that was detected and the fix."""


def _count(env: Mapping[str, str], key: str) -> int:
  try:
    return int(env.get(key, "1"))
  except ValueError:
    return 1


def cluster_environment(env: Mapping[str, str] | None = None) -> str | None:
  """The kind of multi-process environment `env` (default os.environ) describes, or None for a single process.

  Returns one of "jax" (JAX_COORDINATOR_ADDRESS, or JAX_NUM_PROCESSES > 1), "slurm" (SLURM_JOB_ID with
  SLURM_NTASKS > 1), "openmpi" (OMPI_MCA_orte_hnp_uri or OMPI_COMM_WORLD_SIZE > 1), "tpu" (multi-host Cloud TPU).
  """
  env = os.environ if env is None else env
  if env.get("JAX_COORDINATOR_ADDRESS") or _count(env, "JAX_NUM_PROCESSES") > 1:
    return "jax"
  if env.get("SLURM_JOB_ID") and _count(env, "SLURM_NTASKS") > 1:
    return "slurm"
  if env.get("OMPI_MCA_orte_hnp_uri") or _count(env, "OMPI_COMM_WORLD_SIZE") > 1:
    return "openmpi"
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu"
  return None


def _jax_variables(env: Mapping[str, str]) -> dict:
  """initialize() arguments from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (jax itself reads
  only the first)."""
  missing = [k for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not env.get(k)]
  if missing:
    raise DistributedInitError(
        f"A multi-process run configured by JAX variables needs all three of JAX_COORDINATOR_ADDRESS, "
        f"JAX_NUM_PROCESSES, JAX_PROCESS_ID; missing: {missing}. Fix: set them on every process (process ids "
        "0..N-1), or unset them and run with --distributed=off.")
  try:
    num, pid = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
  except ValueError as e:
    raise DistributedInitError(f"JAX_NUM_PROCESSES / JAX_PROCESS_ID must be integers: {e}.") from e
  if not 0 <= pid < num:
    raise DistributedInitError(f"JAX_PROCESS_ID={pid} is not in 0..{num - 1} (JAX_NUM_PROCESSES={num}).")
  return dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"], num_processes=num, process_id=pid)


def initialize(mode: str = "auto", env: Mapping[str, str] | None = None) -> str | None:
  """Calls `jax.distributed.initialize()` as `mode` says (see the module docstring); returns the environment kind
  it initialized for ("forced" for `on` outside a detected cluster), or None when it did not initialize.

  Must run before anything touches a JAX backend. Raises ValueError for an unknown mode and DistributedInitError
  (naming the detected environment and the fix) when JAX cannot join the cluster."""
  if mode not in MODES:
    raise ValueError(f"distributed={mode!r}: choose one of {list(MODES)}.")
  kind = cluster_environment(env)
  if mode == "off" or (mode == "auto" and kind is None):
    return None
  import jax  # pylint: disable=import-outside-toplevel
  kwargs = _jax_variables(os.environ if env is None else env) if kind == "jax" else {}
  try:
    jax.distributed.initialize(**kwargs)
  except Exception as e:  # pylint: disable=broad-except  # jax raises ValueError / RuntimeError / XlaRuntimeError
    detected = f"detected a {kind} cluster environment" if kind else "no cluster environment was detected"
    raise DistributedInitError(
        f"jax.distributed.initialize() failed ({detected}): {str(e).strip().splitlines()[0] if str(e) else e!r}. "
        "Fix: set JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process, or "
        "run with --distributed=off on a single host.") from e
  return kind or "forced"


def barrier(name: str) -> None:
  """All processes wait here until every one has arrived (nothing with one process); `name` must be the same on
  every process and unique per call site."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)
