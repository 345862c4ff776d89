"""The Python API and the CLI on a tiny random checkpoint: sharded inference, bad inputs and arguments, command line."""
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

import janus_jax
from janus_jax import cli, sharding
from tiny_assets import make_tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  return make_tiny_checkpoint(str(tmp_path_factory.mktemp("api")))


@pytest.fixture(scope="module")
def pipe(ckpt):
  return janus_jax.load(ckpt)


def test_sharded_params_give_identical_outputs(ckpt, pipe):
  mesh = sharding.make_mesh([("data", 1), ("fsdp", 2), ("tensor", 4)])
  sharded = janus_jax.load(ckpt, mesh=mesh)
  kernel = sharded.params["language_model"]["model"]["layers_0"]["mlp"]["gate_proj"]["kernel"]
  assert len(kernel.sharding.device_set) == 8
  a = pipe.generate_tokens(["a red circle", "two green triangles"], greedy=True)[0]
  b = sharded.generate_tokens(["a red circle", "two green triangles"], greedy=True)[0]
  np.testing.assert_array_equal(a, b)
  img = np.full((20, 24, 3), 200, np.uint8)
  assert pipe.understand([img], ["what colour?"], max_new_tokens=5) == \
      sharded.understand([img], ["what colour?"], max_new_tokens=5)


def test_mesh_that_does_not_divide_devices_is_explained():
  with pytest.raises(ValueError, match="does not divide"):
    sharding.make_mesh([("data", 3), ("tensor", 1)])


def test_prompt_longer_than_context_is_refused(pipe):
  long_prompt = "a red circle " * 200  # the tiny model has 256 positions, 16 reserved for image tokens
  with pytest.raises(ValueError, match="long"):
    pipe.generate_tokens([long_prompt])
  with pytest.raises(ValueError, match="long"):
    pipe.understand([np.zeros((8, 8, 3), np.uint8)], [long_prompt], max_new_tokens=4)


def test_image_inputs_bad_and_odd(pipe, tmp_path):
  bad = tmp_path / "broken.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
  with pytest.raises(ValueError, match="broken.png"):
    pipe.understand([str(bad)], ["what is this?"], max_new_tokens=3)
  tiny = tmp_path / "one.png"
  Image.new("RGB", (1, 1), (255, 0, 0)).save(tiny)
  grey16 = tmp_path / "grey16.png"
  Image.fromarray(np.full((10, 30), 40000, np.uint16)).save(grey16)
  rgba = tmp_path / "rgba.png"
  Image.new("RGBA", (12, 9), (0, 0, 255, 128)).save(rgba)
  answers = pipe.understand([str(tiny), str(grey16), str(rgba)], ["a?", "b?", "c?"], max_new_tokens=3)
  assert len(answers) == 3


def test_bad_token_grids_are_refused(pipe):
  with pytest.raises(ValueError, match=r"\[0, 256\)"):
    pipe.decode_tokens(np.full((1, 16), 999))
  with pytest.raises(ValueError, match="shape"):
    pipe.decode_tokens(np.zeros((1, 15), np.int32))


def test_encode_decode_roundtrip_shapes(pipe):
  imgs = np.random.default_rng(0).integers(0, 255, (2, 40, 30, 3), dtype=np.uint8)
  codes = pipe.encode_images(list(imgs))
  assert codes.shape == (2, 16) and codes.dtype == np.int32
  assert pipe.decode_tokens(codes).shape == (2, 16, 16, 3)


def test_cli_generate_and_understand(ckpt, pipe, tmp_path, capsys):
  out = tmp_path / "gen"
  tokens = tmp_path / "tokens.npy"
  rc = cli.main(["generate", "--checkpoint", ckpt, "--prompt", "a red circle", "--num-images", "2", "--greedy",
                 "--out", str(out), "--save-tokens", str(tokens), "--quiet"])
  assert rc == 0
  assert sorted(os.listdir(out)) == ["grid.png", "image_000.png", "image_001.png"]
  expected = pipe.generate(["a red circle"], num_images=2, greedy=True)
  np.testing.assert_array_equal(np.load(tokens), expected.tokens)
  np.testing.assert_array_equal(np.asarray(Image.open(out / "image_001.png")), expected.images[1])
  img = tmp_path / "q.png"
  Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(img)
  capsys.readouterr()
  rc = cli.main(["understand", "--checkpoint", ckpt, "--image", str(img), "--question", "what colour?", "--greedy",
                 "--max-new-tokens", "4"])
  assert rc == 0
  assert capsys.readouterr().out.strip() == pipe.understand([str(img)], ["what colour?"], max_new_tokens=4)[0].strip()


def test_cli_reports_errors_cleanly(tmp_path, capsys):
  rc = cli.main(["generate", "--checkpoint", str(tmp_path / "nope"), "--prompt", "x", "--out", str(tmp_path)])
  assert rc == 2
  assert "error" in capsys.readouterr().err


