"""XManager work units for `launch/sweep.py --xm`: one `xm.Job` per `get_hyper` unit (`pip install -e '.[xm]'`).

Every executor runs the same argv, `python -m janus_jax.main <unit flags> --workdir=...`: `local` as a subprocess of
this interpreter (`xm.binary` + `xm_local.Local`, no Docker), `vertex` (GPUs) and `kubernetes` (GKE: GPUs and
single-host TPU slices) as a Docker image of the repository's sources (`xm.python_container`) built with local Docker
or Cloud Build. Multi-host TPU slices (pods) use `launch/tpu_vm.sh`. Only this module imports xmanager.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile

from absl import flags
from xmanager import xm
from xmanager import xm_flags  # noqa: F401  pylint: disable=unused-import  (defines the --xm_* absl flags)
from xmanager import xm_local

EXECUTORS = ("local", "vertex", "kubernetes")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_IMAGE = "python:3.11-slim"
# Copied into the image: what `pip install .` and the main job read.
_SOURCES = ("setup.py", "janus_jax", "experiments", "launch")
_ALIASES = {"L4": "L4_24TH", "A100_80GB": "A100_80GIB", "V4": "TPU_V4", "V5E": "TPU_V5E", "V5P": "TPU_V5P",
            "V6E": "TPU_V6E"}
# The GPUs that xmanager 0.8.5 maps to a Vertex machine type (for H100 / H200 / B200 / A100_80GIB it falls back to an
# n1-standard machine, which Vertex rejects) and the counts those machine types (n1, a2-highgpu / megagpu, g2) hold.
VERTEX_GPUS = {"P4": (1, 2, 4), "T4": (1, 2, 4), "P100": (1, 2, 4), "V100": (1, 2, 4, 8), "A100": (1, 2, 4, 8, 16),
               "L4_24TH": (1, 2, 4, 8)}
# GKE node labels (cloud.google.com/gke-accelerator); xmanager itself only writes "nvidia-tesla-<name>".
GKE_GPUS = {"P4": "nvidia-tesla-p4", "T4": "nvidia-tesla-t4", "P100": "nvidia-tesla-p100", "V100": "nvidia-tesla-v100",
            "A100": "nvidia-tesla-a100", "A100_80GIB": "nvidia-a100-80gb", "L4_24TH": "nvidia-l4",
            "H100": "nvidia-h100-80gb", "H100_MEGA": "nvidia-h100-mega-80gb", "H200": "nvidia-h200-141gb",
            "B200": "nvidia-b200"}
# GKE TPU node label (cloud.google.com/gke-tpu-accelerator) and the single-host topology for each chip count.
GKE_TPUS = {"TPU_V4": ("tpu-v4-podslice", {4: "2x2x1"}), "TPU_V5P": ("tpu-v5p-slice", {4: "2x2x1"}),
            "TPU_V5E": ("tpu-v5-lite-podslice", {1: "1x1", 4: "2x2", 8: "2x4"}),
            "TPU_V6E": ("tpu-v6e-slice", {1: "1x1", 4: "2x2", 8: "2x4"})}


def parse_flags(argv: list[str]) -> None:
  """Parses xmanager's own absl flags (--xm_db_yaml_config_path, --xm_build_image_locally, ...); [] = defaults."""
  try:
    flags.FLAGS([sys.argv[0], *argv])
  except flags.Error as e:
    raise ValueError(f"XManager flags: {e}") from e


def requirements(executor: str, accelerator: str | None, count: str | int = 1) -> xm.JobRequirements:
  """The `xm.JobRequirements` of one unit; `count` is a number of chips or, for TPUs, a topology such as "2x4"."""
  if executor not in EXECUTORS:
    raise ValueError(f"Unknown XManager executor {executor!r}; valid: {', '.join(EXECUTORS)}.")
  if accelerator is None or accelerator.lower() in ("", "cpu", "none"):
    return xm.JobRequirements()
  if executor == "local":
    raise ValueError("--xm_executor=local runs on this machine; --xm_accelerator is for vertex / kubernetes.")
  name = _ALIASES.get(accelerator.upper(), accelerator.upper())
  valid = VERTEX_GPUS if executor == "vertex" else (*GKE_GPUS, *GKE_TPUS)
  if name not in valid:
    hint = ""
    if executor == "vertex" and name.startswith("TPU"):
      hint = (" Vertex has no TPU v4 / v5 / v6 through xmanager: use --xm_executor=kubernetes (single-host slices) or"
              " launch/tpu_vm.sh (pods).")
    elif executor == "vertex" and name in GKE_GPUS:
      hint = f" xmanager 0.8.5 has no Vertex machine type for {name}: use --xm_executor=kubernetes."
    elif name.startswith("TPU"):
      hint = " Multi-host TPU pods: launch/tpu_vm.sh."
    aliases = [a for a, n in _ALIASES.items() if n in valid]
    raise ValueError(f"--xm_accelerator={accelerator!r} is not available on {executor}; valid: "
                     f"{', '.join(sorted(valid))} (aliases: {', '.join(aliases)}) or cpu.{hint}")
  if name in GKE_TPUS:
    return xm.JobRequirements({name: _single_host_topology(name, count)})
  counts = VERTEX_GPUS[name] if executor == "vertex" else range(1, 17)
  if not str(count).isdigit() or int(count) not in counts:
    raise ValueError(f"--xm_count={count!r}: {executor} runs {name} in counts {', '.join(map(str, counts))}."
                     if executor == "vertex" else f"--xm_count={count!r}: a GPU count is a positive integer <= 16.")
  return xm.JobRequirements({name: int(count)})


