"""Sweep expansion (`get_hyper`) into `python -m janus_jax.main` work units, and their XManager jobs."""
import json
import os
import subprocess
import sys
from unittest import mock

import pytest

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
  lines = out.strip().splitlines()  # the demo's get_hyper: seeds 0, 1, 2
  assert len(lines) == 3 and lines[0].endswith("--config.seed=0 --workdir=/r/e/0") and lines[2].endswith("/r/e/2")


def _sweep_cmds(root):
  units = [{"config.seed": 0, "config_arg": "fast"}, {"config.seed": 1, "config_arg": "fast"}]
  return [sweep.command("experiments/shapes_demo.py", u, f"{root}/{i}") for i, u in enumerate(units)]


def test_xm_local_runs_two_units(tmp_path):
  """`--xm` (xm_local.Local, a subprocess per unit, no Docker) runs both units of a 2-unit sweep (units that only
  prepare the tiny Shapes data: what is tested is the launch, the job itself is tested elsewhere)."""
  pytest.importorskip("xmanager")
  exp = _prepare_sweep(tmp_path, "h.sweep('config.seed', [0, 1])")
  db = tmp_path / "xm_db.yaml"  # xmanager's experiment database (default ~/.xmanager/experiments.sqlite3)
  db.write_text(f"sql_connector: sqlite\nsql_connection_settings:\n  backend: sqlite\n"
                f"  db_name: {tmp_path / 'xm.sqlite3'}\n")
  proc = subprocess.run([sys.executable, "launch/sweep.py", f"--config={exp}", f"--root={tmp_path / 'root'}",
                         "--name=e", "--xm", "--xm_executor=local", f"--xm_db_yaml_config_path={db}"],
                        capture_output=True, text=True, timeout=1500, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert (tmp_path / "xm.sqlite3").exists()
  for i in range(2):
    workdir = tmp_path / "root" / "e" / str(i)
    assert (workdir / "data" / "janus_shapes" / "tiny").is_dir(), proc.stdout[-3000:]
    assert json.loads((workdir / "unit.json").read_text())["seed"] == i
    assert f"[unit{i}]" in proc.stdout  # xm_local streams each unit's log under its job name


def test_xm_builds_vertex_and_kubernetes_jobs_without_submitting(tmp_path):
  """The cloud jobs carry each unit's flags and workdir; requirements / machine / pod fields carry the accelerator."""
  pytest.importorskip("xmanager")
  from xmanager import xm  # pylint: disable=import-outside-toplevel
  from xmanager.cloud import kubernetes, vertex  # pylint: disable=import-outside-toplevel
  from xmanager.xm import utils  # pylint: disable=import-outside-toplevel
  from xmanager.xm_local import executables  # pylint: disable=import-outside-toplevel
  from launch import xm_launch  # pylint: disable=import-outside-toplevel

  xm_launch.parse_flags([])  # xmanager's absl flags at their defaults (the pod spec reads one)
  cmds = _sweep_cmds("gs://bucket/e")
  image = executables.GoogleContainerRegistryImage(name="janus_jax", image_path="gcr.io/project/janus_jax:test")

  reqs = xm_launch.requirements("vertex", "A100", 2)
  package = xm_launch.packageable("vertex", cmds, reqs, source_dir=str(tmp_path))
  assert package.executable_spec.entrypoint.module_name == "janus_jax.main"
  assert any("-e '.[gpu]'" in line for line in package.executable_spec.docker_instructions)
  jobs = xm_launch.jobs(image, xm_launch.executor("vertex", reqs), cmds)
  for i, job in enumerate(jobs):
    args = job.args.to_list(utils.ARGV_ESCAPER)
    assert args == cmds[i][3:] and f"--config.seed={i}" in args and args[-1] == f"--workdir=gs://bucket/e/{i}"
    assert args[0] == "--config=experiments/shapes_demo.py:fast"
    assert job.executor.requirements.task_requirements[xm.ResourceType.A100] == 2
    assert vertex.get_machine_spec(job)["machine_type"] == "a2-highgpu-2g"

  for accelerator, count, selector, limits in [
      ("tpu_v5e", "8", {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                        "cloud.google.com/gke-tpu-topology": "2x4"}, {"google.com/tpu": "8"}),
      ("H100", "2", {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}, {"nvidia.com/gpu": "2"})]:
    reqs = xm_launch.requirements("kubernetes", accelerator, count)
    assert reqs.accelerator == xm.ResourceType[accelerator]
    jobs = xm_launch.jobs(image, xm_launch.executor("kubernetes", reqs), cmds)
    with xm_launch._gke_pod_spec():  # pylint: disable=protected-access
      # xmanager's own pod-spec builder; the API client is a stand-in, so nothing reaches a cluster.
      k8s_jobs = kubernetes.Client(api_client=mock.MagicMock()).launch(lambda n: f"1_1_{n}", jobs)
    for i, k8s_job in enumerate(k8s_jobs):
      pod = k8s_job.spec.template.spec
      assert pod.containers[0].args == cmds[i][3:] and pod.containers[0].image == "gcr.io/project/janus_jax:test"
      assert pod.node_selector == selector and pod.containers[0].resources.limits == limits
  assert kubernetes.node_selector_from_executor(jobs[0].executor) == {  # restored after the launch
      "cloud.google.com/gke-accelerator": "nvidia-tesla-h100"}


def test_xm_unsupported_accelerator_names_the_valid_ones():
  pytest.importorskip("xmanager")
  from launch import xm_launch  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"'tpu_v5p' is not available on vertex; valid: A100, L4_24TH, .*=kubernetes"):
    xm_launch.requirements("vertex", "tpu_v5p", 8)
  with pytest.raises(ValueError, match=r"multi-host .* launch/tpu_vm.sh"):
    xm_launch.requirements("kubernetes", "tpu_v5p", 64)
  out = subprocess.run([sys.executable, "launch/sweep.py", "--config=experiments/shapes_demo.py", "--root=gs://b",
                        "--xm", "--xm_executor=vertex", "--xm_accelerator=v5p"], capture_output=True, text=True)
  assert out.returncode == 2 and "not available on vertex; valid: A100" in out.stderr, out.stderr


