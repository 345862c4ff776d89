"""`get_config(arg)` argument parsing and loading of `experiments/<x>.py[:arg]` config files."""
from __future__ import annotations

import difflib
import importlib.util
import os
from typing import Any, Iterable

import ml_collections


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses "a=1,b=x,flag" against typed defaults (big_vision style); a bare name sets a bool to True.

  Unknown names raise a ValueError listing the valid ones.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"Unknown config argument {key!r}; valid arguments: {sorted(defaults)}.")
    default = defaults[key]
    if not _:
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    elif default is None:
      out[key] = value
    else:
      out[key] = type(default)(value)
  return out


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads "path/to/config.py[:arg]" by calling its `get_config(arg)`."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Config file {path!r} not found (expected experiments/<name>.py[:arg]).")
  module_spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def reject_unknown_keys(cfg, valid: Iterable[str], what: str) -> None:
  """Raises a ValueError naming every key of `cfg` not in `valid`, with close matches as hints."""
  valid = sorted(valid)
  unknown = sorted(set(cfg) - set(valid))
  if unknown:
    hints = {k: difflib.get_close_matches(k, valid, n=1) for k in unknown}
    hint = "; ".join(f"{k!r} -> did you mean {v[0]!r}?" for k, v in hints.items() if v)
    raise ValueError(f"Unknown {what} key(s) {unknown}. Valid keys: {valid}. {hint}".strip())
