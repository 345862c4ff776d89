"""Weight-only quantization for decoding: the LLM's and the image head's Dense kernels as qwix `QArray`s.

    params = quantize_weights(params, "int8")     # after param_layout.for_decoding (what janus_jax.load does)

Each kernel float[in, out] becomes int8 values with one absmax scale per output channel (`qwix.quantize`, a
`qwix.QArray`); `layers.Dense` multiplies it through `einsum` below: the int8 values converted inside the matmul,
the scale applied to its output, so a decode step streams int8 weights (a quarter of float32's bytes, half of
bf16's). Activations, the KV cache, norms,
embeddings, SigLIP, the aligners and the image tokenizer stay as they are. Decoding only: the train step expects
float params.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any

import jax
import jax.numpy as jnp

# "int8": weight-only (activations stay float); "int8_dynamic": int8 weights and, at every matmul, int8 activations
# with one absmax scale per row (dynamic range), int8 x int8 -> int32 products (what CPUs' VNNI units run).
QTYPES = {"int8": jnp.int8, "int8_dynamic": jnp.int8}


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DynamicRange:
  """A quantized kernel whose matmul also quantizes its input per row ("int8_dynamic")."""
  weights: Any  # qwix.QArray
QUANTIZED = ("language_model", "gen_head")  # top-level param subtrees whose Dense kernels are quantized


def check_qtype(qtype: str | None, where: str = "quantize") -> None:
  """ValueError naming `where` and the valid values for an unknown qtype (None: no quantization)."""
  if qtype is not None and qtype not in QTYPES:
    raise ValueError(f"Unknown {where}={qtype!r}: use one of {', '.join(QTYPES)} or None (float weights).")


def quantize_weights(params: dict[str, Any], qtype: str = "int8") -> dict[str, Any]:
  """A copy of `params` whose Dense kernels under QUANTIZED are `qwix.QArray`s (per-output-channel scales).

  Kernels are the leaves named "kernel" of rank 2 ([in, out]); scanned layers ([layers, in, out], the training
  layout) raise: unroll them first (`param_layout.for_decoding`, as `janus_jax.load` does)."""
  check_qtype(qtype)
  import qwix  # pylint: disable=import-outside-toplevel  # imported on first use (~1 s)

  def visit(tree, path):
    if isinstance(tree, dict):
      return {k: visit(v, path + (k,)) for k, v in tree.items()}
    if path[0] in QUANTIZED and path[-1] == "kernel" and not is_quantized_leaf(tree):
      if tree.ndim != 2:
        raise ValueError(f"{'/'.join(path)} has shape {tuple(tree.shape)}: quantize the decoding layout (unrolled "
                         "layers, janus_jax.models.param_layout.for_decoding), not the scanned training one.")
      q = qwix.quantize(jnp.asarray(tree), QTYPES[qtype], channelwise_axes=[1])
      return DynamicRange(q) if qtype == "int8_dynamic" else q
    return tree

  return visit(dict(params), ())


def is_quantized_leaf(x: Any) -> bool:
  """Is `x` a qwix QArray? (Without qwix imported, nothing can be one.)"""
  qwix = sys.modules.get("qwix")
  return isinstance(x, DynamicRange) or (qwix is not None and isinstance(x, qwix.QArray))


def has_integer_dots(params: Any) -> bool:
  """Whether any kernel of `params` multiplies in int8 ("int8_dynamic": int8 inputs times int8 weights)."""
  return any(isinstance(x, DynamicRange) for x in jax.tree.leaves(params, is_leaf=is_quantized_leaf))


def quantized_paths(params: dict[str, Any]) -> list[str]:
  """'/'-joined paths of the quantized kernels."""
  leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_quantized_leaf)[0]
  return ["/".join(str(getattr(k, "key", k)) for k in path) for path, leaf in leaves if is_quantized_leaf(leaf)]


def einsum(spec: str, x: jax.Array, kernel: Any, **kwargs) -> jax.Array:
  """`jnp.einsum` of `x` and a float or quantized kernel [in, out].

  Quantized: the int8 values enter the matmul converted to `x`'s dtype and the per-output-channel scale multiplies
  the result. That is the same product as dequantizing first (`qwix.einsum`) up to rounding, and the convert fuses
  into the matmul's operand, so each step reads int8 weights (CPU: 4x fewer bytes than float32)."""
  if not is_quantized_leaf(kernel):
    return jnp.einsum(spec, x, kernel, **kwargs)
  if isinstance(kernel, DynamicRange):
    return _dynamic_range_einsum(spec, x, kernel.weights, kwargs.get("preferred_element_type"))
  if kernel.qvalue.ndim != 2 or kernel.zero_point is not None or kernel.scale.shape != (1, kernel.qvalue.shape[1]):
    raise ValueError(f"Quantized kernels must be [in, out] with one symmetric scale per output channel; got values "
                     f"{kernel.qvalue.shape} and scale {kernel.scale.shape}.")
  y = jnp.einsum(spec, x, kernel.qvalue.astype(x.dtype), **kwargs)
  return y * kernel.scale[0].astype(y.dtype)


def _dynamic_range_einsum(spec: str, x: jax.Array, kernel: Any, out_dtype=None) -> jax.Array:
  """x float[..., in] quantized to int8 per row (absmax), times int8 kernel [in, out], int32 accumulation, both
  scales applied to the result."""
  if spec != "...i,io->...o":
    raise ValueError(f"int8_dynamic supports the Dense contraction '...i,io->...o', not {spec!r}.")
  xf = x.astype(jnp.float32)
  x_scale = jnp.maximum(jnp.max(jnp.abs(xf), axis=-1, keepdims=True), 1e-30) / 127.0
  xq = jnp.clip(jnp.round(xf / x_scale), -127, 127).astype(jnp.int8)
  acc = jax.lax.dot_general(xq, kernel.qvalue, (((xq.ndim - 1,), (0,)), ((), ())),
                            preferred_element_type=jnp.int32)
  y = acc.astype(jnp.float32) * x_scale * kernel.scale[0].astype(jnp.float32)
  return y.astype(out_dtype or x.dtype)
