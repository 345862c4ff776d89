"""Shared Linen building blocks that carry logical axis names on every parameter.

Naming convention (so that parameter paths equal checkpoint keys): a submodule is named exactly like the PyTorch
module in the official DeepSeek checkpoint; `nn.Sequential`-style numeric children are named `layers_0`; a layer
stack that is scanned is one module whose params have a leading `layers` axis. `janus_jax.checkpoint.mapping`
relies on this.

Logical axis vocabulary (mapped onto mesh axes by `sharding.DEFAULT_RULES` / `config.sharding.rules`):
  params:      embed, mlp, heads, kv_heads, qkv, vocab, layers, norm, conv_h, conv_w, conv_in, conv_out,
               codebook, codebook_dim, pos, image_vocab
  activations: act_batch, act_seq, act_kv_seq, act_embed, act_mlp, act_heads, act_vocab
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from janus_jax import compile_options, precision as precision_lib, quantization

Axes = tuple[str | None, ...]


def names(init_fn, axes: Axes):
  """Wraps an initializer so that the created param carries logical axis names."""
  return nn.with_logical_partitioning(init_fn, axes)


def constrain(x: jax.Array, axes: Axes) -> jax.Array:
  """Logical sharding constraint on an activation (no-op outside a mesh / rules context)."""
  return nn.with_logical_constraint(x, axes)


def linear_args(cfg) -> dict:
  """The compute dtype, param dtype and matmul precision of a component config, as Dense / Conv keyword args."""
  return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), precision=cfg.matmul_precision)


def remat_policy(name: str):
  """Maps a config string onto a `jax.checkpoint_policies` policy; None means "do not remat"."""
  if name in ("none", "", None):
    return None
  if name == "full":
    return jax.checkpoint_policies.nothing_saveable
  try:
    policy = getattr(jax.checkpoint_policies, name)
  except AttributeError as e:
    raise ValueError(f"Unknown remat_policy {name!r}: use 'none', 'full' or a jax.checkpoint_policies name "
                     "such as 'dots_with_no_batch_dims_saveable'.") from e
  if "dot" in name and compile_options.barrier_dense_gradients():
    # A Dense with a barriered backward is a custom_vjp, not a dot, to the policy: save its output by name.
    policy = jax.checkpoint_policies.save_from_both_policies(
        policy, jax.checkpoint_policies.save_only_these_names(DENSE_OUTPUT))
  return policy


DENSE_OUTPUT = "dense_output"  # the checkpoint name of a Dense output computed by `barriered_matmul`


def _matmul(x, kernel, precision, out_dtype):
  return jnp.einsum("...i,io->...o", x, kernel, precision=precision, preferred_element_type=out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def barriered_matmul(x: jax.Array, kernel: jax.Array, precision, out_dtype) -> jax.Array:
  """x[..., in] @ kernel[in, out] -> [..., out], whose backward (dx = dy @ kernel^T, dkernel = x^T @ dy) starts
  from x and the cotangent dy materialised by an optimization barrier, so that XLA:CPU does not fuse the weight gradient's
  transposes into the loops that made them (`janus_jax.compile_options`)."""
  return _matmul(x, kernel, precision, out_dtype)


def _barriered_fwd(x, kernel, precision, out_dtype):
  return _matmul(x, kernel, precision, out_dtype), (x, kernel)


def _barriered_bwd(precision, out_dtype, residuals, cotangent):
  x, kernel, cotangent = jax.lax.optimization_barrier((*residuals, cotangent))
  dx = jnp.einsum("...o,io->...i", cotangent, kernel, precision=precision, preferred_element_type=x.dtype)
  # x^T @ dy with x first: XLA:CPU transposes the materialised x ([..., in]), not dy (jax's own rule computes
  # (dy^T @ x)^T, which left the step as slow as without the barrier).
  dkernel = jnp.einsum("...i,...o->io", x, cotangent, precision=precision, preferred_element_type=kernel.dtype)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


barriered_matmul.defvjp(_barriered_fwd, _barriered_bwd)


class Dense(nn.Module):
  """Linear layer; kernel float[in, out] with logical names `axes`, bias named `axes[-1]`.

  Computes in `dtype` at matmul `precision` (a `janus_jax.precision` name); `out_dtype` (e.g. float32 for logits)
  makes the matmul accumulate into and return that dtype.
  """
  features: int
  axes: Axes
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  precision: str = "highest"
  out_dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", names(self.kernel_init, self.axes), (x.shape[-1], self.features),
                        self.param_dtype)
    out_dtype = self.out_dtype or self.dtype
    quantized = quantization.is_quantized_leaf(kernel)  # a qwix QArray (janus_jax.quantization) stays int8
    if not quantized:
      kernel = kernel.astype(self.dtype)
    precision = precision_lib.lax_precision(self.precision)
    if quantized or not compile_options.barrier_dense_gradients():
      y = quantization.einsum("...i,io->...o", x.astype(self.dtype), kernel, precision=precision,
                              preferred_element_type=out_dtype)
    else:
      y = checkpoint_name(
          barriered_matmul(x.astype(self.dtype), kernel, precision, jnp.dtype(out_dtype)), DENSE_OUTPUT)
    if self.use_bias:
      bias = self.param("bias", names(nn.initializers.zeros_init(), (self.axes[-1],)), (self.features,),
                        self.param_dtype)
      y = y + bias.astype(out_dtype)
    return y


class Conv(nn.Module):
  """2-D convolution on NHWC input; kernel float[kh, kw, in, out] (HWIO) named (conv_h, conv_w, conv_in, conv_out).

  `padding` is an int (symmetric) or explicit ((top, bottom), (left, right)); `groups` gives depthwise convs.
  """
  features: int
  kernel_size: int
  strides: int = 1
  padding: int | Sequence[tuple[int, int]] = 0
  groups: int = 1
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  precision: str = "highest"

  @nn.compact
  def __call__(self, x):
    cin = x.shape[-1]
    k = self.kernel_size
    kernel = self.param("kernel", names(nn.initializers.lecun_normal(), ("conv_h", "conv_w", "conv_in", "conv_out")),
                        (k, k, cin // self.groups, self.features), self.param_dtype)
    pad = self.padding
    if isinstance(pad, int):
      pad = ((pad, pad), (pad, pad))
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), window_strides=(self.strides, self.strides),
        padding=tuple(tuple(p) for p in pad), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=self.groups, precision=precision_lib.lax_precision(self.precision))
    if self.use_bias:
      bias = self.param("bias", names(nn.initializers.zeros_init(), ("conv_out",)), (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class LayerNorm(nn.Module):
  """LayerNorm over the last axis with `scale`/`bias` named `axis_name`; statistics in float32."""
  eps: float = 1e-6
  axis_name: str = "norm"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    scale = self.param("scale", names(nn.initializers.ones_init(), (self.axis_name,)), (d,), self.param_dtype)
    bias = self.param("bias", names(nn.initializers.zeros_init(), (self.axis_name,)), (d,), self.param_dtype)
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


class RMSNorm(nn.Module):
  """LLaMA RMSNorm: variance in float32, normalised x cast back to the input dtype, then times `scale`."""
  eps: float = 1e-6
  axis_name: str = "norm"
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", names(nn.initializers.ones_init(), (self.axis_name,)), (x.shape[-1],),
                       self.param_dtype)
    in_dtype = x.dtype
    xf = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(xf), axis=-1, keepdims=True)
    y = (xf * jax.lax.rsqrt(var + self.eps)).astype(in_dtype)
    return scale.astype(in_dtype) * y


class GroupNorm(nn.Module):
  """GroupNorm on NHWC input (torch semantics: stats over (H, W, C/groups)), float32 statistics."""
  num_groups: int = 32
  eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    g = self.num_groups
    if c % g:
      raise ValueError(f"GroupNorm: {c} channels are not divisible into {g} groups.")
    scale = self.param("scale", names(nn.initializers.ones_init(), ("conv_out",)), (c,), self.param_dtype)
    bias = self.param("bias", names(nn.initializers.zeros_init(), ("conv_out",)), (c,), self.param_dtype)
    xf = x.astype(jnp.float32).reshape(b, h, w, g, c // g)
    mean = xf.mean(axis=(1, 2, 4), keepdims=True)
    var = jnp.square(xf - mean).mean(axis=(1, 2, 4), keepdims=True)
    y = ((xf - mean) * jax.lax.rsqrt(var + self.eps)).reshape(b, h, w, c)
    return (y * scale + bias).astype(self.dtype)


def gelu(x):
  """Exact (erf) GELU, as torch `nn.GELU()`."""
  return jax.nn.gelu(x, approximate=False)