def _single_host_topology(name: str, count: str | int) -> str:
  label, topologies = GKE_TPUS[name]
  count = str(count)
  topology = topologies.get(int(count)) if count.isdigit() else count
  if topology not in topologies.values():
    raise ValueError(f"--xm_count={count}: one GKE node of {name} ({label}) has {sorted(topologies)} chips, topology "
                     f"{' / '.join(topologies.values())}; multi-host slices (one pod per host): launch/tpu_vm.sh.")
  return topology


def executor(kind: str, reqs: xm.JobRequirements) -> xm.Executor:
  """The xm_local executor of `kind` (local, vertex or kubernetes) with `reqs`."""
  if kind == "local":
    return xm_local.Local(requirements=reqs, experimental_stream_output=True)
  if kind == "vertex":
    return xm_local.Vertex(requirements=reqs)
  if kind == "kubernetes":
    return xm_local.Kubernetes(requirements=reqs)
  raise ValueError(f"Unknown XManager executor {kind!r}; valid: {', '.join(EXECUTORS)}.")


def packageable(kind: str, cmds: list[list[str]], reqs: xm.JobRequirements, source_dir: str = REPO,
                base_image: str = BASE_IMAGE, push_image_tag: str | None = None) -> xm.Packageable:
  """What `experiment.package` turns into the units' executable: the local interpreter or an image of `source_dir`."""
  prog = {tuple(c[:3]) for c in cmds}
  if len(prog) != 1 or list(prog)[0][1:] != ("-m", "janus_jax.main"):
    raise ValueError(f"Work units must all run `python -m janus_jax.main`; got {sorted(prog)}.")
  if kind == "local":
    python, *args = cmds[0][:3]
    return xm.binary(path=python, args=args, executor_spec=xm_local.Local.Spec())
  extra = "[tpu]" if reqs.accelerator in xm.TpuType else "[gpu]" if reqs.accelerator in xm.GpuType else ""
  name = os.path.basename(os.path.normpath(source_dir))
  spec = (xm_local.Vertex if kind == "vertex" else xm_local.Kubernetes).Spec(push_image_tag=push_image_tag)
  return xm.python_container(
      executor_spec=spec, path=source_dir, base_image=base_image, entrypoint=xm.ModuleName("janus_jax.main"),
      docker_instructions=["ENV LANG=C.UTF-8 PYTHONUNBUFFERED=1", f"COPY --chown=1000:root {name}/ /janus_jax",
                           "WORKDIR /janus_jax", f"RUN python -m pip install --no-cache-dir -e '.{extra}'"])


def jobs(executable: xm.Executable, executor_: xm.Executor, cmds: list[list[str]]) -> list[xm.Job]:
  """One `xm.Job` per unit: `executable` (which runs `python -m janus_jax.main`) with the unit's flags."""
  return [xm.Job(executable=executable, executor=executor_, name=f"unit{i}", args=cmd[3:])
          for i, cmd in enumerate(cmds)]


def gke_pod_fields(reqs: xm.JobRequirements) -> tuple[dict[str, str], dict[str, str]]:
  """(node selector, extra container limits) that GKE needs for `reqs`' accelerator."""
  name = reqs.accelerator.name if reqs.accelerator is not None else None
  if name in GKE_GPUS:
    return {"cloud.google.com/gke-accelerator": GKE_GPUS[name]}, {}
  if name in GKE_TPUS:
    topology = "x".join(str(d) for d in reqs.topology.dimensions)
    return ({"cloud.google.com/gke-tpu-accelerator": GKE_TPUS[name][0], "cloud.google.com/gke-tpu-topology": topology},
            {"google.com/tpu": str(reqs.topology.chip_count)})
  return {}, {}


@contextlib.contextmanager
def _gke_pod_spec():
  """Makes xmanager's Kubernetes backend write GKE's accelerator node labels and TPU limits (see `gke_pod_fields`)."""
  from xmanager.cloud import kubernetes  # pylint: disable=import-outside-toplevel
  saved = (kubernetes.node_selector_from_executor, kubernetes.requirements_from_executor,
           kubernetes.annotations_from_executor)

  def resources(executor_):
    out = saved[1](executor_)
    out.limits = {**(out.limits or {}), **gke_pod_fields(executor_.requirements)[1]}
    return out

  kubernetes.node_selector_from_executor = lambda executor_: gke_pod_fields(executor_.requirements)[0]
  kubernetes.requirements_from_executor = resources
  kubernetes.annotations_from_executor = lambda executor_: {}  # the legacy Cloud TPU (v2 / v3) annotation
  try:
    yield
  finally:
    (kubernetes.node_selector_from_executor, kubernetes.requirements_from_executor,
     kubernetes.annotations_from_executor) = saved


def launch(title: str, kind: str, cmds: list[list[str]], reqs: xm.JobRequirements, base_image: str = BASE_IMAGE,
           push_image_tag: str | None = None) -> None:
  """Adds the units to a new xm_local experiment; returns when local units have finished (raises if one failed)."""
  with contextlib.ExitStack() as stack:
    source_dir = REPO
    if kind != "local":  # only the sources go into the image, not .venv / workdir / .git
      source_dir = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), "janus_jax")
      os.makedirs(source_dir)
      for path in _SOURCES:
        src = os.path.join(REPO, path)
        if os.path.isdir(src):
          shutil.copytree(src, os.path.join(source_dir, path), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
          shutil.copy(src, source_dir)
    if kind == "kubernetes":
      stack.enter_context(_gke_pod_spec())
    with xm_local.create_experiment(experiment_title=title) as experiment:
      [executable] = experiment.package([packageable(kind, cmds, reqs, source_dir, base_image, push_image_tag)])
      for job in jobs(executable, executor(kind, reqs), cmds):
        experiment.add(job)
