"""bench/accelerator_suite.py at tiny shapes on CPU: every case runs in its own process and reports its figures."""
import json
import subprocess
import sys


def test_the_suite_runs_every_case_at_tiny_size(tmp_path):
  out = tmp_path / "suite.json"
  done = subprocess.run([sys.executable, "bench/accelerator_suite.py", "--size", "tiny", "--json", str(out),
                         "--quantize", "int8"], capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  lines = done.stdout.splitlines()
  assert lines[0].startswith("device: ") and "shapes: tiny" in lines[0]
  results = json.loads(out.read_text())
  assert [r["case"].split()[0] for r in results] == ["decode"] * 2 + ["flow", "train"]
  assert results[1]["case"].endswith("int8 weights") and all(r["ms_per_step"] > 0 for r in results[:2])
  assert results[2]["ms_per_image"] > 0 and results[2]["tflop_per_image"] > 0
  assert results[3]["tokens_per_s"] > 0
  for r in results:  # CPU: no published floors or peak memory, printed as n/a rather than invented
    assert r.get("floor_ms", r.get("mfu")) is None and r["peak_gib"] is None
