"""Compute dtype and matmul precision by platform.

Every component config carries `dtype` (the compute dtype of its activations and matmuls) and `matmul_precision`
(the `jax.lax.Precision` of its matmuls, convolutions and attention). Either may be "auto": `JanusConfig` resolves
it for the platform the model runs on, from `PLATFORM_DEFAULTS`:

  cpu        float32,  "highest"  (exact parity with the PyTorch references; CPU fp32 matmuls are fp32 anyway)
  gpu, tpu   bfloat16, "default"  (bf16 weights and activations on the matrix units; softmax, norms, logits and
                                   the loss stay float32 in the layers that compute them)

Params keep their own `param_dtype`; the layers cast them to the compute dtype.
"""
from __future__ import annotations

import jax

AUTO = "auto"
DTYPES = ("float32", "bfloat16", "float16")
PRECISIONS = {"default": jax.lax.Precision.DEFAULT, "high": jax.lax.Precision.HIGH,
              "highest": jax.lax.Precision.HIGHEST}
PLATFORM_DEFAULTS = {"cpu": ("float32", "highest"), "gpu": ("bfloat16", "default"),
                     "tpu": ("bfloat16", "default")}


def platform() -> str:
  """The default backend's platform: 'cpu', 'gpu' or 'tpu' (cuda/rocm count as gpu)."""
  name = jax.default_backend()
  return "gpu" if name in ("cuda", "rocm", "gpu") else name


def defaults(for_platform: str | None = None) -> tuple[str, str]:
  """(compute dtype, matmul precision) of a platform (default: this process's backend)."""
  name = for_platform or platform()
  return PLATFORM_DEFAULTS.get(name, PLATFORM_DEFAULTS["gpu"])


def resolve(dtype: str, matmul_precision: str, *, for_platform: str | None = None,
            where: str = "--config.model.{field}") -> tuple[str, str]:
  """Resolves "auto" entries and checks the names.

  `where` names the setting the user wrote, with `{field}` for "dtype" / "matmul_precision" (e.g.
  "--config.model.llm.{field}", "janus_jax.load({field}=...)"); errors name it and the valid values.
  """
  auto_dtype, auto_precision = defaults(for_platform)
  dtype = auto_dtype if dtype == AUTO else str(dtype)
  matmul_precision = auto_precision if matmul_precision == AUTO else str(matmul_precision)
  if dtype not in DTYPES:
    raise ValueError(f"Unknown compute dtype {dtype!r} in {where.format(field='dtype')}: use one of "
                     f"{', '.join(DTYPES)} or 'auto' (the platform's default).")
  if matmul_precision not in PRECISIONS:
    raise ValueError(f"Unknown matmul precision {matmul_precision!r} in {where.format(field='matmul_precision')}: "
                     f"use one of {', '.join(PRECISIONS)} or 'auto' (the platform's default).")
  return dtype, matmul_precision


def lax_precision(name: str) -> jax.lax.Precision:
  """The `jax.lax.Precision` of a resolved precision name."""
  try:
    return PRECISIONS[name]
  except KeyError:
    raise ValueError(f"Unresolved or unknown matmul precision {name!r}: use one of {', '.join(PRECISIONS)} "
                     "(JanusConfig resolves 'auto').") from None
