"""The training batch format (fixed; the data pipeline produces exactly this), its checker and a synthetic builder.

A batch is a dict of arrays; B is the GLOBAL batch, T the sequence length.

Required:
  input_ids        int32[B, T]   text token ids at text positions; at generation-image positions the VQ code ids
                                 (may be 0 there when `gen_pixels` is given: the step fills them).
  positions        int32[B, T]   RoPE positions.
  valid            bool[B, T]    non-padding tokens (padding keys are never attended).
  und_image_mask   bool[B, T]    positions that receive SigLIP understanding features: the k-th True of a row gets
                                 the row's k-th feature, images in order (`backbone.scatter_image_features`).
  und_pixels       float32[B, n, H, W, 3]  n >= 1 understanding images per row in [-1, 1] (zeros where a row has none).
  gen_image_mask   bool[B, T]    positions whose INPUT is a VQ code (embedded by `JanusModel.embed_image_tokens`).
  targets          int32[B, T]   next-token targets (text id or VQ code).
  text_loss_mask   bool[B, T]    positions whose target is a supervised TEXT token (logits from `lm_head`).
  image_loss_mask  bool[B, T]    positions whose target is an image token (logits from `gen_head`): the
                                 `<begin_of_image>` position predicts code 0, code k's position predicts code k+1.
Optional:
  gen_pixels       float32[B, h, w, 3] with
  has_gen_image    bool[B]       when present the step encodes the images with the frozen VQ (stop_gradient) and
                                 writes code k into `input_ids` at the k-th True of `gen_image_mask` and into
                                 `targets` at the k-th True of `image_loss_mask` (rows with has_gen_image False are
                                 left alone) — so the pipeline needs no model. h = w = gen_grid * vq.downsample.
  cfg_drop_mask    bool[B, T]    prompt text positions of text-to-image rows (BOS and `<begin_of_image>` excluded);
                                 with probability `train.cfg_dropout` per row the step replaces those ids by
                                 `train.pad_id` (classifier-free guidance training as Janus). The replaced positions
                                 stay valid (attended), as in the official unconditional rows.
  segment_ids      int32[B, T]   packed sequences: a token attends only to earlier tokens of the same segment.
                                 Without it every row is one causal sequence (packed documents see each other).
  kind             int32[B]      row kind index (`janus_jax.data.sources.KINDS`: 0 und, 1 t2i, 2 text) as the data
                                 pipeline emits it; informational, the step ignores it.

Loss: total = (sum text CE + sum image CE) / (number of supervised tokens), no task weights (Janus paper).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

# name -> (dtype kind, rank, description); kinds: 'i' integer, 'b' bool, 'f' float.
REQUIRED = {
    "input_ids": ("i", 2, "int32[B, T]"),
    "positions": ("i", 2, "int32[B, T]"),
    "valid": ("b", 2, "bool[B, T]"),
    "und_image_mask": ("b", 2, "bool[B, T]"),
    "und_pixels": ("f", 5, "float32[B, n, H, W, 3]"),
    "gen_image_mask": ("b", 2, "bool[B, T]"),
    "targets": ("i", 2, "int32[B, T]"),
    "text_loss_mask": ("b", 2, "bool[B, T]"),
    "image_loss_mask": ("b", 2, "bool[B, T]"),
}
OPTIONAL = {
    "gen_pixels": ("f", 4, "float32[B, h, w, 3]"),
    "has_gen_image": ("b", 1, "bool[B]"),
    "cfg_drop_mask": ("b", 2, "bool[B, T]"),
    "segment_ids": ("i", 2, "int32[B, T]"),
    "kind": ("i", 1, "int32[B]"),
}
ROW_KINDS = ("und", "t2i", "text")

# Special ids of the synthetic vocabulary (the order of tests/tiny_assets' tiny tokenizer).
PAD, BOS, EOS, IMAGE_PLACEHOLDER, END_OF_IMAGE, BEGIN_OF_IMAGE = 0, 1, 2, 5, 6, 7
FIRST_TEXT_ID = 8


def _kind(dtype) -> str:
  dtype = np.dtype(dtype)
  if dtype == np.bool_:
    return "b"
  return "i" if np.issubdtype(dtype, np.integer) else ("f" if np.issubdtype(dtype, np.floating) else "?")


def check_batch(batch: Mapping[str, Any], B: int | None = None, T: int | None = None, cfg=None) -> tuple[int, int]:
  """Validates keys, ranks, dtypes and shapes of a batch (numpy, jax or ShapeDtypeStruct leaves).

  Args:
    batch: the dict described in the module docstring.
    B, T: expected global batch and length (None: taken from `input_ids`).
    cfg: optional `JanusConfig`; then image sizes are checked too.
  Returns: (B, T).
  Raises: ValueError naming the offending key, what was expected and what was found.
  """
  missing = sorted(set(REQUIRED) - set(batch))
  if missing:
    raise ValueError(f"Batch is missing key(s) {missing}; a training batch needs {sorted(REQUIRED)} "
                     f"(optional: {sorted(OPTIONAL)}). See janus_jax/train/batch.py.")
  unknown = sorted(set(batch) - set(REQUIRED) - set(OPTIONAL))
  if unknown:
    raise ValueError(f"Batch has unknown key(s) {unknown}; valid keys: {sorted(REQUIRED) + sorted(OPTIONAL)}.")
  if ("gen_pixels" in batch) != ("has_gen_image" in batch):
    raise ValueError("Batch keys `gen_pixels` and `has_gen_image` come together: give both or neither.")
  B = batch["input_ids"].shape[0] if B is None else B
  T = batch["input_ids"].shape[1] if T is None and len(batch["input_ids"].shape) > 1 else T
  specs = {**REQUIRED, **OPTIONAL}
  for name, x in batch.items():
    kind, rank, desc = specs[name]
    shape = tuple(x.shape)
    if len(shape) != rank:
      raise ValueError(f"Batch[{name!r}] must be {desc} (rank {rank}); got shape {shape}.")
    if _kind(x.dtype) != kind:
      raise ValueError(f"Batch[{name!r}] must be {desc}; got dtype {np.dtype(x.dtype).name}.")
    if shape[0] != B:
      raise ValueError(f"Batch[{name!r}] has leading (batch) size {shape[0]}, expected B={B} like `input_ids`.")
    if rank == 2 and shape[1] != T:
      raise ValueError(f"Batch[{name!r}] has length {shape[1]}, expected T={T} like `input_ids`.")
  und = batch["und_pixels"].shape
  if und[1] < 1 or und[4] != 3:
    raise ValueError(f"Batch['und_pixels'] must be float32[B, n>=1, H, W, 3]; got shape {tuple(und)}.")
  if "gen_pixels" in batch and batch["gen_pixels"].shape[3] != 3:
    raise ValueError(f"Batch['gen_pixels'] must be float32[B, h, w, 3]; got shape {tuple(batch['gen_pixels'].shape)}.")
  if cfg is not None:
    size = cfg.vision.image_size
    if und[2:4] != (size, size):
      raise ValueError(f"Batch['und_pixels'] images are {und[2]}x{und[3]}; the understanding encoder takes "
                       f"{size}x{size} (model.vision.image_size).")
    if "gen_pixels" in batch:
      g = cfg.generated_image_size
      if tuple(batch["gen_pixels"].shape[1:3]) != (g, g):
        raise ValueError(f"Batch['gen_pixels'] images are {batch['gen_pixels'].shape[1]}x"
                         f"{batch['gen_pixels'].shape[2]}; the VQ makes {cfg.num_image_tokens} codes from {g}x{g} "
                         "images (gen_grid * vq.downsample).")
  return B, T


def _row_und(rng, cfg, T, n_prompt, n_answer):
  """BOS q.. <boi> <img>*N <eoi> q.. a.. EOS pad..; loss on the answer (and EOS)."""
  n = cfg.num_image_tokens
  vocab = cfg.llm.vocab_size
  q1 = rng.integers(FIRST_TEXT_ID, vocab, n_prompt)
  q2 = rng.integers(FIRST_TEXT_ID, vocab, n_prompt)
  ans = rng.integers(FIRST_TEXT_ID, vocab, n_answer)
  ids = np.concatenate([[BOS], q1, [BEGIN_OF_IMAGE], np.full(n, IMAGE_PLACEHOLDER), [END_OF_IMAGE], q2, ans, [EOS]])
  img = np.zeros(len(ids), bool)
  img[2 + n_prompt:2 + n_prompt + n] = True
  if cfg.mode.und_boi_slot:  # JanusFlow: the `<begin_of_image>` slot takes the learned BOI embedding (577 slots).
    img[1 + n_prompt] = True
  supervised = np.zeros(len(ids), bool)  # position t supervised iff its target ids[t + 1] is answer/EOS.
  start = len(ids) - n_answer - 1
  supervised[start - 1:len(ids) - 1] = True
  return ids, img, np.zeros(len(ids), bool), supervised, np.zeros(len(ids), bool), np.zeros(len(ids), bool)


def _row_t2i(rng, cfg, T, n_prompt, zero_codes):
  """BOS prompt.. <boi> code_0 .. code_{N-1} pad..; image loss from <boi> to code_{N-2}; prompt droppable."""
  n = cfg.num_image_tokens
  prompt = rng.integers(FIRST_TEXT_ID, cfg.llm.vocab_size, n_prompt)
  codes = np.zeros(n, np.int64) if zero_codes else rng.integers(0, cfg.image_token_size, n)
  ids = np.concatenate([[BOS], prompt, [BEGIN_OF_IMAGE], codes])
  gen = np.zeros(len(ids), bool)
  gen[2 + n_prompt:] = True
  img_loss = np.zeros(len(ids), bool)
  img_loss[1 + n_prompt:len(ids) - 1] = True
  drop = np.zeros(len(ids), bool)
  drop[1:1 + n_prompt] = True
  return ids, np.zeros(len(ids), bool), gen, np.zeros(len(ids), bool), img_loss, drop


def _row_text(rng, cfg, T, n_text):
  ids = np.concatenate([[BOS], rng.integers(FIRST_TEXT_ID, cfg.llm.vocab_size, n_text), [EOS]])
  sup = np.zeros(len(ids), bool)
  sup[:-1] = True
  z = np.zeros(len(ids), bool)
  return ids, z, z, sup, z, z


def synthetic_batch(cfg, B: int, T: int, rng: int | np.random.Generator = 0,
                    kinds: Sequence[str] = ROW_KINDS, gen_pixels: bool = False,
                    segments: bool = False) -> dict[str, np.ndarray]:
  """A valid random batch (numpy) whose rows cycle through `kinds` (tests, benchmarks).

  Row layouts (left-aligned, right-padded with pad id 0; special ids as the tiny test tokenizer):
    und:  BOS q <boi> <img>*N <eoi> q answer EOS   — one image, text loss on the answer and EOS.
    t2i:  BOS prompt <boi> code*N                  — image loss from <boi> to code N-2; `cfg_drop_mask` = prompt.
    text: BOS text EOS                             — text loss everywhere.
  Args:
    cfg: JanusConfig (vocab, image-token count, image sizes).
    B, T: batch and length; T must hold a row (N + 8 tokens for `und`, N + 6 for `t2i`).
    rng: seed or numpy Generator.
    kinds: row kinds, cycled over the B rows.
    gen_pixels: also emit `gen_pixels` / `has_gen_image` (random images) with code ids left 0 (the step fills them).
    segments: emit `segment_ids` (all 0 on real tokens, 1 on padding).
  """
  rng = np.random.default_rng(rng)
  bad = sorted(set(kinds) - set(ROW_KINDS))
  if bad or not kinds:
    raise ValueError(f"Unknown row kind(s) {bad or kinds}; valid kinds: {list(ROW_KINDS)}.")
  n = cfg.num_image_tokens
  budget = T - n
  rows = []
  for b in range(B):
    kind = kinds[b % len(kinds)]
    if kind == "und":
      if budget < 8:
        raise ValueError(f"T={T} is too short for an understanding row with {n} image tokens (need >= {n + 8}).")
      n_prompt = int(rng.integers(1, max(2, (budget - 6) // 3)))
      n_answer = int(rng.integers(1, budget - 5 - 2 * n_prompt + 1))
      rows.append(("und", _row_und(rng, cfg, T, n_prompt, n_answer)))
    elif kind == "t2i":
      if budget < 6:
        raise ValueError(f"T={T} is too short for a text-to-image row with {n} image tokens (need >= {n + 6}).")
      n_prompt = int(rng.integers(4, budget - 1))
      rows.append(("t2i", _row_t2i(rng, cfg, T, n_prompt, zero_codes=gen_pixels)))
    else:
      rows.append(("text", _row_text(rng, cfg, T, int(rng.integers(max(1, T // 2), T - 1)))))
  out = {k: np.zeros((B, T), bool) for k in ("valid", "und_image_mask", "gen_image_mask", "text_loss_mask",
                                             "image_loss_mask", "cfg_drop_mask")}
  out["input_ids"] = np.full((B, T), PAD, np.int32)
  out["targets"] = np.zeros((B, T), np.int32)
  for b, (_, (ids, und, gen, txt, img, drop)) in enumerate(rows):
    L = len(ids)
    out["input_ids"][b, :L] = ids
    out["targets"][b, :L - 1] = ids[1:]
    out["valid"][b, :L] = True
    for key, m in (("und_image_mask", und), ("gen_image_mask", gen), ("text_loss_mask", txt),
                   ("image_loss_mask", img), ("cfg_drop_mask", drop)):
      out[key][b, :L] = m
  out["positions"] = np.maximum(np.cumsum(out["valid"], axis=1) - 1, 0).astype(np.int32)
  size = cfg.vision.image_size
  out["und_pixels"] = np.zeros((B, 1, size, size, 3), np.float32)
  for b, (kind, _) in enumerate(rows):
    if kind == "und":
      out["und_pixels"][b, 0] = rng.uniform(-1, 1, (size, size, 3))
  if gen_pixels:
    g = cfg.generated_image_size
    has = np.array([kind == "t2i" for kind, _ in rows])
    out["gen_pixels"] = (rng.uniform(-1, 1, (B, g, g, 3)) * has[:, None, None, None]).astype(np.float32)
    out["has_gen_image"] = has
  if segments:
    out["segment_ids"] = (~out["valid"]).astype(np.int32)
  return out


__all__ = ["REQUIRED", "OPTIONAL", "ROW_KINDS", "check_batch", "synthetic_batch"]
