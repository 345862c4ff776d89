r"""Janus-1.3B: model shape, chat template, sampling defaults and the device mesh.

  python -c "from janus_jax.configs.common import load_config; print(load_config('experiments/janus_1_3b.py'))"
  Override any field on the command line: --config=experiments/janus_1_3b.py:dtype=bfloat16 --config.sampling.cfg_weight=4
"""
import ml_collections

from janus_jax import sharding
from janus_jax.configs import common, models


def get_config(arg=None):
  arg = common.parse_arg(arg, dtype="float32", scan=True, remat="none")
  c = ml_collections.ConfigDict()
  c.model = models.janus_1_3b()
  for part in ("llm", "vision", "aligner", "vq", "gen_aligner", "gen_head"):
    c.model[part].dtype = arg.dtype
  for part in ("llm", "vision"):
    c.model[part].scan_layers = arg.scan
    c.model[part].remat_policy = arg.remat
  c.template = "deepseek_old"
  c.sampling = dict(cfg_weight=5.0, temperature=1.0, top_k=0, top_p=1.0, parallel_size=16,
                    understand_max_new_tokens=512, understand_temperature=0.1, understand_top_p=0.95)
  c.mesh = list(sharding.DEFAULT_MESH)
  c.sharding_rules = list(sharding.DEFAULT_RULES)
  return c
