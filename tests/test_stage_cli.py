"""Stage configs from the command line as a researcher runs them: clear errors before any work, the whole staged
recipe in one command (`launch/stages.py`, both families, resumable), sample grids with remat on."""
import os
import subprocess
import sys

import numpy as np

# The commands run as a user runs them: on this machine's devices, not the suite's 8 fake ones.
USER_ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
import pytest

import janus_jax
from janus_jax.checkpoint import store

MAIN = [sys.executable, "-m", "janus_jax.main"]
STAGES = "experiments/janus_stages.py"
# Tiny settings for every stage of a Shapes-size recipe (the image tokenizer too).
TINY = ["--config.data.config_name=tiny", "--config.train.num_steps=2", "--config.input.batch_size=4",
        "--config.optim.warmup_steps=1", "--config.train.log_every=1"]
TINY_TOKENIZER = {"janus_pro": ["--config.vq.steps=2", "--config.vq.num_images=32"],
                  "janusflow": ["--config.vae.steps=2", "--config.vae.num_images=32"]}


def _run(cmd, **kw):
  return subprocess.run(cmd, capture_output=True, text=True, **{"env": USER_ENV, **kw})


def _error(args, tmp_path, env=None):
  """Runs the main job with `args`; returns its stderr after checking exit status 2 and that no work started."""
  workdir = tmp_path / "w"
  out = _run(MAIN + args + [f"--workdir={workdir}"], **({"env": env} if env else {}))
  assert out.returncode == 2, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  assert not (workdir / "data").exists() and not (workdir / "janus").exists()  # checked before any work
  return out.stderr


def test_bad_settings_and_inputs_are_named_before_any_work(tmp_path):
  from tiny_assets import make_tiny_checkpoint
  err = _error([f"--config={STAGES}:stage=2,family=janus_pro,size=1b"], tmp_path)
  assert "--config.init_from=" in err and "janus-jax convert" in err
  err = _error([f"--config={STAGES}:stage=1,size=shapes", "--config.input.tokenzer=/x"], tmp_path)
  assert "config.input has no field 'tokenzer'" in err and "Did you mean config.input.tokenizer?" in err
  err = _error([f"--config={STAGES}:stage=9"], tmp_path)
  assert "Unknown stage 9" in err and "valid stages" in err
  err = _error([f"--config={STAGES}:stage=1,family=janus,size=7b"], tmp_path)
  assert "Size '7b' does not exist for family 'janus'" in err
  err = _error([f"--config={STAGES}:stage=1,size=shapes", "--config.input.batch_size=0"], tmp_path)
  assert "input.batch_size=0 must be a whole number > 0" in err
  err = _error([f"--config={STAGES}:stage=1,size=shapes", f"--config.init_from={tmp_path / 'nowhere'}"], tmp_path)
  assert "does not exist" in err and "janus-jax convert" in err
  ckpt = make_tiny_checkpoint(str(tmp_path / "tiny"))  # janus_tiny: hidden 64
  err = _error([f"--config={STAGES}:stage=2,size=shapes", f"--config.init_from={ckpt}",
                "--config.model.llm.intermediate_size=96"], tmp_path)
  assert "holds another model than the config" in err and "model.llm.intermediate_size: checkpoint 128 vs config 96" in err
  err = _error([f"--config={STAGES}:stage=2,size=shapes", "--config.model.llm.hidden_size=32"], tmp_path)
  assert "cannot be built" in err and "model.aligner.output_dim" in err
  err = _error([f"--config={STAGES}:stage=2,size=shapes", f"--config.init_from={ckpt}",
                "--config.input.sources=({'kind': 'pairs', 'paths': '/no/such.arrayrecord'},)"], tmp_path)
  assert "no such file" in err and "janus-jax pairs" in err
  err = _error([f"--config={STAGES}:stage=2,size=shapes", f"--config.init_from={ckpt}",
                "--config.input.sources={'kind': 'pairs'}"], tmp_path)
  assert "a tuple of dicts" in err
  err = _error([f"--config={STAGES}:stage=2,size=shapes",  # own data, no checkpoint: no tokenizer anywhere
                "--config.input.sources=({'kind': 'coco_captions'},)"], tmp_path)
  assert "input.tokenizer is empty" in err and "--config.input.tokenizer=<converted checkpoint>/tokenizer" in err
  err = _error([f"--config={STAGES}:stage=1,size=shapes", "--config.input.batch_size=6",
                "--config.mesh=(('data', 4), ('fsdp', 2), ('tensor', 1))"], tmp_path, env=dict(os.environ))
  assert "multiple of the mesh's data-parallel size (8" in err and "--config.input.batch_size=8" in err


