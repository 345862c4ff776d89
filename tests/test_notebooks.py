"""The notebooks, executed top to bottom under a real Jupyter kernel (papermill + ipykernel, this interpreter), with
parameters that shrink each to seconds; the tests assert on what the cells produce.

A kernel error fails the test with the failing cell's traceback (papermill's PapermillExecutionError). The kernel
inherits this process's environment, so it shares the session's XLA compilation cache (tests/conftest.py) and its
8 fake CPU devices.
"""
import ast
import csv
import glob
import json
import os
import sys

import numpy as np
import papermill
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")
KERNEL = "janus-jax-tests"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
  """A kernelspec that runs this interpreter (the venv's python), first on JUPYTER_PATH for this module."""
  root = tmp_path_factory.mktemp("jupyter")
  spec = root / "kernels" / KERNEL
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "janus_jax tests", "language": "python"}))
  old = os.environ.get("JUPYTER_PATH")
  os.environ["JUPYTER_PATH"] = str(root) + (os.pathsep + old if old else "")
  yield KERNEL
  if old is None:
    os.environ.pop("JUPYTER_PATH")
  else:
    os.environ["JUPYTER_PATH"] = old


def execute(kernel, name, out_path, **parameters):
  """Runs notebooks/<name> with `parameters` injected after its `parameters` cell; returns the executed notebook.

  The kernel gets this environment without PYTEST_CURRENT_TEST: with it, ipykernel does not capture the process's
  stdout / stderr file descriptors (as it does in Jupyter and Colab), and `sys.stderr.fileno()` (sentencepiece's
  trainer calls it) then raises."""
  pytest_var = os.environ.pop("PYTEST_CURRENT_TEST", None)
  try:
    return papermill.execute_notebook(os.path.join(NOTEBOOKS, name), str(out_path), parameters=parameters,
                                      kernel_name=kernel, cwd=REPO, progress_bar=False, execution_timeout=600)
  finally:
    if pytest_var is not None:
      os.environ["PYTEST_CURRENT_TEST"] = pytest_var


def text_of(nb) -> str:
  """Everything the code cells printed (stdout / stderr streams and text results)."""
  parts = []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      if out.get("output_type") == "stream":
        parts.append(out.get("text", ""))
      elif "data" in out and "text/plain" in out["data"]:
        parts.append(out["data"]["text/plain"])
  return "".join(parts)


