"""The README's "Fine-tune a released checkpoint on your own data" walkthrough, command by command, at tiny size.

A tiny random checkpoint stands in for the released one (transformers layout for Janus-Pro, the official layout
+ a diffusers VAE for JanusFlow, built as the parity tests build theirs). Then, as the README shows: `janus-jax
convert` -> a JSONL of your own caption and question-answer rows -> `janus-jax pairs` -> `python -m janus_jax.main`
with `--config.init_from` and the converted tokenizer -> `janus_jax.load(<workdir>/model)` understands and
generates. The params the stage freezes come out bit-identical to the converted checkpoint. The README runs
`size=1b` / `size=1_3b`; here `size=shapes`, whose model is the tiny one.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np

# The commands run as a user runs them: on this machine's devices, not the suite's 8 fake ones.
USER_ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

import janus_jax
from janus_jax.checkpoint import store
from janus_jax.models import param_layout
from janus_jax.train.optim import path_str

JANUS_JAX = os.path.join(os.path.dirname(sys.executable), "janus-jax")  # the console script, as a user runs it
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}


def _run(cmd):
  out = subprocess.run(cmd, capture_output=True, text=True, env=USER_ENV)
  assert out.returncode == 0, (cmd, out.stdout[-3000:], out.stderr[-3000:])
  return out.stdout


def _write_rows(root):
  """Your own data: images on disk and a JSONL of caption rows and question-answer rows."""
  (root / "imgs").mkdir(parents=True)
  lines = []
  for i, (name, rgb) in enumerate(sorted(COLOURS.items()) * 2):
    Image.new("RGB", (40, 30), rgb).save(root / "imgs" / f"{i}.png")
    lines.append({"image": f"imgs/{i}.png", "text": f"a {name} picture"})
    lines.append({"image": f"imgs/{i}.png", "question": "What colour is it?", "answer": name})
  (root / "rows.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n")
  return root / "rows.jsonl"


def _flat(params, cfg):
  params, _ = param_layout.for_decoding(params, cfg)
  return {path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}


def _walkthrough(tmp_path, converted, config_arg, frozen_prefix):
  rows = _write_rows(tmp_path / "mine")
  arrayrecord = tmp_path / "mine" / "train.arrayrecord"
  assert "wrote 12 record(s)" in _run([JANUS_JAX, "pairs", "--jsonl", str(rows), "--out", str(arrayrecord)])
  workdir = tmp_path / "runs" / "mine"
  _run([sys.executable, "-m", "janus_jax.main", f"--config=experiments/janus_stages.py:{config_arg}",
        f"--workdir={workdir}", f"--config.init_from={converted}", f"--config.input.tokenizer={converted}/tokenizer",
        f"--config.input.sources=({{'kind': 'pairs', 'paths': '{arrayrecord}'}},)", "--config.train.num_steps=3",
        "--config.input.batch_size=4", "--config.input.seq_len=128", "--config.optim.warmup_steps=1"])
  image = str(tmp_path / "mine" / "imgs" / "0.png")
  said = _run([JANUS_JAX, "understand", "--checkpoint", str(workdir / "model"), "--image", image, "--question",
               "What colour is it?", "--greedy"])
  pipe = janus_jax.load(str(workdir / "model"))
  assert said.strip() == pipe.understand([image], ["What colour is it?"])[0].strip()
  out = pipe.generate(["a red picture"], num_images=2, seed=0)
  assert out.images.shape[0] == 2 and out.images.dtype == np.uint8
  before, cfg_before = store.load_checkpoint(str(converted))
  after, cfg_after = store.load_checkpoint(str(workdir / "model"))
  before, after = _flat(before, cfg_before), _flat(after, cfg_after)
  frozen = [k for k in before if k.startswith(frozen_prefix)]
  assert frozen
  for k in frozen:
    np.testing.assert_array_equal(after[k], before[k], err_msg=k)
  trained = [k for k in before if k.startswith("language_model/") and not np.array_equal(after[k], before[k])]
  assert trained  # the LLM did train
  return pipe


def test_finetune_janus_pro_from_a_transformers_checkpoint(tmp_path):
  from tiny_assets import make_tiny_tokenizer
  from torch_reference import build_tiny_hf_janus
  src = tmp_path / "Janus-Pro-tiny"
  build_tiny_hf_janus(seed=0).save_pretrained(src)  # the downloaded checkpoint (transformers layout)
  make_tiny_tokenizer(str(src))
  converted = tmp_path / "janus-pro-tiny-jax"
  _run([JANUS_JAX, "convert", "--from", str(src), "--to", str(converted), "--quiet"])
  _walkthrough(tmp_path, converted, "stage=3,family=janus_pro,size=shapes", "gen_vision_model/")


def test_finetune_janusflow_from_an_official_checkpoint(tmp_path):
  pytest.importorskip("diffusers")
  import flow_reference
  from janus_jax.configs import models
  from janus_jax.models.configs import JanusConfig
  src, vae, _, _ = flow_reference.write_tiny_janusflow(tmp_path / "JanusFlow-tiny",
                                                       JanusConfig.from_dict(models.janusflow_tiny()))
  converted = tmp_path / "janusflow-tiny-jax"
  _run([JANUS_JAX, "convert", "--from", str(src), "--vae", str(vae), "--to", str(converted), "--quiet"])
  pipe = _walkthrough(tmp_path, converted, "stage=3,family=janusflow,size=shapes", "vae/")
  assert pipe.cfg.vae.scaling_factor == 0.5  # the checkpoint's calibrated VAE, not the config's default


def test_pairs_command_names_the_line_of_a_missing_image(tmp_path, capsys):
  from janus_jax import cli
  rows = _write_rows(tmp_path)
  with open(rows, "a") as f:
    f.write(json.dumps({"image": "imgs/gone.png", "text": "a lost picture"}) + "\n")
  assert cli.main(["pairs", "--jsonl", str(rows), "--out", str(tmp_path / "train.arrayrecord")]) == 2
  err = capsys.readouterr().err
  assert "rows.jsonl:13: cannot read image" in err and "gone.png" in err and "Fix the path" in err
  assert not (tmp_path / "train.arrayrecord").exists()  # nothing half-written
