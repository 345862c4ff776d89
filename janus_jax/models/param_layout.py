"""Converting params between the scanned layout (one stacked `layers` module) and the unrolled one (`layers_N`).

Checkpoints and training use the scanned layout (fast compiles, one set of logical names). Token-by-token
decoding is faster unrolled: inside a scanned loop XLA copies each layer's weight slice before its matmul, which
doubles the weight traffic of a bandwidth-bound decode step (measured on CPU: 9.8 vs 7.2 ms per step for the
bench config). `for_decoding` gives the unrolled view used by the sampling pipeline.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax

from janus_jax.models.configs import JanusConfig


def unstack(tree: dict[str, Any], name: str, num: int) -> dict[str, Any]:
  """{name: stacked subtree} -> {name_0: slice 0, ..., name_{num-1}: slice num-1} (other keys unchanged)."""
  out = {k: v for k, v in tree.items() if k != name}
  for i in range(num):
    out[f"{name}_{i}"] = jax.tree.map(lambda x, i=i: x[i], tree[name])
  return out


def stack(tree: dict[str, Any], name: str, num: int) -> dict[str, Any]:
  """Inverse of `unstack`."""
  out = {k: v for k, v in tree.items() if not k.startswith(f"{name}_")}
  out[name] = jax.tree.map(lambda *xs: jax.numpy.stack(xs), *[tree[f"{name}_{i}"] for i in range(num)])
  return out


def for_decoding(params: dict[str, Any], cfg: JanusConfig) -> tuple[dict[str, Any], JanusConfig]:
  """Returns (params, cfg) with the LLM layers unrolled and remat off (LLM and vision; decoding never needs it,
  and a remat'd unrolled layer would get its layer index, which picks its KV-cache slice, as a tracer)."""
  cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, remat_policy="none"),
                            vision=dataclasses.replace(cfg.vision, remat_policy="none"))
  if not cfg.llm.scan_layers:
    return params, cfg
  llm = params["language_model"]["model"]
  new_llm = unstack(llm, "layers", cfg.llm.num_layers)
  params = {**params, "language_model": {**params["language_model"], "model": new_llm}}
  cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, scan_layers=False))
  return params, cfg


def for_training(params: dict[str, Any], cfg: JanusConfig) -> tuple[dict[str, Any], JanusConfig]:
  """Stacks `layers_N` back into one scanned `layers` module (the layout inverse of `for_decoding`; remat as cfg)."""
  if cfg.llm.scan_layers:
    return params, cfg
  llm = params["language_model"]["model"]
  params = {**params, "language_model": {**params["language_model"],
                                         "model": stack(llm, "layers", cfg.llm.num_layers)}}
  cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, scan_layers=True))
  return params, cfg

