"""What the benchmarks ran on: the CPU model and its vector extensions (figures from different CPUs differ)."""
from __future__ import annotations

import platform

# The extensions XLA's CPU backend can use for fp32 / bf16 / int8 matmuls, in the order they arrived.
EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
              "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def cpu_description() -> str:
  """e.g. "AMD EPYC (2 cores; avx avx2 fma; no avx512f)": from /proc/cpuinfo where there is one."""
  import os  # pylint: disable=import-outside-toplevel
  model, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and model in ("", platform.machine(), platform.processor()):
          model = value.strip()
        elif key in ("flags", "features") and not flags:
          flags = set(value.split())
  except OSError:
    pass
  have = [e for e in EXTENSIONS if e in flags]
  missing = [e for e in ("avx512f", "avx512_bf16", "amx_bf16") if e not in flags and platform.machine() == "x86_64"]
  return (f"{model} ({os.cpu_count()} cores; {' '.join(have) or 'no vector flags read'}"
          f"{'; no ' + ' '.join(missing) if missing else ''})")


def describe() -> str:
  """The line a benchmark prints first: "cpu: <cpu_description>" or "backend: gpu (<device kind>)"."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.default_backend() == "cpu":
    return f"cpu: {cpu_description()}"
  return f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind})"


if __name__ == "__main__":
  print(cpu_description())