def test_the_training_loop_does_not_import_the_inference_api_or_the_cli():
  import ast
  tree = ast.parse(open("janus_jax/train/loop.py").read())
  imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
      a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
  assert not {m for m in imported if m and (m.startswith("janus_jax.api") or m.startswith("janus_jax.cli"))}


@pytest.mark.parametrize("family", ["janus_pro", "janusflow"])
def test_whole_recipe_in_one_command_resumes_and_loads(tmp_path, family):
  """The README's one-stage commands chained: stage 1 -> 2 -> 3 at Shapes size, each from the previous export; a re-run skips finished stages and an
  unfinished one continues from its checkpoint; stage 1 samples grids with remat on."""
  root = tmp_path / "recipe"
  cmd = [sys.executable, "launch/stages.py", f"--config={STAGES}:family={family},size=shapes,"
         "remat=dots_with_no_batch_dims_saveable", f"--root={root}", *TINY, *TINY_TOKENIZER[family],
         "--config.train.sample_every=2", "--config.train.checkpoint_every=1"]
  out = _run(cmd)
  assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
  for n in (1, 2, 3):
    assert store.is_checkpoint(root / f"stage_{n}" / "model"), n
    assert (root / f"stage_{n}" / "janus" / "samples_000002.png").is_file()  # sample grid, remat on
  assert (root / "data").is_dir() and not (root / "stage_2" / "data").exists()  # one shared Shapes copy
  assert f"--config.init_from={root / 'stage_2' / 'model'}" in out.stdout  # stage 3 starts from stage 2's export
  # Stage 3 started from stage 2's export: the params stage 3 freezes are those stage 2 exported.
  frozen = "vae" if family == "janusflow" else "gen_vision_model"
  two, _ = store.load_checkpoint(root / "stage_2" / "model")
  three, _ = store.load_checkpoint(root / "stage_3" / "model")
  for a, b in zip(*(jax_leaves(p[frozen]) for p in (two, three))):
    np.testing.assert_array_equal(a, b)
  if family == "janus_pro":  # resuming is the same code for both families: checked once
    again = _run(cmd)
    assert again.returncode == 0 and again.stdout.count("skipped") == 3, again.stdout[-2000:]
    import shutil
    shutil.rmtree(root / "stage_3" / "model")
    resumed = _run(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "stage 1: done" in resumed.stdout and "resumed from" in resumed.stdout
  pipe = janus_jax.load(str(root / "stage_3" / "model"))
  assert pipe.generate(["a red circle"], seed=0).images.shape[0] == 1
  assert isinstance(pipe.understand([np.zeros((32, 32, 3), np.uint8)], ["what colour?"], max_new_tokens=3)[0], str)


def jax_leaves(tree):
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_recipe_refuses_a_stage_in_the_config_argument(tmp_path):
  out = _run([sys.executable, "launch/stages.py", f"--config={STAGES}:stage=2,size=shapes", f"--root={tmp_path}"])
  assert out.returncode != 0 and "Drop `stage=`" in out.stderr
  out = _run([sys.executable, "launch/stages.py", f"--config={STAGES}:size=shapes", f"--root={tmp_path}",
              "--dry_run", "--stages=2,3", "--init_from=/ckpt"])
  lines = out.stdout.strip().splitlines()
  assert out.returncode == 0 and len(lines) == 2
  assert "stage=2" in lines[0] and "--config.init_from=/ckpt" in lines[0]
  assert f"--config.init_from={tmp_path / 'stage_2' / 'model'}" in lines[1]
  out = _run([sys.executable, "launch/stages.py", f"--config={STAGES}:size=shapes", "--root=gs://bucket/run",
              "--dry_run", "--init_from=gs://bucket/ckpt"])  # cloud roots stay cloud paths (no folder "gs:")
  lines = out.stdout.strip().splitlines()
  assert out.returncode == 0 and "--workdir=gs://bucket/run/stage_1" in lines[0]
  assert "--config.init_from=gs://bucket/ckpt" in lines[0] and "--config.data.data_dir=gs://bucket/run/data" in lines[0]
  assert "--config.init_from=gs://bucket/run/stage_2/model" in lines[2]
