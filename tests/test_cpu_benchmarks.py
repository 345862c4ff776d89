"""The CPU benchmark scripts the README names, at their smallest: they run and print their figures."""
import re
import subprocess
import sys


def _run(*args):
  done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


def test_profile_ar_decode_takes_the_loop_apart():
  out = _run("bench/profile_ar_decode.py", "--tokens", "16", "--repeats", "1")
  assert out.startswith("cpu: ")
  ms = {m.group(1): float(m.group(2)) for m in re.finditer(r"^  (full|llm|head|embed)\s+([0-9.]+)", out, re.M)}
  assert set(ms) == {"full", "llm", "head", "embed"} and all(v > 0 for v in ms.values())
  floors = re.search(r"floors: read per step ([0-9.]+) MiB of weights \+ ([0-9.]+) MiB of KV cache .* = ([0-9.]+) ms "
                     r"\(([0-9.]+) GB/s achieved\)", out)
  assert floors and all(float(x) > 0 for x in floors.groups())


def test_bench_ar_decode_against_transformers_and_xla_defaults():
  """`make bench` and `python bench/bench_ar_decode.py --compare-xla-defaults` (README, Benchmark) at 16 tokens."""
  out = _run("bench/bench_ar_decode.py", "--tokens", "16", "--repeats", "1", "--compare-xla-defaults")
  assert out.startswith("cpu: ") and "decode compiler options: {'xla_cpu_experimental_ynn_fusion_type': ''}" in out
  assert re.search(r"^janus_jax\s+: .* \(([0-9.]+) ms/step\)", out, re.M)
  assert re.search(r"^XLA defaults : .*x as fast; tokens identical$", out, re.M)
  assert re.search(r"^transformers : .* ms/step\)", out, re.M) and re.search(r"^speed-up\s+: [0-9.]+x", out, re.M)


def test_train_step_flops_against_the_matmul_peak():
  out = _run("bench/bench_train_flops.py", "--config", "experiments/shapes_demo.py:fast=True", "--steps", "2",
             "--matmul-size", "512")
  assert out.startswith("cpu: ") and "fp32 matmul peak" in out
  share = re.search(r"= ([0-9.]+)% of the matmul peak", out)
  assert share and 0 < float(share.group(1)) < 100


def test_input_pipeline_cost_per_read_threads(tmp_path):
  out = _run("bench/bench_input_pipeline.py", "--config", "experiments/shapes_demo.py:fast=True", "--data_dir",
             str(tmp_path / "data"), "--batches", "3", "--read_threads", "0", "2")
  assert out.startswith("cpu: ")
  rows = re.findall(r"^read_threads=\s*(\d+):\s+([0-9.]+) ms/batch wall,\s+([0-9.]+) ms/batch CPU", out, re.M)
  assert [int(r[0]) for r in rows] == [0, 2] and all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
