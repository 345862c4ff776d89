"""The `ar_vq` objective: masked next-token cross-entropy, text tokens from `lm_head`, image tokens from `gen_head`.

Janus uses ONE loss over all supervised tokens, no task weights:
    loss = (sum of text CE + sum of image CE) / (number of supervised text + image tokens)
The functions here return SUMS and counts (`LossSums`) so that gradient accumulation can divide by the token count
of the whole global batch (then accumulated == full batch); `metrics_from_sums` turns sums into reported metrics.

Memory: the heads are applied inside `head_xent`, so the caller passes hidden states, not logits. With
`max_tokens=None` the head runs on all B*T positions (fine for tiny configs; float32[B, T, 102400] is 1.6 GB per
4096-token row for the real vocab). With `max_tokens=K` each row's supervised positions are first gathered into
K slots (stable order) and the head runs on float[B, K, D] only; positions beyond K are counted in `dropped`.

Batch side (`janus_jax.modes.ar_vq` calls these through `janus_jax.train.step`): `encode_gen_pixels` fills the
frozen VQ's codes of `gen_pixels` into the token ids and targets; `loss_sums` runs the teacher-forced forward.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from janus_jax.models.llama import causal_mask


class LossSums(NamedTuple):
  """Additive loss statistics (float32 scalars); sum over microbatches to accumulate."""
  text_loss: jax.Array
  image_loss: jax.Array
  text_tokens: jax.Array
  image_tokens: jax.Array
  text_correct: jax.Array
  image_correct: jax.Array
  dropped: jax.Array  # supervised positions that did not fit `max_tokens` (not in the loss).

  @classmethod
  def zeros(cls) -> "LossSums":
    return cls(*([jnp.zeros((), jnp.float32)] * len(cls._fields)))


def token_xent(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Masked cross-entropy in float32.

  Args:
    logits: float[..., V]; targets: int[...] (out-of-range ids at masked-out positions are fine);
    mask: bool[...], which positions count.
  Returns: (sum of -log p(target), number of correct argmax predictions, number of positions), float32 scalars.
  """
  logits = logits.astype(jnp.float32)
  targets = jnp.clip(targets, 0, logits.shape[-1] - 1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = jax.nn.logsumexp(logits, axis=-1) - target_logit
  correct = jnp.argmax(logits, axis=-1) == targets
  mask = mask.astype(bool)
  return (jnp.sum(jnp.where(mask, nll, 0.0)), jnp.sum(mask & correct).astype(jnp.float32),
          jnp.sum(mask).astype(jnp.float32))


def gather_positions(mask: jax.Array, max_tokens: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Indices of each row's first `max_tokens` True positions.

  Args: mask bool[B, T]; max_tokens K.
  Returns: (idx int32[B, K], kept bool[B, K] (False in unused slots), dropped float32 scalar count).
  """
  k = min(max_tokens, mask.shape[1])
  order = jnp.argsort(~mask, axis=1, stable=True)[:, :k].astype(jnp.int32)  # True positions first, in order.
  kept = jnp.take_along_axis(mask, order, axis=1)
  dropped = jnp.sum(jnp.maximum(mask.sum(axis=1) - k, 0)).astype(jnp.float32)
  return order, kept, dropped


def head_xent(hidden: jax.Array, targets: jax.Array, mask: jax.Array, head: Callable[[jax.Array], jax.Array],
              max_tokens: int | None = None):
  """Cross-entropy of `head(hidden)` against `targets` at `mask`.

  Args:
    hidden: float[B, T, D] final hidden states; targets int[B, T]; mask bool[B, T].
    head: float[..., D] -> float[..., V] logits.
    max_tokens: None runs the head on all positions; K gathers each row's first K masked positions first.
  Returns: (loss sum, correct, count, dropped), float32 scalars.
  """
  if max_tokens is None:
    return (*token_xent(head(hidden), targets, mask), jnp.zeros((), jnp.float32))
  idx, kept, dropped = gather_positions(mask, max_tokens)
  h = jnp.take_along_axis(hidden, idx[..., None], axis=1)
  t = jnp.take_along_axis(targets, idx, axis=1)
  return (*token_xent(head(h), t, kept), dropped)


def janus_loss_sums(hidden: jax.Array, targets: jax.Array, text_mask: jax.Array, image_mask: jax.Array,
                    text_head: Callable, image_head: Callable, max_text_tokens: int | None = None,
                    max_image_tokens: int | None = None) -> LossSums:
  """Text CE (lm_head) at `text_mask` and image CE (gen_head) at `image_mask`, as additive sums."""
  t_loss, t_ok, t_n, t_drop = head_xent(hidden, targets, text_mask, text_head, max_text_tokens)
  i_loss, i_ok, i_n, i_drop = head_xent(hidden, targets, image_mask, image_head, max_image_tokens)
  return LossSums(t_loss, i_loss, t_n, i_n, t_ok, i_ok, t_drop + i_drop)


def total_loss(sums: LossSums, normalizer: jax.Array | None = None) -> jax.Array:
  """(text + image CE sums) / normalizer; the normalizer defaults to the supervised-token count (at least 1)."""
  if normalizer is None:
    normalizer = sums.text_tokens + sums.image_tokens
  return (sums.text_loss + sums.image_loss) / jnp.maximum(normalizer, 1.0)


def metrics_from_sums(sums: LossSums) -> dict[str, jax.Array]:
  """loss, loss_text, loss_image, accuracies and token counts from (possibly accumulated) sums."""
  safe = lambda x: jnp.maximum(x, 1.0)
  return {
      "loss": total_loss(sums),
      "loss_text": sums.text_loss / safe(sums.text_tokens),
      "loss_image": sums.image_loss / safe(sums.image_tokens),
      "accuracy_text": sums.text_correct / safe(sums.text_tokens),
      "accuracy_image": sums.image_correct / safe(sums.image_tokens),
      "tokens_text": sums.text_tokens,
      "tokens_image": sums.image_tokens,
      "tokens_dropped": sums.dropped,
  }


def fill_in_order(values: jax.Array, mask: jax.Array, codes: jax.Array, rows: jax.Array | None = None) -> jax.Array:
  """values int[B, T] with the k-th True of mask[b] set to codes[b, k] (rows where `rows` is False untouched)."""
  idx = jnp.clip(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0, codes.shape[1] - 1)
  gathered = jnp.take_along_axis(codes.astype(values.dtype), idx, axis=1)
  where = mask if rows is None else mask & rows[:, None]
  return jnp.where(where, gathered, values)


def fill_gen_codes(batch: dict, codes: jax.Array) -> dict:
  """Writes VQ codes int[B, N] into `input_ids` at `gen_image_mask` and `targets` at `image_loss_mask`."""
  rows = batch.get("has_gen_image")
  return dict(batch, input_ids=fill_in_order(batch["input_ids"], batch["gen_image_mask"], codes, rows),
              targets=fill_in_order(batch["targets"], batch["image_loss_mask"], codes, rows))


def encode_gen_pixels(model, params, batch: dict) -> dict:
  """If the batch has `gen_pixels`: frozen-VQ codes (stop_gradient) filled in; `gen_pixels` is dropped."""
  if "gen_pixels" not in batch:
    return batch
  codes = model.apply({"params": jax.lax.stop_gradient(params)}, batch["gen_pixels"],
                      method=type(model).encode_image_tokens)
  out = fill_gen_codes(batch, jax.lax.stop_gradient(codes))
  out.pop("gen_pixels")
  out.pop("has_gen_image", None)
  return out


def forward_hidden(module, batch: dict) -> jax.Array:
  """Teacher-forced multimodal forward -> final hidden states float[B, T, D] (call through `model.apply`)."""
  ids = batch["input_ids"]
  embeds = module.embed_multimodal(ids, batch["und_image_mask"], batch["und_pixels"])
  codes = jnp.clip(ids, 0, module.cfg.image_token_size - 1)
  gen = module.embed_image_tokens(codes)
  embeds = jnp.where(batch["gen_image_mask"][..., None], gen.astype(embeds.dtype), embeds)
  t = ids.shape[1]
  mask = causal_mask(batch["valid"], t)
  if "segment_ids" in batch:
    seg = batch["segment_ids"]
    mask = mask & (seg[:, :, None] == seg[:, None, :])
  hidden, _ = module.llm(embeds, batch["positions"], mask)
  return hidden


def loss_sums(module, batch: dict, max_text_tokens=None, max_image_tokens=None) -> LossSums:
  """Forward + text/image CE sums (call through `model.apply(..., method=loss_sums)`)."""
  hidden = forward_hidden(module, batch)
  return janus_loss_sums(hidden, batch["targets"], batch["text_loss_mask"], batch["image_loss_mask"],
                         module.text_logits, module.image_logits, max_text_tokens, max_image_tokens)


__all__ = ["LossSums", "token_xent", "gather_positions", "head_xent", "janus_loss_sums", "total_loss",
           "metrics_from_sums", "fill_in_order", "fill_gen_codes", "encode_gen_pixels", "forward_hidden", "loss_sums"]
