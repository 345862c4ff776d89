"""Test session setup: 8 fake CPU devices (for sharding tests) before JAX initialises; tests/ on sys.path."""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(__file__))

# One XLA compilation cache for the session, shared with the subprocesses the tests start (they inherit the
# environment): the same tiny programs are compiled by many tests, and each compile costs seconds on 2 cores.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="janus_jax_xla_cache_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