def images_of(nb) -> int:
  return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def metrics_lines(workdir) -> list[dict]:
  with open(os.path.join(workdir, "janus", "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_clean_and_parametrised():
  """Saved without outputs; one `parameters` cell first, then the Colab-only install of REPO_URL."""
  for path in sorted(glob.glob(os.path.join(NOTEBOOKS, "*.ipynb"))):
    with open(path) as f:
      nb = json.load(f)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{path} has outputs"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0], path
    assigned = [t.id for node in ast.parse("".join(code[0]["source"])).body if isinstance(node, ast.Assign)
                for t in node.targets]
    assert "REPO_URL" in assigned and list(papermill.inspect_notebook(path)) == assigned, path  # papermill parses all
    install = "".join(code[1]["source"])
    assert "'google.colab' in sys.modules" in install.replace('"', "'") and 'git+{REPO_URL}' in install, path


def test_01_inference_random_fallback(kernel, tmp_path):
  """No CKPT and no demo model: a tiny random model answers Shapes questions and generates a grid."""
  from janus_jax.configs import models  # pylint: disable=import-outside-toplevel
  from janus_jax.models.configs import JanusConfig  # pylint: disable=import-outside-toplevel
  out_dir = tmp_path / "out"
  prompts = ["a red circle", "two blue squares"]
  nb = execute(kernel, "01_inference.ipynb", tmp_path / "01.ipynb", CKPT=None, DEMO_MODEL=str(tmp_path / "none"),
               NUM_SCENES=2, MAX_NEW_TOKENS=4, PROMPTS=prompts, NUM_IMAGES=2, OUTPUT_DIR=str(out_dir))
  size = JanusConfig.from_dict(models.janus_tiny()).generated_image_size
  results = json.loads((out_dir / "answers.json").read_text())
  assert results["model"] == "random"
  assert "TINY RANDOM model" in text_of(nb)
  assert results["images_shape"] == [4, size, size, 3]
  assert len(results["answers"]) == 2 and all(isinstance(a, str) for a in results["answers"])
  grid = np.asarray(Image.open(out_dir / "generated.png"))
  assert grid.shape == (2 * size, 2 * size, 3)  # one row per prompt, NUM_IMAGES columns
  assert images_of(nb) >= 3  # the question figure, the generated grid and the preview strip
  # The streaming preview: frames in order, ending at the sample's last token; the GIF holds every frame.
  tokens = JanusConfig.from_dict(models.janus_tiny()).num_image_tokens
  steps = results["preview_steps"]
  assert steps == sorted(set(steps)) and steps[-1] == tokens and len(steps) >= 2
  assert results["preview_shape"] == [size, size, 3]
  assert Image.open(out_dir / "preview.gif").n_frames == len(steps)


def test_02_train_shapes_resumes_and_evaluates(kernel, tmp_path):
  """Chunked training on the fast demo config (its 4 steps, so the programs are those tests/test_main_job.py
  compiles): stopped at step 2, a second run with the same WORKDIR continues to 4 (no step trained twice, one LR
  schedule), the loss falls, and the main job's evaluation writes its scores."""
  workdir = tmp_path / "shapes"
  params = dict(CONFIG=os.path.join(REPO, "experiments", "shapes_demo.py") + ":fast", WORKDIR=str(workdir),
                TRAIN_STEPS=4, CHUNK_STEPS=2, LOG_EVERY=1, VQ_STEPS=None, VQ_IMAGES=None, EVAL_PER_CATEGORY=None,
                EVAL_QUESTIONS=None)
  first = execute(kernel, "02_train_shapes.ipynb", tmp_path / "02a.ipynb", STOP_AT_STEP=2, **params)
  assert [r["step"] for r in metrics_lines(workdir)] == [1, 2]
  assert "no training checkpoint yet, starting at step 0" in text_of(first)
  assert f"XLA compilation cache: {os.environ['JAX_COMPILATION_CACHE_DIR']}\n" in text_of(first)  # inherited
  assert "evaluation is skipped" in text_of(first) and not (workdir / "eval.json").exists()

  second = execute(kernel, "02_train_shapes.ipynb", tmp_path / "02b.ipynb", STOP_AT_STEP=None, **params)
  out = text_of(second)
  assert "holds a checkpoint at step 2: resuming there" in out
  assert "at step 2" in out.split("resumed from", 1)[1].splitlines()[0]  # the training loop's own resume line
  assert "[vq] done in an earlier run" in out  # the image tokenizer is not trained again
  rows = metrics_lines(workdir)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  losses = [r["train/loss"] for r in rows]
  assert losses[-1] < losses[0], losses
  lrs = [r["train/lr"] for r in rows]
  # Warm-up, then one cosine over the 4 steps: the first chunk (steps 1-2) did not run a schedule of its own.
  assert lrs[0] < lrs[1] and lrs[1] >= lrs[2] > lrs[3], lrs
  assert sorted(os.path.basename(p) for p in glob.glob(str(workdir / "janus" / "samples_*.png"))) == [
      "samples_000002.png", "samples_000004.png"]
  scores = json.loads((workdir / "eval.json").read_text())
  for model in ("untrained", "trained"):
    for task in ("generation", "understanding"):
      assert 0.0 <= scores[model][task]["overall"] <= 1.0
  assert images_of(first) >= 1 and images_of(second) >= 3  # live plot; + sample grids, scores, samples.png


def _fabricate_sweep(root):
  """2 variants x 3 seeds as launch/sweep.py --local leaves them; unit 5 failed (exit 1, no eval.json)."""
  rng = np.random.default_rng(0)
  for unit in range(6):
    variant, seed = ("siglip", "vq")[unit // 3], unit % 3
    d = root / str(unit)
    (d / "janus").mkdir(parents=True)
    command = ["python", "-m", "janus_jax.main", "--config=experiments/ablations.py:decoupling",
               f"--config.model.und_encoder={variant}", f"--config.seed={seed}", f"--workdir={d}"]
    (d / "unit.json").write_text(json.dumps({"unit": unit, "variant": variant, "seed": seed, "overrides": {
        "model.und_encoder": variant, "seed": seed}, "command": command}))
    steps = range(10, 101 if unit != 5 else 51, 10)
    (d / "janus" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "train/loss": 5.0 / (1 + s / 20) + 0.1 * unit, "train/lr": 1e-3}) + "\n" for s in steps))
    if unit == 5:
      (d / "log.txt").write_text("step 50/100 ...\nRuntimeError: out of memory\n")
      (d / "exit.json").write_text(json.dumps({"returncode": 1, "seconds": 30.0}))
      continue
    gen = 0.6 + 0.05 * seed if variant == "siglip" else 0.5 + 0.05 * seed
    und = 0.55 + 0.02 * seed if variant == "siglip" else 0.35 + 0.02 * seed
    (d / "eval.json").write_text(json.dumps({
        "generation_mode": "ar_vq",
        "untrained": {"generation": {"overall": 0.1, "num_images": 150}, "understanding": {"overall": 0.0}},
        "trained": {"generation": {"single_object": gen, "colors": gen, "overall": gen, "num_images": 150},
                    "understanding": {"colour": und, "overall": und, "num_questions": 300}},
        "timings_seconds": {"total": 600.0 + unit}, "prompts": ["a red circle"]}))
    (d / "exit.json").write_text(json.dumps({"returncode": 0, "seconds": 610.0 + unit}))
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / "samples.png")


def test_03_ablations_report(kernel, tmp_path):
  """A fabricated sweep root: one summary row per variant, the report files and plots, the best unit's samples."""
  pytest.importorskip("janus_jax.report")
  root = tmp_path / "sweeps" / "decoupling"
  _fabricate_sweep(root)
  nb = execute(kernel, "03_ablations.ipynb", tmp_path / "03.ipynb", SWEEP_ROOT=str(root))
  out = text_of(nb)
  assert "6 units" in out and "unit 5 (vq, seed 2) failed: exit 1" in out
  report_dir = root / "report"
  for name in ("report.md", "units.csv", "summary.csv", "metrics.png", "loss.png"):
    assert (report_dir / name).is_file() and (report_dir / name).stat().st_size > 0, name
  for name in ("metrics.png", "loss.png"):
    assert Image.open(report_dir / name).size[0] > 100
  with open(report_dir / "summary.csv") as f:
    summary = list(csv.DictReader(f))
  assert [(r["variant"], r["n_done"], r["n_units"]) for r in summary] == [("siglip", "3", "3"), ("vq", "2", "3")]
  assert abs(float(summary[0]["generation/overall mean"]) - 0.65) < 1e-9
  assert "unit 2: variant 'siglip', seed 2, done" in out  # the best unit by generation/overall
  assert images_of(nb) >= 4  # metrics.png, loss.png, the per-unit curves, the unit's samples
