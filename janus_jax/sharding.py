"""Device mesh from config and the logical-axis -> mesh-axis rules table.

Config (ml_collections):
  config.mesh  = [("data", -1), ("fsdp", 1), ("tensor", 1)]   # -1 takes the remaining devices
  config.sharding_rules = DEFAULT_RULES (list of (logical name, mesh axis | tuple | None))
Every mesh axis is `AxisType.Auto` so XLA propagates shardings between the annotated points.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DEFAULT_MESH = (("data", -1), ("fsdp", 1), ("tensor", 1))

DEFAULT_RULES = (
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_seq", None),
    ("act_kv_seq", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
    # params
    ("layers", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("qkv", "tensor"),
    ("vocab", "tensor"),
    ("image_vocab", "tensor"),
    ("norm", None),
    ("pos", None),
    ("conv_h", None),
    ("conv_w", None),
    ("conv_in", None),
    ("conv_out", None),
    ("codebook", None),
    ("codebook_dim", None),
)


def make_mesh(mesh_spec: Sequence[tuple[str, int]] = DEFAULT_MESH, devices=None) -> Mesh:
  """Builds a Mesh from [(axis name, size)], one size may be -1 ("all remaining devices").

  Raises a ValueError naming the device count and the spec when the sizes do not divide the devices.
  """
  devices = list(devices if devices is not None else jax.devices())
  n = len(devices)
  names = [a for a, _ in mesh_spec]
  sizes = [int(s) for _, s in mesh_spec]
  if sizes.count(-1) > 1:
    raise ValueError(f"Mesh {list(mesh_spec)}: at most one axis may be -1.")
  fixed = math.prod(s for s in sizes if s != -1)
  if fixed <= 0 or n % fixed:
    raise ValueError(
        f"Mesh {list(mesh_spec)} does not divide the {n} available device(s): the fixed axis sizes multiply to "
        f"{fixed}. Fix: choose axis sizes whose product divides {n}, or set one axis to -1.")
  sizes = [n // fixed if s == -1 else s for s in sizes]
  if math.prod(sizes) != n:
    raise ValueError(
        f"Mesh {dict(zip(names, sizes))} uses {math.prod(sizes)} devices but {n} are available. "
        "Fix: make the product of the axis sizes equal the device count, or set one axis to -1.")
  arr = np.asarray(devices).reshape(sizes)
  return Mesh(arr, tuple(names), axis_types=(AxisType.Auto,) * len(names))


def logical_to_sharding(boxed_abstract: Any, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedShardings for a boxed (LogicallyPartitioned) param tree, unboxed to the plain tree structure."""
  specs = nn.get_partition_spec(boxed_abstract)
  mesh_specs = nn.logical_to_mesh(specs, tuple(rules))
  return jax.tree.map(lambda s: NamedSharding(mesh, s), mesh_specs,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def check_spec_ranks(boxed_abstract: Any) -> list[str]:
  """Returns 'path: spec rank != array rank' strings for every param whose logical names mis-match its rank."""
  problems = []
  flat = jax.tree_util.tree_flatten_with_path(boxed_abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
  for path, leaf in flat:
    name = jax.tree_util.keystr(path)
    if isinstance(leaf, nn.Partitioned):
      if len(leaf.names) != len(leaf.value.shape):
        problems.append(f"{name}: names {leaf.names} for shape {leaf.value.shape}")
    else:
      problems.append(f"{name}: no logical axis names (shape {getattr(leaf, 'shape', None)})")
  return problems


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
