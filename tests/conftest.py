"""Test session setup: 8 fake CPU devices (for sharding tests) before JAX initialises; tests/ on sys.path."""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(__file__))
