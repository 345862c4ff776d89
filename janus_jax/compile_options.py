"""How programs are compiled on each platform: XLA options and gradient layouts that change speed, not the math.

Three measured XLA:CPU slow paths (jax 0.10.2). On the demo's training shapes (2-core Xeon;
`bench/bench_train_flops.py` prints the figures with each choice on and off):

- **Convolution backward in YNNPACK.** XLA:CPU hands convolutions, dots and reductions to YNNPACK by default. Its
  convolution weight gradients run ~3x slower than XLA's Eigen convolutions (a 3x3, 64 -> 64 conv on 32 x 32 x 32 x 64
  activations: 84 ms against 26 ms). `train_compiler_options()` keeps YNNPACK dots and reductions and takes the
  convolutions off it; every training step (`jax.jit`) of the tokenizers and of Janus uses it. The demo's VQ step
  goes from ~690 to ~400 ms.
- **Weight-gradient transposes fused into elementwise loops.** XLA:CPU computes a Dense kernel's gradient
  x^T @ dy by transposing x first, and it fuses that transpose into whatever made x or dy, e.g. the SwiGLU
  backward. A loop with a transposed output and several strided inputs is ~10x slower than the plain
  transpose (22 ms against 0.7 ms for [3072, 512]). `layers.Dense` therefore computes its backward from
  materialised x and dy (an optimization barrier) where `barrier_dense_gradients()` says so: on CPU. The demo's
  train step goes from ~470 to ~320 ms. GPU and TPU fuse such transposes into their matmuls; there it is off.

In decoding:

- **Token-by-token decode in YNNPACK.** An AR image step is ~75 small matmuls (4 rows against each weight matrix)
  and the head that stream ~180 MB of weights and KV cache. With nothing on YNNPACK (XLA's Eigen dots) the bench
  model's 576-token loop runs ~10% faster: 10.6 against 12.1 ms/step, median of 6 interleaved pairs on a 2-core AMD
  EPYC, 6-12% on a 2-core Xeon; the tokens are identical (`bench/bench_ar_decode.py --compare-xla-defaults`).
  `decode_compiler_options()` is that choice, for the jit of the AR image loop in float32 (weight-only int8
  included: its kernels become float32 outside the loop). YNNPACK is the faster in bfloat16 (11.4 against 12.0
  ms/step on the EPYC) and for int8 x int8 dots ("int8_dynamic": Eigen's take 18.0 ms/step, 0.56x float32), and
  the understanding answer loop (2 rows) measured no gain (10.4-10.7 against 10.0-10.7 ms/token): these keep
  XLA's defaults.

`compiling_for(platform)` makes these choices for another platform than the process's (`janus-jax plan` compiles
a GPU or TPU program on CPU); `xla_defaults()` turns all of them off (to measure them, or to rule them out).
"""
from __future__ import annotations

import contextlib
import functools

import jax

from janus_jax import precision

_TARGET: list[str] = []  # the platform being compiled for, when it is not the process's (compiling_for)
_DEFAULTS_ONLY: list[bool] = []  # inside xla_defaults()

# YNNPACK fusion types XLA:CPU uses by default (jax 0.10), less LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
_CPU_YNN_WITHOUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def target_platform() -> str:
  """'cpu', 'gpu' or 'tpu': the platform of `compiling_for`, else this process's backend."""
  return _TARGET[-1] if _TARGET else precision.platform()


@contextlib.contextmanager
def compiling_for(platform: str):
  """Within this block, models trace and compile as they would on `platform` ('cpu', 'gpu' or 'tpu')."""
  if platform not in precision.PLATFORM_DEFAULTS:
    raise ValueError(f"Unknown platform {platform!r}: use one of {', '.join(precision.PLATFORM_DEFAULTS)}.")
  _TARGET.append(platform)
  try:
    yield
  finally:
    _TARGET.pop()


@contextlib.contextmanager
def xla_defaults():
  """Within this block, programs trace and compile with none of these choices: XLA's defaults, plain autodiff."""
  _DEFAULTS_ONLY.append(True)
  try:
    yield
  finally:
    _DEFAULTS_ONLY.pop()


def barrier_dense_gradients() -> bool:
  """Whether `layers.Dense` computes its backward from materialised inputs and cotangents (CPU)."""
  return target_platform() == "cpu" and not _DEFAULTS_ONLY


@functools.lru_cache(maxsize=None)
def _cpu_accepts(options: tuple[tuple[str, str], ...]) -> bool:
  """Whether this jaxlib's XLA:CPU knows `options` (a tiny compile; a newer jaxlib may rename them)."""
  try:
    jax.jit(lambda x: x + 1).lower(jax.ShapeDtypeStruct((1,), "float32")).compile(compiler_options=dict(options))
    return True
  except Exception:  # noqa: BLE001 - an unknown option or value: compile without it, as XLA would by default
    return False


def _cpu_options(*options: tuple[str, str]) -> dict | None:
  """`options` as `jax.jit(compiler_options=...)` where programs compile for CPU with these choices and this
  jaxlib's XLA:CPU knows them; else None (XLA's defaults)."""
  if target_platform() != "cpu" or jax.default_backend() != "cpu" or _DEFAULTS_ONLY:
    return None
  return dict(options) if _cpu_accepts(options) else None


def train_compiler_options() -> dict | None:
  """XLA options for the `jax.jit` of a training step on this platform (None: XLA's defaults)."""
  return _cpu_options(("xla_cpu_experimental_ynn_fusion_type", _CPU_YNN_WITHOUT_CONVOLUTIONS))


def decode_compiler_options(compute_dtype="float32", integer_dots: bool = False) -> dict | None:
  """XLA options for the `jax.jit` of a token-by-token decode loop on this platform that computes in
  `compute_dtype`, with int8 x int8 dots where `integer_dots` (None: XLA's defaults; so in bfloat16 and with
  integer dots, where YNNPACK's dots are the faster ones)."""
  if integer_dots or jax.numpy.dtype(compute_dtype) != jax.numpy.float32:
    return None
  return _cpu_options(("xla_cpu_experimental_ynn_fusion_type", ""))  # no fusion type: every dot on Eigen's path


def options_key(options: dict | None) -> tuple | None:
  """A hashable form of compiler options, for the caches of compiled functions (None stays None)."""
  return None if options is None else tuple(sorted(options.items()))


def init_compiler_options() -> dict | None:
  """XLA options for the one-off `jax.jit` of a random init: on CPU without LLVM optimisation (a tiny model
  compiles in 4 s instead of 8 s; it runs once)."""
  return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


__all__ = ["target_platform", "compiling_for", "xla_defaults", "barrier_dense_gradients", "train_compiler_options",
           "decode_compiler_options", "options_key", "init_compiler_options"]
