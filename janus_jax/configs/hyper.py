"""Sweep algebra for `get_hyper(h)` in experiment files: each helper returns a list of override dicts.

    def get_hyper(h):
      return h.product([h.sweep("config.optim.lr", [1e-4, 3e-4]), h.fixed("config_arg", "stage=2")])
    # -> [{'config.optim.lr': 1e-4, 'config_arg': 'stage=2'}, {'config.optim.lr': 3e-4, 'config_arg': 'stage=2'}]

Keys are 'config.<dotted path>' (a `--config.x.y=v` override) or 'config_arg' (the `:arg` string of the file).
`apply_overrides(config, overrides)` applies the 'config.*' keys to a loaded ConfigDict.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Mapping, Sequence

Overrides = list[dict[str, Any]]


def fixed(name: str, value: Any) -> Overrides:
  """One setting: [{name: value}]."""
  return [{name: value}]


def sweep(name: str, values: Iterable[Any]) -> Overrides:
  """One run per value: [{name: v} for v in values]."""
  return [{name: v} for v in values]


def product(parts: Sequence[Overrides]) -> Overrides:
  """Cartesian product of sweeps; a key set twice raises."""
  out = []
  for combo in itertools.product(*parts):
    merged: dict[str, Any] = {}
    for d in combo:
      clash = set(merged) & set(d)
      if clash:
        raise ValueError(f"hyper.product: key(s) {sorted(clash)} are swept twice.")
      merged.update(d)
    out.append(merged)
  return out


def zipit(parts: Sequence[Overrides]) -> Overrides:
  """Element-wise merge of equally long sweeps (e.g. lr with its warm-up)."""
  lengths = {len(p) for p in parts}
  if len(lengths) > 1:
    raise ValueError(f"hyper.zipit needs sweeps of equal length, got lengths {[len(p) for p in parts]}.")
  return [dict(kv for d in ds for kv in d.items()) for ds in zip(*parts)]


def chainit(parts: Sequence[Overrides]) -> Overrides:
  """Concatenation: the runs of every part, one after the other."""
  return [d for p in parts for d in p]


def apply_overrides(config, overrides: Mapping[str, Any]):
  """Sets every 'config.a.b' key of `overrides` on `config` (in place; returns it). Other keys are ignored.

  Raises KeyError naming the path when a key does not exist in the config (no silent typos).
  """
  for key, value in overrides.items():
    if not key.startswith("config."):
      continue
    *parents, leaf = key[len("config."):].split(".")
    node = config
    for p in parents:
      if p not in node:
        raise KeyError(f"Override {key!r}: the config has no field {p!r} (valid: {sorted(node.keys())}).")
      node = node[p]
    if leaf not in node:
      raise KeyError(f"Override {key!r}: the config has no field {leaf!r} (valid: {sorted(node.keys())}).")
    node[leaf] = value
  return config


__all__ = ["fixed", "sweep", "product", "zipit", "chainit", "apply_overrides"]
