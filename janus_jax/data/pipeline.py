"""The training input pipeline (grain Dataset API): sources -> row streams -> weighted mixture -> batches.

    it = build_train_iterator(adapters, builder, mixture={"und": 1, "text": 0, "t2i": 1}, batch_size=8, seed=0)
    batch = next(it)             # dict of numpy arrays, the format of janus_jax.train.batch
    state = it.get_state()       # small dict; `it.set_state(state)` resumes exactly (checkpointed with orbax)

Each stream shuffles its source per epoch (grain reshuffles every repetition), draws its per-record choices
(which question, which caption) from a seeded per-index RNG, and repeats forever; the mixture interleaves the
streams deterministically in proportion to the configured weights. Everything is a function of `seed` and the
record index, so two runs with the same config see the same data in the same order, and so does a resumed run.
Multi-host: each process takes every `process_count`-th element of the mixture and builds its local batch.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import grain
import numpy as np

from janus_jax.data.examples import RowBuilder
from janus_jax.data.sources import KINDS, Adapter


class _MakeRow(grain.transforms.RandomMap):
  """(record, rng) -> one training row of `kind` (picklable for grain worker processes)."""

  def __init__(self, adapter: Adapter, builder: RowBuilder, kind: str):
    self.make = adapter.makers[kind]
    self.builder = builder
    self.kind = kind

  def random_map(self, record, rng: np.random.Generator):
    args = self.make(record, rng)
    if self.kind == "und":
      row = self.builder.understanding(*args)
    elif self.kind == "t2i":
      row = self.builder.text_to_image(*args)
    else:
      row = self.builder.text(*args)
    row["kind"] = np.int32(KINDS.index(self.kind))
    return row


def stream(adapter: Adapter, builder: RowBuilder, kind: str, seed: int) -> grain.MapDataset:
  """An infinite, per-epoch-shuffled MapDataset of rows of one kind from one source."""
  if len(adapter.source) == 0:
    raise ValueError(f"The source for the {kind!r} stream is empty.")
  ds = grain.MapDataset.source(adapter.source).shuffle(seed=seed).repeat()
  return ds.random_map(_MakeRow(adapter, builder, kind), seed=seed + 1)


def mixture_weights(mixture: Mapping[str, float]) -> dict[str, float]:
  """Normalised positive weights per kind; unknown kinds or all-zero weights raise a ValueError."""
  unknown = sorted(set(mixture) - set(KINDS))
  if unknown:
    raise ValueError(f"Unknown mixture kind(s) {unknown}; valid kinds: {list(KINDS)} (und:text:t2i ratios).")
  weights = {k: float(v) for k, v in mixture.items() if float(v) > 0}
  if not weights:
    raise ValueError(f"The mixture {dict(mixture)} has no positive weight.")
  total = sum(weights.values())
  return {k: v / total for k, v in weights.items()}


def build_train_dataset(adapters: Sequence[Adapter], builder: RowBuilder, mixture: Mapping[str, float], *,
                        batch_size: int, seed: int = 0, process_index: int = 0,
                        process_count: int = 1) -> grain.IterDataset:
  """The batched, infinite training dataset of this process.

  Args:
    adapters: the sources; every stream kind draws from all adapters that support it (mixed equally).
    builder: formats rows (tokenizer, seq_len, image sizes).
    mixture: weight per kind ("und", "text", "t2i"); zero-weight kinds are skipped.
    batch_size: rows per batch on THIS process (global batch / process_count).
  """
  weights = mixture_weights(mixture)
  streams, stream_weights = [], []
  for k_index, (kind, weight) in enumerate(weights.items()):
    users = [a for a in adapters if a.supports(kind)]
    if not users:
      raise ValueError(f"The mixture asks for {kind!r} rows but no input source provides them.")
    for a_index, adapter in enumerate(users):
      streams.append(stream(adapter, builder, kind, seed=seed * 1000 + 10 * k_index + a_index))
      stream_weights.append(weight / len(users))
  mixed = streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, weights=stream_weights)
  if process_count > 1:
    mixed = mixed[process_index::process_count]
  return mixed.batch(batch_size, drop_remainder=True).to_iter_dataset()


def build_train_iterator(*args, **kwargs) -> grain.DatasetIterator:
  """`iter(build_train_dataset(...))`: a checkpointable iterator (get_state / set_state)."""
  return iter(build_train_dataset(*args, **kwargs))
