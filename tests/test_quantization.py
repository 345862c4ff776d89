"""Weight-only int8 decode (janus_jax.quantization, qwix): which kernels, how close to float, through the API."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import janus_jax
from janus_jax import cli, compile_options, quantization
from janus_jax.sampling import ar_image
from janus_jax.sampling.sample import cfg_combine
from tiny_assets import make_tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  return make_tiny_checkpoint(str(tmp_path_factory.mktemp("q")))


@pytest.fixture(scope="module")
def pipes(ckpt):
  return janus_jax.load(ckpt), janus_jax.load(ckpt, quantize="int8")


@pytest.fixture(scope="module")
def dynamic(ckpt):
  return janus_jax.load(ckpt, quantize="int8_dynamic")


def test_only_the_llm_and_image_head_dense_kernels_are_int8(pipes, dynamic):
  fp, q = pipes
  assert quantization.quantized_paths(dynamic.params) == quantization.quantized_paths(q.params)
  assert isinstance(dynamic.params["gen_head"]["output_mlp_projector"]["kernel"], quantization.DynamicRange)
  paths = quantization.quantized_paths(q.params)
  assert paths and all(p.split("/")[0] in ("language_model", "gen_head") and p.endswith("kernel") for p in paths)
  assert "language_model/lm_head/kernel" in paths and "gen_head/output_mlp_projector/kernel" in paths
  layer = q.params["language_model"]["model"]["layers_0"]["mlp"]["gate_proj"]["kernel"]
  assert layer.qvalue.dtype == jnp.int8 and layer.scale.shape == (1, layer.qvalue.shape[1])  # per output channel
  # Everything else is the float tree, untouched: embeddings, norms, SigLIP, aligners, the VQ.
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  for key in ("vision_model", "aligner", "gen_vision_model", "gen_aligner", "gen_embed"):
    assert same(fp.params[key], q.params[key])
  assert same(fp.params["language_model"]["model"]["embed_tokens"], q.params["language_model"]["model"]["embed_tokens"])


@pytest.mark.parametrize("qtype, logits_tol, min_agree", [("int8", 0.02, 0.9), ("int8_dynamic", 0.05, 0.8)])
def test_int8_decode_stays_close_to_float(pipes, dynamic, qtype, logits_tol, min_agree):
  """The compiled greedy loop runs on int8 weights (int8_dynamic: and int8 activations); teacher-forced on its
  codes, the image logits stay within a stated share of the float logits' range and the CFG argmax agrees at most
  positions (int8: 2%, 90%; int8_dynamic: 5%, 80%)."""
  fp, q = pipes[0], (pipes[1] if qtype == "int8" else dynamic)
  rng = np.random.default_rng(0)
  cond = rng.integers(10, 300, (2, 12)).astype(np.int32)
  cond[:, 0] = 1
  ids = np.concatenate([cond, np.where(np.arange(12) == 0, cond, 0)])
  args = (jnp.ones(ids.shape, bool), jax.random.PRNGKey(0), jnp.float32(5.0), jnp.float32(1.0), jnp.float32(1.0))
  codes = np.asarray(ar_image.compiled_generate(q.model, greedy=True)(q.params, ids, *args))
  assert codes.shape == (2, q.cfg.num_image_tokens)
  both = jnp.asarray(np.concatenate([codes, codes]))
  lq, lf = (np.asarray(ar_image.teacher_forced_logits(p.model, p.params, ids, both)) for p in (q, fp))
  assert np.abs(lq - lf).max() <= logits_tol * (lf.max() - lf.min())
  agree = np.mean(np.argmax(cfg_combine(lq[:2], lq[2:], 5.0), -1) == np.argmax(cfg_combine(lf[:2], lf[2:], 5.0), -1))
  assert agree >= min_agree
  np.testing.assert_array_equal(np.argmax(cfg_combine(lq[:2], lq[2:], 5.0), -1), codes)  # the loop's own argmax


def test_int8_dots_keep_xla_defaults_and_weight_only_int8_the_float_options(pipes, dynamic):
  """int8_dynamic's int8 x int8 dots are faster on YNNPACK (XLA's default); weight-only int8 runs float dots."""
  fp, q = pipes
  assert not quantization.has_integer_dots(fp.params) and not quantization.has_integer_dots(q.params)
  assert quantization.has_integer_dots(dynamic.params)
  generate = ar_image.compiled_generate(q.model, greedy=True)
  assert generate.for_params(q.params) is generate.for_params(fp.params)
  assert generate.for_params(dynamic.params) is not generate.for_params(fp.params)
  with compile_options.xla_defaults():
    assert ar_image.compiled_generate(q.model, greedy=True).for_params(fp.params) is \
        generate.for_params(dynamic.params)


def test_int8_understanding_and_generation_through_the_api(pipes):
  _, q = pipes
  out = q.generate("a red circle", num_images=1, greedy=True)
  assert out.images.shape[0] == 1 and out.images.dtype == np.uint8
  image = np.zeros((32, 32, 3), np.uint8)
  assert isinstance(q.understand([image], "what is this?", max_new_tokens=4)[0], str)


def test_cli_generate_with_int8_weights_gives_the_api_tokens(ckpt, pipes, tmp_path):
  tokens = tmp_path / "tokens.npy"
  rc = cli.main(["generate", "--checkpoint", ckpt, "--prompt", "a red circle", "--greedy", "--quantize", "int8",
                 "--out", str(tmp_path / "gen"), "--save-tokens", str(tokens), "--quiet"])
  assert rc == 0
  np.testing.assert_array_equal(np.load(tokens), pipes[1].generate("a red circle", greedy=True).tokens)


def test_unknown_qtype_is_named(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown janus_jax.load\(quantize=...\)='int4': use one of int8, int8_dyn"):
    janus_jax.load(str(tmp_path / "nowhere"), quantize="int4")


def test_bench_float_vs_int8_runs():
  """`python bench/bench_ar_decode.py --quantize int8` (README, Benchmark) at 16 tokens."""
  import subprocess
  import sys
  done = subprocess.run([sys.executable, "bench/bench_ar_decode.py", "--quantize", "int8", "--tokens", "16",
                         "--repeats", "1"], capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "int8 : " in done.stdout and "x the float32 speed" in done.stdout
  assert "same argmax at" in done.stdout and "free-running greedy grids" in done.stdout
