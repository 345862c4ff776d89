"""The main job end to end on its fast setting: prepare -> VQ -> Janus -> eval -> samples.png / eval.json."""
import json
import os

from janus_jax import main
from janus_jax.configs.common import load_config


def test_main_job_fast(tmp_path):
  summary = main.run_all(load_config("experiments/shapes_demo.py:fast"), str(tmp_path))
  for name in ("samples.png", "eval.json"):
    assert (tmp_path / name).is_file()
  assert os.path.isdir(tmp_path / "janus" / "tensorboard")
  saved = json.load(open(tmp_path / "eval.json"))
  for which in ("untrained", "trained"):
    assert set(saved[which]["generation"]) >= {"single_object", "two_objects", "counting", "colors", "position",
                                                "color_attr", "overall"}
    assert 0.0 <= saved[which]["understanding"]["overall"] <= 1.0
  assert summary["vq"]["psnr"] > 0
  assert main.run_all(load_config("experiments/shapes_demo.py:fast"), str(tmp_path), mode="eval")["trained"]
