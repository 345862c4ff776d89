"""`janus-jax plan`: the train step compiled ahead of time for N devices; per-device memory, FLOPs, fit."""
import json
import subprocess
import sys

import jax
import pytest

from janus_jax import plan as plan_lib
from janus_jax.configs import common
from janus_jax.train import step as step_lib

SHAPES = "experiments/janus_stages.py:stage=2,size=shapes"


def _config(**train):
  config = common.load_config(SHAPES)
  for k, v in train.items():
    config.train[k] = v
  return config


def test_cli_prints_the_plan_and_writes_json(tmp_path):
  out = tmp_path / "plan.json"
  done = subprocess.run([sys.executable, "-m", "janus_jax.cli", "plan", f"--config={SHAPES}",
                         "--config.input.batch_size=16", "--devices=4", "--platform=tpu", f"--json={out}"],
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "on 4 devices (mesh data=4 fsdp=1 tensor=1), compute bfloat16 / default for tpu" in done.stdout
  assert "global batch 16 x 96 tokens" in done.stdout and "fits (peak <= 90% of memory): H100 80GB yes" in done.stdout
  p = json.loads(out.read_text())
  assert p["num_devices"] == 4 and p["platform"] == "tpu" and p["config"] == SHAPES
  assert p["peak_bytes"] == p["argument_bytes"] + p["output_bytes"] - p["alias_bytes"] + p["temp_bytes"] > 0
  assert p["alias_bytes"] > 0  # the state is donated
  assert set(p["fits"]) == set(plan_lib.DEVICE_MEMORY_GB)


def test_bad_settings_are_named_before_compiling(tmp_path):
  done = subprocess.run([sys.executable, "-m", "janus_jax.cli", "plan", f"--config={SHAPES}", "--devices=3"],
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 2
  assert "Global batch size 32 is not divisible by the data-parallel size 3" in done.stderr
  assert "Traceback" not in done.stderr


def test_fewer_rows_at_once_need_less_memory_for_the_same_flops():
  """train.max_rows_per_device raises grad_accum_steps: smaller temporaries, the same arithmetic per step."""
  whole = plan_lib.plan(_config(), 8, "cpu")
  split = plan_lib.plan(_config(max_rows_per_device=1), 8, "cpu")
  assert (whole.grad_accum_steps, split.grad_accum_steps) == (1, 4)  # 32 rows over 8 devices, 1 at a time
  assert split.temp_bytes < 0.6 * whole.temp_bytes
  assert split.flops_per_step == pytest.approx(whole.flops_per_step, rel=1e-6)
  assert whole.argument_bytes == split.argument_bytes


def test_flops_count_every_layer_of_the_scanned_llm():
  """XLA's cost analysis counts a loop body once; the plan's FLOPs grow by >= 6 x tokens x params per added layer."""
  config = _config()
  flops = {}
  for layers in (2, 4):
    config.model.llm.num_layers = layers
    flops[layers] = plan_lib.plan(config, 8, "cpu").flops_per_step
  llm = config.model.llm
  per_layer = 4 * llm.hidden_size ** 2 + 3 * llm.hidden_size * llm.intermediate_size  # q k v o, gate up down
  tokens = config.input.batch_size * config.input.seq_len
  assert flops[4] - flops[2] >= 0.95 * 6 * tokens * per_layer * 2


def test_resolved_grad_accum():
  mesh = jax.sharding.Mesh(jax.devices()[:8], ("data",))
  assert step_lib.resolved_grad_accum({}, 64, mesh) == 1
  assert step_lib.resolved_grad_accum({"grad_accum_steps": 2}, 64, mesh) == 2
  assert step_lib.resolved_grad_accum({"max_rows_per_device": 3}, 64, mesh) == 4  # 8 rows -> 4 x 2 (3 does not divide)
  assert step_lib.resolved_grad_accum({"max_rows_per_device": 8, "grad_accum_steps": 2}, 64, mesh) == 2
  with pytest.raises(ValueError, match="max_rows_per_device must be >= 1"):
    step_lib.resolved_grad_accum({"max_rows_per_device": 0}, 64, mesh)
  assert step_lib.resolved_grad_accum({"max_rows_per_device": 2}, 40, mesh) == 5  # 5 rows per device: 1 at a time
  with pytest.raises(ValueError, match="No gradient accumulation count splits the global batch 36"):
    step_lib.resolved_grad_accum({"max_rows_per_device": 2}, 36, mesh)


def test_auto_resolves_for_the_target_platform():
  gpu = plan_lib._resolved_model(_config(), "gpu")  # pylint: disable=protected-access
  cpu = plan_lib._resolved_model(_config(), "cpu")  # pylint: disable=protected-access
  assert (gpu.llm.dtype, gpu.llm.matmul_precision) == ("bfloat16", "default")
  assert (cpu.llm.dtype, cpu.llm.matmul_precision) == ("float32", "highest")
  assert (gpu.vq.dtype, gpu.gen_head.dtype) == ("bfloat16", "bfloat16")  # every compute part, not only the LLM


def test_plan_table_makes_a_markdown_row_per_plan(tmp_path):
  """`python bench/plan_table.py` (README, Fit to memory), one Shapes row."""
  out = tmp_path / "plans.json"
  done = subprocess.run([sys.executable, "bench/plan_table.py", "--only", "janus_pro:shapes", "--stages", "2",
                         "--devices", "4", "--out", str(out)], capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = [l for l in done.stdout.splitlines() if l.startswith("| janus_pro shapes | 2 | 4 |")]
  assert len(rows) == 2  # as it finishes, and in the final table
  assert json.loads(out.read_text())[0]["name"] == ["janus_pro", "shapes", 2]
