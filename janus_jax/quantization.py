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

import sys
from typing import Any

import jax
import jax.numpy as jnp

QTYPES = {"int8": jnp.int8}
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
      return qwix.quantize(jnp.asarray(tree), QTYPES[qtype], channelwise_axes=[1])
    return tree

  return visit(dict(params), ())


def is_quantized_leaf(x: Any) -> bool:
  """Is `x` a qwix QArray? (Without qwix imported, nothing can be one.)"""
  qwix = sys.modules.get("qwix")
  return qwix is not None and isinstance(x, qwix.QArray)


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
  if kernel.qvalue.ndim != 2 or kernel.zero_point is not None or kernel.scale.shape != (1, kernel.qvalue.shape[1]):
    raise ValueError(f"Quantized kernels must be [in, out] with one symmetric scale per output channel; got values "
                     f"{kernel.qvalue.shape} and scale {kernel.scale.shape}.")
  y = jnp.einsum(spec, x, kernel.qvalue.astype(x.dtype), **kwargs)
  return y * kernel.scale[0].astype(y.dtype)
