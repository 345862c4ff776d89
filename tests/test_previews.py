"""Streaming previews (`preview_every`, `on_preview`) in the three generation modes' samplers, and the CLI's frames
and GIF: with k = N the only frame is the final image, frames arrive in order, the last frame equals the returned
image, AR frames show the sampled tokens' blocks and keep them, unsampled blocks neutral."""
import subprocess
import sys

import jax
import numpy as np
import pytest

from janus_jax.api import JanusPipeline
from janus_jax.configs import models
from janus_jax.models import janus
from janus_jax.models.configs import JanusConfig
from janus_jax.processing.tokenizer import load_tokenizer

from tiny_assets import make_tiny_checkpoint, make_tiny_tokenizer


@pytest.fixture(scope="module", name="tokenizer")
def tiny_tokenizer(tmp_path_factory):
  return load_tokenizer(make_tiny_tokenizer(str(tmp_path_factory.mktemp("tok"))))


def _pipe(preset, tokenizer):
  cfg = JanusConfig.from_dict(getattr(models, preset)())
  params = janus.init_params(cfg, jax.random.PRNGKey(0))
  if cfg.generation_mode == "ar_continuous":  # a head that moves tokens (adaLN-Zero predicts zero velocity)
    leaves, treedef = jax.tree.flatten(params["flow_head"])
    keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
    params["flow_head"] = treedef.unflatten([x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  return JanusPipeline(params, cfg, tokenizer, "deepseek")


@pytest.fixture(scope="module", params=["janus_tiny", "janusflow_tiny", "janus_continuous_tiny"])
def pipe(request, tokenizer):
  return _pipe(request.param, tokenizer)


def _steps(pipe):
  return pipe.cfg.num_image_tokens if pipe.cfg.generation_mode != "flow" else 4


def _generate(pipe, **kw):
  extra = {"num_steps": 4} if pipe.cfg.generation_mode == "flow" else {}
  return pipe.generate(["a red circle", "two blue squares"], seed=3, **extra, **kw)


def test_frames_arrive_in_order_and_end_with_the_image(pipe):
  n = _steps(pipe)
  frames = []
  out = _generate(pipe, preview_every=2, on_preview=lambda step, x: frames.append((step, x)))
  steps = [s for s, _ in frames]
  assert steps == list(range(2, n, 2)) + [n], steps
  assert all(x.shape == out.images.shape and x.dtype == np.uint8 for _, x in frames)
  np.testing.assert_array_equal(frames[-1][1], out.images)
  plain = _generate(pipe)  # previews change nothing in what is sampled
  np.testing.assert_array_equal(plain.images, out.images)


def test_every_n_gives_only_the_final_image(pipe):
  frames = []
  out = _generate(pipe, preview_every=_steps(pipe), on_preview=lambda step, x: frames.append((step, x)))
  assert len(frames) == 1 and frames[0][0] == _steps(pipe)
  np.testing.assert_array_equal(frames[0][1], out.images)


def test_ar_frames_show_sampled_blocks_and_keep_them(tokenizer):
  pipe = _pipe("janus_tiny", tokenizer)
  cfg = pipe.cfg
  frames = []
  _generate(pipe, preview_every=1, on_preview=lambda step, x: frames.append((step, x)))
  f, g = cfg.vq.downsample, cfg.gen_grid
  grey = np.uint8(127)  # to_uint8(0.0), truncation
  for step, x in frames[:-1]:
    blocks = x.reshape(x.shape[0], g, f, g, f, 3).transpose(0, 1, 3, 2, 4, 5).reshape(x.shape[0], g * g, -1)
    assert (blocks[:, step:] == grey).all(), step  # not sampled yet: neutral
    assert (blocks[:, :step] != grey).any(axis=-1).all(), step  # sampled: decoded pixels


def test_bad_preview_arguments_are_named(tokenizer):
  pipe = _pipe("janus_tiny", tokenizer)
  with pytest.raises(ValueError, match="needs on_preview"):
    pipe.generate("a red circle", preview_every=2)
  with pytest.raises(ValueError, match="preview_every must be an int >= 0"):
    pipe.generate("a red circle", preview_every=-1, on_preview=print)


def test_cli_writes_frames_and_a_gif(tmp_path):
  ckpt = make_tiny_checkpoint(str(tmp_path / "ckpt"))
  out = subprocess.run([sys.executable, "-m", "janus_jax.cli", "generate", "--checkpoint", str(ckpt), "--prompt",
                        "a red circle", "--out", str(tmp_path / "img"), "--preview-every", "4", "--preview-out",
                        str(tmp_path / "frames"), "--quiet"], capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr
  from PIL import Image  # pylint: disable=import-outside-toplevel
  pngs = sorted(p.name for p in (tmp_path / "frames").glob("frame_*.png"))
  with Image.open(tmp_path / "frames" / "preview.gif") as gif:
    assert gif.n_frames == len(pngs) >= 2
  bad = subprocess.run([sys.executable, "-m", "janus_jax.cli", "generate", "--checkpoint", str(ckpt), "--prompt",
                        "x", "--out", str(tmp_path / "o"), "--preview-every", "4"], capture_output=True, text=True,
                       check=False)
  assert bad.returncode != 0 and "--preview-out DIR" in bad.stderr


def test_modes_sampling_bench_runs(tmp_path):
  """`python bench/bench_modes_sampling.py` (README, Benchmark) at its smallest: one line per mode, same images."""
  import os  # pylint: disable=import-outside-toplevel
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "bench/bench_modes_sampling.py", "--fast", "--prompts", "1", "--num-images",
                        "1", "--repeats", "1", "--frames", "2"], capture_output=True, text=True, cwd=repo, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [ln for ln in out.stdout.splitlines() if "ms/image" in ln]
  assert [ln.split()[1] for ln in lines] == ["ar_vq", "flow", "ar_continuous"]
  assert all("same images: True" in ln and "(2 frames)" in ln for ln in lines), out.stdout
