"""The generation modes, selected by `model.generation_mode` (one interface, `base.GenerationMode`; a registry).

  ar_vq  Janus / Janus-Pro: VQ-16 image tokens predicted by the LLM's image head, sampled autoregressively with CFG
  flow   JanusFlow: rectified flow in KL-VAE latents, a ShallowUViT encoder / decoder around the LLM, REPA
  ar_continuous  continuous KL-VAE latent tokens predicted autoregressively, each sampled by a small flow head

Shared code asks the mode (`get(cfg.generation_mode)`, or `JanusConfig.mode`) for what differs: model class and
params, image tokenizer, training objective, sampler and its defaults, checkpoint layout, stage trainable sets.
"""
from __future__ import annotations

from janus_jax.modes.base import GenerationMode, Objective
from janus_jax.modes.ar_vq import ArVq
from janus_jax.modes.flow import Flow
from janus_jax.modes.ar_continuous import ArContinuous

MODES: dict[str, GenerationMode] = {m.name: m for m in (ArVq(), Flow(), ArContinuous())}
NAMES = tuple(MODES)


def get(name: str) -> GenerationMode:
  """The mode registered as `name`; ValueError naming `model.generation_mode` and the valid names otherwise."""
  if name not in MODES:
    raise ValueError(f"Unknown model.generation_mode {name!r}; valid: {list(NAMES)} (ar_vq: Janus / Janus-Pro VQ "
                     "tokens; flow: JanusFlow rectified flow; ar_continuous: continuous latent tokens, flow head). Fix: --config.model.generation_mode=ar_vq.")
  return MODES[name]


__all__ = ["GenerationMode", "Objective", "MODES", "NAMES", "get"]
