"""The main job end to end on its fast setting: prepare -> VQ -> Janus -> eval -> samples.png / eval.json."""
import json
import os

import jax
import numpy as np
import pytest

from janus_jax import main
from janus_jax.checkpoint import store
from janus_jax.configs.common import load_config
from janus_jax.train.optim import path_str


def _fast(arg: str = ""):
  """The fast demo config with a 4-step drill stage (the demo leaves it off; see `drill` in the config)."""
  config = load_config(f"experiments/shapes_demo.py:fast{arg}")
  config.drill.steps = 4
  config.data.text_letter_drill = True
  return config


def test_main_job_fast(tmp_path):
  config = _fast()
  config.pre_stages = ({"stage": 1, "steps": 2},)  # the stage-1 trainable set between the drill and training
  config.eval.cfg_weights = (1.0, 3.0)
  settings = config.to_dict()
  summary = main.run_all(config, str(tmp_path))
  assert config.to_dict() == settings  # the job hands its results forward; it never writes into its config
  for name in ("samples.png", "eval.json"):
    assert (tmp_path / name).is_file()
  assert os.path.isdir(tmp_path / "janus" / "tensorboard")
  saved = json.load(open(tmp_path / "eval.json"))
  for which in ("untrained", "trained"):
    assert set(saved[which]["generation"]) >= {"single_object", "two_objects", "counting", "colors", "position",
                                                "color_attr", "overall"}
    assert 0.0 <= saved[which]["understanding"]["overall"] <= 1.0
  assert summary["vq"]["psnr"] > 0
  assert "drill" in saved["timings_seconds"] and "pre_stages" in saved["timings_seconds"]
  assert set(saved["trained"]["cfg_sweep"]) == {"1", "3"}
  assert set(saved["trained"]["cfg_sweep"]["3"]["generation"]) >= {"colors", "overall"}
  # The drill stage trained the LLM alone: every language_model param moved, everything else is the initial model.
  initial, _ = store.load_checkpoint(str(tmp_path / "init_model"))
  drilled, _ = store.load_checkpoint(str(tmp_path / "drill_model"))
  flat_initial, flat_drilled = (jax.tree_util.tree_leaves_with_path(p) for p in (initial, drilled))
  assert [p for p, _ in flat_initial] == [p for p, _ in flat_drilled]
  for (path, a), (_, b) in zip(flat_initial, flat_drilled):
    name = path_str(path)
    assert np.array_equal(a, b) != name.startswith("language_model/"), name
  # The pre-stage trained the stage-1 set alone (both aligners, gen_head, gen_embed), from the drill's export.
  staged, _ = store.load_checkpoint(str(tmp_path / "pre_stage0_model"))
  stage1 = ("aligner/", "gen_aligner/", "gen_head/", "gen_embed/")
  for (path, a), (_, b) in zip(flat_drilled, jax.tree_util.tree_leaves_with_path(staged)):
    name = path_str(path)
    assert np.array_equal(a, b) != name.startswith(stage1), name
  assert main.run_all(load_config("experiments/shapes_demo.py:fast"), str(tmp_path), mode="eval")["trained"]
  assert set(json.load(open(tmp_path / "eval.json"))) == {"generation_mode", "trained"}  # --mode=eval rewrote it
  # The README's `janus-jax eval` on the exported model, as a user runs it.
  import subprocess, sys  # pylint: disable=import-outside-toplevel,multiple-imports
  janus_jax_cli = os.path.join(os.path.dirname(sys.executable), "janus-jax")
  out = subprocess.run([janus_jax_cli, "eval", "--checkpoint", str(tmp_path / "model"), "--data-dir",
                        str(tmp_path / "data"), "--tfds-name", "janus_shapes/tiny", "--n-per-category", "1",
                        "--num-questions", "4", "--out", str(tmp_path / "cli_eval.json")], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "understanding" in json.load(open(tmp_path / "cli_eval.json"))


@pytest.mark.parametrize("gen,rf_metrics", [("flow", {"train/loss_rf", "train/loss_repa"}),
                                             ("ar_continuous", {"train/loss_rf", "train/loss_text"})])
def test_main_job_fast_kl_vae_modes(tmp_path, gen, rf_metrics):
  """The two KL-VAE modes through the same job: KL-VAE instead of VQ, then JanusFlow training (RF + REPA + EMA) or
  the continuous-token Janus (text CE + the flow head's per-token RF loss; `make demo GEN=ar_continuous` at tiny
  size), the same Shapes-GenEval and understanding evaluation."""
  summary = main.run_all(_fast(f",gen={gen}"), str(tmp_path))
  assert summary["generation_mode"] == gen
  assert summary["vae"]["psnr"] > 0 and summary["vae"]["scaling_factor"] > 0
  saved = json.load(open(tmp_path / "eval.json"))
  assert set(saved["trained"]["generation"]) >= {"single_object", "colors", "overall"}
  assert 0.0 <= saved["trained"]["understanding"]["overall"] <= 1.0
  assert (tmp_path / "samples.png").is_file()
  rows = [json.loads(l) for l in open(tmp_path / "janus" / "metrics.jsonl")]
  assert rf_metrics <= set(rows[-1]) and np.isfinite(rows[-1]["train/loss_rf"])


def test_drill_config_trains_the_letter_drill_alone():
  from janus_jax.train.inputs import TrainInputs
  config = load_config("experiments/shapes_demo.py")
  config.drill.steps = 800
  inputs = TrainInputs.from_config(config).replace(
      sources=(dict(kind="shapes", tfds_name="janus_shapes/default", data_dir="/d"),), init_from="/init")
  drill, drill_inputs = main.drill_config(config, inputs)
  assert drill_inputs.init_from == "/init" and dict(drill.input.mixture) == {"text": 1.0}
  assert drill_inputs.sources[0]["text_letter_drill"] and drill.optim.trainable == ["language_model/.*"]
  assert not inputs.sources[0].get("text_letter_drill")  # the main stage's inputs are untouched
  assert drill.train.num_steps == drill.optim.total_steps == config.drill.steps and drill.optim.lr == config.drill.lr
  assert config.input.mixture.t2i > 0 and config.optim.lr != config.drill.lr  # the main stage's config is untouched
  with config.unlocked():
    config.drill.step = 10
  with pytest.raises(ValueError, match="Unknown drill key.*'step'.*did you mean 'steps'"):
    main.drill_config(config, inputs)


def test_image_size_note_flags_a_generation_size_other_than_the_data():
  """The demo generates at the data's 32 px in both modes; a patch size that shrinks the token grid (Janus ties
  generated tokens to understanding patches) is reported with the sizes and the fix."""
  for arg in ("", "gen=flow"):
    assert main.image_size_note(load_config(f"experiments/shapes_demo.py:{arg}"), 32) is None
  config = load_config("experiments/shapes_demo.py")
  config.model.vision.patch_size = 16
  note = main.image_size_note(config, 32)
  assert "16 px" in note and "2x2 patches" in note and "model.vision.image_size / patch_size" in note


def test_make_demo_runs_the_main_job_command():
  """`make demo` (README) is the main job on shapes_demo.py; `make -n` prints what it runs (the command itself is run
  at tiny size by the subprocess tests above and in test_und_encoder.py)."""
  import shutil, subprocess  # pylint: disable=import-outside-toplevel,multiple-imports
  if shutil.which("make") is None:
    pytest.skip("make is not installed")
  for gen, workdir in (("ar_vq", "workdir/demo"), ("flow", "workdir/demo_flow"),
                       ("ar_continuous", "workdir/demo_ar_continuous")):
    out = subprocess.run(["make", "-n", "demo", f"GEN={gen}", "VENV=.venv"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.replace("\\\n", " ").splitlines() if "janus_jax.main" in ln]
    assert line and f"--config=experiments/shapes_demo.py:gen={gen}" in line[0] and f"--workdir={workdir}" in line[0]