def _prepare_sweep(tmp_path, units: str):
  """An experiment whose units only prepare the tiny Shapes data (a few seconds each)."""
  exp = tmp_path / "prep.py"
  exp.write_text(f"from janus_jax.configs import common\n\n\ndef get_config(arg=None):\n"
                 f"  c = common.load_config({os.path.abspath('experiments/shapes_demo.py') + ':fast'!r})\n"
                 f"  c.mode = 'prepare'\n  return c\n\n\ndef get_hyper(h):\n  return {units}\n")
  return exp


def _sweep(exp, root, *flags):
  return subprocess.run([sys.executable, "launch/sweep.py", f"--config={exp}", f"--root={root}", "--name=e",
                         "--local", *flags], capture_output=True, text=True, timeout=600, check=False)


def test_local_parallel_runs_units_side_by_side_and_keeps_going_after_a_failure(tmp_path):
  exp = _prepare_sweep(tmp_path, "h.chainit([h.sweep('config.seed', [0, 1]), "
                                 "[{'config.seed': 2, 'config.data.config_name': 'no_such_config'}]])")
  proc = _sweep(exp, tmp_path / "root", "--parallel", "2")
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "1 of 3 units failed: 2 (exit" in proc.stdout and "janus-jax report" in proc.stdout
  sweep_dir = tmp_path / "root" / "e"
  exits = [json.loads((sweep_dir / str(i) / "exit.json").read_text()) for i in range(3)]
  assert [e["returncode"] == 0 for e in exits] == [True, True, False]
  assert exits[1]["started"] < exits[0]["started"] + exits[0]["seconds"]  # unit 1 started while unit 0 ran
  unit = json.loads((sweep_dir / "0" / "unit.json").read_text())
  assert unit["seed"] == 0 and unit["variant"] == "data.config_name=(default)" and unit["command"][-1].endswith("/e/0")
  assert "[unit 1] " in proc.stdout and (sweep_dir / "1" / "log.txt").read_text().strip()
  from janus_jax import report  # pylint: disable=import-outside-toplevel
  assert list(report.load_units(sweep_dir)["status"]) == ["done", "done", "failed"]
  again = _sweep(exp, tmp_path / "root")  # finished units are skipped, the failed one runs again
  assert "[unit 0] finished in an earlier run: skipped" in again.stdout and "[unit 2] + " in again.stdout


def test_bad_sweeps_stop_before_anything_runs(tmp_path):
  exp = _prepare_sweep(tmp_path, "h.sweep('config.optim.learning_rate', [1e-3])")
  proc = _sweep(exp, tmp_path / "root")
  assert proc.returncode == 2 and "work unit 0" in proc.stderr and "no field 'learning_rate'" in proc.stderr
  assert "Fix the override in get_hyper" in proc.stderr and not (tmp_path / "root").exists()
  proc = _sweep(tmp_path / "missing.py", tmp_path / "root")
  assert proc.returncode == 2 and "no such file" in proc.stderr


def test_sigterm_stops_a_local_sweep_and_its_units(tmp_path):
  """A sweep started in the background (`nohup ... &` ignores SIGINT) stops on SIGTERM: each running unit gets
  SIGTERM (the main job saves and exits 75), no exit.json is written, so the same command resumes them."""
  import signal, time  # pylint: disable=import-outside-toplevel,multiple-imports
  unit = ("import signal, sys, time, pathlib\n"
          "def stop(*_):\n  pathlib.Path(sys.argv[1], 'got_sigterm').write_text('1'); sys.exit(75)\n"
          "signal.signal(signal.SIGTERM, stop)\nprint('ready', flush=True)\ntime.sleep(120)\n")
  workdirs = [str(tmp_path / str(i)) for i in range(2)]
  for w in workdirs:
    os.makedirs(w)
  driver = ("import sys\nfrom launch import sweep\n"
            f"sweep.run_local([[sys.executable, '-c', {unit!r}, w] for w in {workdirs!r}], {workdirs!r}, parallel=2)\n")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.Popen([sys.executable, "-c", driver], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
  deadline = time.time() + 60
  while time.time() < deadline and not all(
      os.path.exists(os.path.join(w, "log.txt")) and "ready" in open(os.path.join(w, "log.txt")).read()
      for w in workdirs):
    time.sleep(0.2)
  proc.send_signal(signal.SIGINT)  # ignored, as under nohup
  time.sleep(0.5)
  assert proc.poll() is None
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  assert "interrupted (Ctrl-C or SIGTERM)" in out, out
  for w in workdirs:
    assert os.path.exists(os.path.join(w, "got_sigterm")) and not os.path.exists(os.path.join(w, "exit.json"))
