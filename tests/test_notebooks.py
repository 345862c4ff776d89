"""Notebooks are thin clients of the library: run every code cell (offline fallback path) on the tiny model."""
import glob
import json

import pytest


@pytest.mark.parametrize("path", sorted(glob.glob("notebooks/*.ipynb")))
def test_notebook_runs(path):
  nb = json.load(open(path))
  namespace = {}
  for cell in nb["cells"]:
    if cell["cell_type"] == "code":
      exec(compile("".join(cell["source"]), f"{path}:{cell.get('id')}", "exec"), namespace)  # pylint: disable=exec-used
