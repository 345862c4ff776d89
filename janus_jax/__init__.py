"""janus_jax: Janus / Janus-Pro (and JanusFlow) unified multimodal models in JAX + Flax Linen.

    import janus_jax
    pipe = janus_jax.load("ckpts/janus-pro-1b")      # a directory written by `janus-jax convert`
"""
from janus_jax.api import GenerationResult, JanusPipeline, load
from janus_jax.models.configs import JanusConfig

__all__ = ["GenerationResult", "JanusConfig", "JanusPipeline", "load"]
__version__ = "0.1.0"
