r"""Janus-Pro-1B: model shape, chat template (deepseek), sampling defaults and the device mesh.

  --config=experiments/janus_pro_1b.py:dtype=bfloat16,scan=false --config.sampling.cfg_weight=4
"""
from janus_jax.configs import models


def get_config(arg=None):
  return models.inference_config(models.janus_pro_1b(), "deepseek", arg)
