r"""Janus-1.3B: model shape, chat template (deepseek_old), sampling defaults and the device mesh.

  --config=experiments/janus_1_3b.py:dtype=bfloat16,scan=false --config.sampling.cfg_weight=4
"""
from janus_jax.configs import models


def get_config(arg=None):
  return models.inference_config(models.janus_1_3b(), "deepseek_old", arg)
