"""janus_jax.compile_options: the CPU compile choices change how programs run, never what they compute."""
import contextlib
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

from janus_jax import compile_options
from janus_jax.models import layers


def _plain_matmul(x, k):
  return jnp.einsum("...i,io->...o", x, k, precision="highest")


def _barriered(x, k):
  return layers.barriered_matmul(x, k, jax.lax.Precision.HIGHEST, jnp.dtype("float32"))


def test_barriered_matmul_has_the_gradients_of_the_plain_matmul():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  k = jax.random.normal(jax.random.PRNGKey(1), (8, 6))
  loss = lambda f: (lambda x, k: jnp.sum(jnp.sin(f(x, k)) * jnp.arange(6.0)))
  np.testing.assert_array_equal(_barriered(x, k), _plain_matmul(x, k))
  for want, got in zip(jax.jit(jax.grad(loss(_plain_matmul), (0, 1)))(x, k),
                       jax.jit(jax.grad(loss(_barriered), (0, 1)))(x, k)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_barriered_matmul_keeps_mixed_dtypes():
  """bf16 inputs accumulated into a float32 output (the logits heads): gradients come back in the input dtypes."""
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 8)).astype(jnp.bfloat16)
  k = jax.random.normal(jax.random.PRNGKey(1), (8, 4)).astype(jnp.bfloat16)
  f = lambda x, k: jnp.sum(layers.barriered_matmul(x, k, jax.lax.Precision.DEFAULT, jnp.dtype("float32")) ** 2)
  g = lambda x, k: jnp.sum(jnp.einsum("...i,io->...o", x, k, preferred_element_type=jnp.float32) ** 2)
  assert layers.barriered_matmul(x, k, jax.lax.Precision.DEFAULT, jnp.dtype("float32")).dtype == jnp.float32
  for want, got in zip(jax.grad(g, (0, 1))(x, k), jax.grad(f, (0, 1))(x, k)):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=2e-2, atol=2e-2)


def _dense_grad(x):
  dense = layers.Dense(6, ("embed", "mlp"))
  params = dense.init(jax.random.PRNGKey(0), x)
  fn = lambda p: jnp.sum(jnp.tanh(dense.apply(p, x)))
  return str(jax.make_jaxpr(jax.grad(fn))(params)), jax.grad(fn)(params)


def test_dense_barriers_its_backward_on_cpu_only():
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 3, 5))
  assert jax.default_backend() == "cpu" and compile_options.barrier_dense_gradients()
  on_cpu, grads = _dense_grad(x)
  assert "optimization_barrier" in on_cpu
  for block in (compile_options.compiling_for("gpu"), compile_options.compiling_for("tpu"),
                compile_options.xla_defaults()):
    with block:
      assert not compile_options.barrier_dense_gradients()
      plain, plain_grads = _dense_grad(x)
    assert "optimization_barrier" not in plain
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), grads, plain_grads)
  assert compile_options.barrier_dense_gradients()  # the blocks restore the process's choice


def test_dots_remat_policies_still_save_dense_outputs():
  """A barriered Dense is a custom_vjp to jax.checkpoint: the dots policies save its output by name instead."""
  x = jnp.ones((4, 8))
  d1, d2 = layers.Dense(16, ("embed", "mlp"), use_bias=False), layers.Dense(8, ("mlp", "embed"), use_bias=False)
  p1, p2 = d1.init(jax.random.PRNGKey(0), x), d2.init(jax.random.PRNGKey(1), jnp.ones((4, 16)))
  fn = lambda x, a, b: jnp.sum(d2.apply(b, jnp.tanh(d1.apply(a, x))))

  def saved_activations():
    policy = layers.remat_policy("dots_with_no_batch_dims_saveable")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # jax's public form of saved_residuals: one line per residual
      print_saved_residuals(jax.checkpoint(fn, policy=policy), x, p1, p2)
    return [line.split()[0] for line in out.getvalue().splitlines() if "argument" not in line]

  assert saved_activations() == ["f32[4,16]"]
  with compile_options.compiling_for("gpu"):
    assert saved_activations() == ["f32[4,16]"]


