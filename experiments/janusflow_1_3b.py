r"""JanusFlow-1.3B: model shape (rectified-flow generation, generation_mode "flow"), chat template (deepseek_old),
sampling defaults (CFG 2, 30 Euler steps) and the device mesh.

  --config=experiments/janusflow_1_3b.py:dtype=bfloat16 --config.sampling.num_steps=50
"""
from janus_jax.configs import models


def get_config(arg=None):
  return models.inference_config(models.janusflow_1_3b(), "deepseek_old", arg)
