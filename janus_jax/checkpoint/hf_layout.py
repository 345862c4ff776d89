"""Renames transformers `JanusForConditionalGeneration` tensors to the original DeepSeek `MultiModalityCausalLM` keys.

The DeepSeek naming is the canonical one in janus_jax (our param tree mirrors it), so a transformers-layout
checkpoint is first renamed here and then mapped like any DeepSeek checkpoint. This is the inverse of the
official transformers conversion mapping (parity_references.md), including re-fusing the split SigLIP q/k/v
projections into one `qkv` tensor and restoring the [1, N, D] position-embedding shape. Unread tensors
(`reader.LazyTensor`) stay unread: the fused / reshaped ones become LazyTensors too.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from janus_jax.checkpoint.reader import derive

_VISION_LAYER = re.compile(r"^model\.vision_model\.encoder\.layers\.(\d+)\.(.+)$")
_ALIGNER = re.compile(r"^model\.(aligner|generation_aligner)\.(fc1|hidden_layers\.(\d+))\.(weight|bias)$")

_VISION_LAYER_RENAMES = {
    "self_attn.projection_layer": "attn.proj",
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
}

_VQ_RENAMES = [
    (r"\.mid\.block_1\.", ".mid.0."),
    (r"\.mid\.attn_1\.", ".mid.1."),
    (r"\.mid\.block_2\.", ".mid.2."),
    (r"^encoder\.down\.", "encoder.conv_blocks."),
    (r"^decoder\.up\.", "decoder.conv_blocks."),
    (r"\.block\.(\d+)\.", r".res.\1."),
]


def is_hf_layout(keys) -> bool:
  """True when the keys look like a transformers Janus checkpoint (`model.language_model.*` etc.)."""
  return any(k.startswith(("model.language_model.", "model.vision_model.", "model.vqmodel.")) for k in keys)


def _rename_vq(rest: str) -> str:
  for pat, rep in _VQ_RENAMES:
    rest = re.sub(pat, rep, rest)
  return rest


def hf_to_deepseek(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{transformers key: array or LazyTensor} -> {DeepSeek key: same}. Keys it does not recognise are kept unchanged
  (so that a later strict mapping reports them as unexpected instead of silently dropping them)."""
  out: dict[str, np.ndarray] = {}
  qkv: dict[tuple[str, str], dict[str, np.ndarray]] = {}
  for key, val in state.items():
    if key == "lm_head.weight":
      out["language_model.lm_head.weight"] = val
    elif key.startswith("model.language_model."):
      out["language_model.model." + key[len("model.language_model."):]] = val
    elif key.startswith("model.vision_model.embeddings.patch_embedding."):
      out["vision_model.vision_tower.patch_embed.proj." + key.rsplit(".", 1)[1]] = val
    elif key == "model.vision_model.embeddings.position_embedding.weight":
      out["vision_model.vision_tower.pos_embed"] = derive(lambda a: a[None], (1,) + tuple(val.shape), val)
    elif key.startswith("model.vision_model.post_layernorm."):
      out["vision_model.vision_tower.norm." + key.rsplit(".", 1)[1]] = val
    elif m := _VISION_LAYER.match(key):
      n, rest = m.groups()
      q = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)
      if q:
        qkv.setdefault((n, q.group(2)), {})[q.group(1)] = val
        continue
      for a, b in _VISION_LAYER_RENAMES.items():
        if rest.startswith(a + "."):
          rest = b + rest[len(a):]
      out[f"vision_model.vision_tower.blocks.{n}.{rest}"] = val
    elif m := _ALIGNER.match(key):
      which, layer, hidden_idx, leaf = m.groups()
      idx = 0 if layer == "fc1" else 2 * (int(hidden_idx) + 1)
      prefix = "aligner" if which == "aligner" else "gen_aligner"
      out[f"{prefix}.layers.{idx}.{leaf}"] = val
    elif key.startswith("model.generation_head.proj_out."):
      out["gen_head.output_mlp_projector." + key.rsplit(".", 1)[1]] = val
    elif key.startswith("model.generation_head.vision_head."):
      out["gen_head.vision_head." + key.rsplit(".", 1)[1]] = val
    elif key == "model.generation_embeddings.weight":
      out["gen_embed.weight"] = val
    elif key.startswith("model.vqmodel."):
      out["gen_vision_model." + _rename_vq(key[len("model.vqmodel."):])] = val
    else:
      out[key] = val
  for (n, leaf), parts in qkv.items():
    if set(parts) != {"q", "k", "v"}:
      missing = sorted({"q", "k", "v"} - set(parts))
      raise ValueError(f"Vision layer {n}: {leaf} of {missing}_proj is missing, cannot fuse q/k/v into qkv.")
    q, k, v = (parts[c] for c in "qkv")
    shape = (q.shape[0] + k.shape[0] + v.shape[0],) + tuple(q.shape[1:])
    out[f"vision_model.vision_tower.blocks.{n}.attn.qkv.{leaf}"] = derive(
        lambda *a: np.concatenate(a, axis=0), shape, q, k, v)
  return out