def _ynn_convolutions(hlo_text: str) -> int:
  """How many convolutions a compiled program hands to YNNPACK: `__ynn_fusion` fusions whose computation convolves."""
  computations, name = {}, None
  for line in hlo_text.splitlines():
    header = re.match(r"\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if header and "=" not in line.split("{")[0]:
      name = header.group(1)
      computations[name] = []
    elif name:
      computations[name].append(line)
  convolving = {n for n, body in computations.items() if any(" convolution(" in l for l in body)}
  calls = [re.search(r"calls=%([\w.\-]+)", l) for body in computations.values() for l in body if '"__ynn_fusion"' in l]
  return sum(1 for c in calls if c and c.group(1) in convolving)


def _conv_loss(w, x):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   precision="highest")
  return jnp.sum(jnp.tanh(y))


def test_training_options_move_convolutions_off_ynnpack_on_cpu():
  options = compile_options.train_compiler_options()
  assert options == {"xla_cpu_experimental_ynn_fusion_type":
                     "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
  # 32 channels: XLA:CPU hands smaller convolutions to Eigen anyway.
  w = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 32, 32))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 32))
  grad = jax.grad(_conv_loss)
  default = jax.jit(grad).lower(w, x).compile()
  tuned = jax.jit(grad, compiler_options=options).lower(w, x).compile()
  assert _ynn_convolutions(default.as_text()) == 2  # XLA:CPU's default hands both convolutions to YNNPACK ...
  assert _ynn_convolutions(tuned.as_text()) == 0  # ... the training options to XLA's own (Eigen) convolutions
  np.testing.assert_allclose(tuned(w, x), default(w, x), rtol=1e-4, atol=1e-4)
  with compile_options.compiling_for("gpu"):
    assert compile_options.train_compiler_options() is None
  with compile_options.xla_defaults():
    assert compile_options.train_compiler_options() is None


def test_tokenizer_training_steps_compile_with_the_training_options():
  from janus_jax.models.configs import VQConfig  # pylint: disable=import-outside-toplevel
  from janus_jax.train import vq_trainer  # pylint: disable=import-outside-toplevel
  cfg = VQConfig(codebook_size=16, codebook_dim=4, base_channels=32, channel_mult=(1, 1), z_channels=8,
                 num_res_blocks=1, num_groups=4, encoder_attention=False)  # 32 channels: see above
  x = jnp.zeros((2, 8, 8, 3))

  def compiled_text():
    model, tx, step, _ = vq_trainer.make_step(cfg, 1e-3, 1, 2)
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    return step.lower(params, tx.init(params), x).compile().as_text()

  text = compiled_text()
  assert " convolution(" in text and _ynn_convolutions(text) == 0
  with compile_options.xla_defaults():
    assert _ynn_convolutions(compiled_text()) > 50


def test_compiling_for_an_unknown_platform_names_the_choices():
  with pytest.raises(ValueError, match="cpu, gpu, tpu"):
    with compile_options.compiling_for("metal"):
      pass


def test_the_ar_image_loop_compiles_its_dots_off_ynnpack_with_the_same_tokens():
  """`decode_compiler_options`: on CPU the AR loop's dots run on XLA's Eigen path (~10% faster decode steps,
  bench/bench_ar_decode.py --compare-xla-defaults), every token as with XLA's defaults."""
  from janus_jax.configs import models  # pylint: disable=import-outside-toplevel
  from janus_jax.models import param_layout  # pylint: disable=import-outside-toplevel
  from janus_jax.models.configs import JanusConfig  # pylint: disable=import-outside-toplevel
  from janus_jax.models.janus import JanusModel, init_params  # pylint: disable=import-outside-toplevel
  from janus_jax.sampling import ar_image  # pylint: disable=import-outside-toplevel
  assert compile_options.decode_compiler_options() == {"xla_cpu_experimental_ynn_fusion_type": ""}
  assert compile_options.decode_compiler_options("bfloat16") is None  # YNNPACK's bf16 dots are the faster
  for block in (compile_options.compiling_for("gpu"), compile_options.xla_defaults()):
    with block:
      assert compile_options.decode_compiler_options() is None
  cfg = JanusConfig.from_dict(models.janus_tiny())
  params, cfg = param_layout.for_decoding(init_params(cfg, jax.random.PRNGKey(0)), cfg)
  model = JanusModel(cfg)
  ids = jnp.asarray([[1, 5, 6, 7], [1, 0, 0, 7]])
  args = (params, ids, jnp.ones(ids.shape, bool), jax.random.PRNGKey(1), jnp.float32(5.0), jnp.float32(1.0),
          jnp.float32(1.0))
  tuned = ar_image.compiled_generate(model, greedy=False).for_params(params)
  with compile_options.xla_defaults():
    default = ar_image.compiled_generate(model, greedy=False).for_params(params)
  assert tuned is not default  # the options are part of the loop cache's key
  texts = [run.lower(*args).compile().as_text() for run in (tuned, default)]
  assert " dot(" in texts[0] and "__ynn_fusion" not in texts[0]
  assert texts[1].count("__ynn_fusion") > 10  # XLA:CPU's default hands the dots to YNNPACK
  np.testing.assert_array_equal(tuned(*args), default(*args))
  ar_image._compiled_generate.cache_clear()  # pylint: disable=protected-access  (other modules count executables)