def test_batched_understanding_equals_one_by_one(pipe):
  imgs = [np.full((20, 24, 3), 200, np.uint8), np.full((30, 10, 3), 40, np.uint8)]
  questions = ["what colour?", "how many shapes are there in the picture and where are they?"]
  batched = pipe.understand(imgs, questions, max_new_tokens=6)
  single = [pipe.understand([i], [q], max_new_tokens=6)[0] for i, q in zip(imgs, questions)]
  assert batched == single


def test_sampling_arguments_are_checked(pipe):
  img = np.full((16, 16, 3), 90, np.uint8)
  with pytest.raises(ValueError, match="temperature must be > 0.*greedy=True"):
    pipe.generate(["a red circle"], temperature=0.0)
  with pytest.raises(ValueError, match="temperature must be > 0.*greedy=True"):
    pipe.generate_tokens(["a red circle"], temperature=-1.0)
  with pytest.raises(ValueError, match="temperature must be > 0.*greedy=True"):
    pipe.understand([img], ["what colour?"], greedy=False, temperature=0.0, max_new_tokens=2)
  assert len(pipe.understand([img], ["what colour?"], greedy=True, temperature=0.0, max_new_tokens=2)) == 1
  with pytest.raises(ValueError, match="cfg_weight must be >= 0.*1 = no guidance, 0 = unconditional"):
    pipe.generate(["a red circle"], cfg_weight=-1.0)
  for top_p in (0.0, 1.5):
    with pytest.raises(ValueError, match="top_p"):
      pipe.generate(["a red circle"], top_p=top_p)
  with pytest.raises(ValueError, match="top_p"):
    pipe.understand([img], ["what colour?"], top_p=0.0, max_new_tokens=2)
  with pytest.raises(ValueError, match="top_k"):
    pipe.generate_tokens(["a red circle"], top_k=-1)
  for prompts in ("", ["a red circle", "   "]):
    with pytest.raises(ValueError, match="prompts.*cfg_weight=0"):
      pipe.generate(prompts)
  with pytest.raises(ValueError, match="prompts is empty"):
    pipe.generate([])
  with pytest.raises(ValueError, match="num_images"):
    pipe.generate(["a red circle"], num_images=0)
  with pytest.raises(ValueError, match=r"questions\[1\]"):
    pipe.understand([img, img], ["what colour?", " \n"], max_new_tokens=2)
  with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
    pipe.understand([img], ["what colour?"], max_new_tokens=0)


def test_default_max_new_tokens_fits_the_context(pipe):
  img = np.full((16, 16, 3), 90, np.uint8)
  assert pipe.cfg.llm.max_position_embeddings == 256
  assert isinstance(pipe.understand([img], ["what colour?"])[0], str)  # was: max_len=-256 with the old 512 default
  with pytest.raises(ValueError, match=r"max_new_tokens=300 .*max_position_embeddings=256 .* tokens long"):
    pipe.understand([img], ["what colour?"], max_new_tokens=300)


def test_cli_reports_bad_sampling_arguments(ckpt, tmp_path, capsys):
  rc = cli.main(["generate", "--checkpoint", ckpt, "--prompt", "a red circle", "--temperature", "0", "--out",
                 str(tmp_path), "--quiet"])
  assert rc == 2
  err = capsys.readouterr().err
  assert "janus-jax generate: error: temperature must be > 0" in err and "--greedy" in err


def test_load_expands_the_home_directory(ckpt, tmp_path, monkeypatch):
  shutil.copytree(ckpt, tmp_path / "ckpt")
  monkeypatch.setenv("HOME", str(tmp_path))
  pipe = janus_jax.load("~/ckpt")
  assert pipe.cfg.llm.max_position_embeddings == 256 and pipe.tokenizer.eos_id == 2


def test_load_restores_each_param_straight_onto_its_mesh_sharding(ckpt):
  """`load(dir, mesh=...)` restores every array onto the sharding its logical axis names give (orbax restore
  with shardings), not onto device 0 first."""
  from janus_jax.checkpoint import store
  mesh = sharding.make_mesh([("data", 1), ("fsdp", 2), ("tensor", 4)])
  params, cfg = store.load_checkpoint(ckpt, mesh=mesh)
  expected = store.param_shardings(cfg, mesh, keys=set(params))
  got = jax.tree_util.tree_leaves_with_path(params)
  want = jax.tree.leaves(expected, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  assert len(got) == len(want)
  for (path, x), s in zip(got, want):
    assert x.sharding.is_equivalent_to(s, x.ndim), jax.tree_util.keystr(path)
  split = [x for _, x in got if len(x.sharding.device_set) == 8 and x.sharding.shard_shape(x.shape) != x.shape]
  assert split  # the rules really split params across the 8 devices
  pipe = janus_jax.load(ckpt, mesh=mesh)
  decoding = store.param_shardings(pipe.cfg, mesh, keys=set(pipe.params))
  for x, s in zip(jax.tree.leaves(pipe.params),
                  jax.tree.leaves(decoding, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))):
    assert x.sharding.is_equivalent_to(s, x.ndim)
