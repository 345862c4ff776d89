"""Paths that may be local or remote (`gs://bucket/run`, any `etils.epath` backend), one rule for the whole package.

    workdir = paths.resolve("~/runs/x")      # local: ~ expanded, made absolute -> epath.Path
    workdir = paths.resolve("gs://b/runs/x") # remote: kept as it is (never `os.path.abspath`-ed into a folder "gs:")
    (workdir / "eval.json").write_text(...)  # epath.Path API for every read and write

Use `resolve` at the boundary (config, CLI, API) and `epath.Path` operations after it; `str(path)` is what orbax,
tfds and tensorstore take. `is_remote` tells code that needs a local file (e.g. a C++ library) to copy first.
"""
from __future__ import annotations

import os
import re
from typing import Union

from etils import epath

PathLike = Union[str, os.PathLike, epath.Path]
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_remote(path: PathLike) -> bool:
  """True for URL-style paths (`gs://`, `s3://`, ...), False for local ones."""
  return bool(_SCHEME.match(os.fspath(path)))


def resolve(path: PathLike) -> epath.Path:
  """`path` as an epath.Path: remote paths unchanged, local ones with `~` expanded and made absolute."""
  text = os.fspath(path)
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def join(path: PathLike, *parts: str) -> str:
  """`resolve(path) / parts` as a string (for APIs that take str paths)."""
  return os.fspath(resolve(path).joinpath(*parts))
