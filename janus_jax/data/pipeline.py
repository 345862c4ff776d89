"""The training input pipeline (grain Dataset API): sources -> row streams -> weighted mixture -> batches.

    it = build_train_iterator(adapters, builder, mixture={"und": 1, "text": 0, "t2i": 1}, batch_size=8, seed=0)
    batch = next(it)             # dict of numpy arrays, the format of janus_jax.train.batch
    state = it.get_state()       # small dict; `it.set_state(state)` resumes exactly (checkpointed with orbax)

Each stream shuffles its source per epoch (grain reshuffles every repetition), draws its per-record choices
(which question, which caption) from a seeded per-index RNG, and repeats forever; the mixture interleaves the
streams deterministically in proportion to the configured weights. Everything is a function of `seed` and the
record index, so two runs with the same config see the same data in the same order, and so does a resumed run.
Multi-host: global batch b is mixture elements [b*B, (b+1)*B); process i builds rows [i*B/P, (i+1)*B/P) of it
(`ProcessShare`), so the shares are disjoint, together they are what one process reads, and the global batch is
the same rows in the same order for any process count (packing packs each process's share on its own).

Packing (config `input.packing = dict(enabled=True, max_und_images=k)`): rows are cut to their tokens and packed first-fit into
`seq_len`-token rows (grain `FirstFitPackIterDataset`, one bin per batch row) with `segment_ids` (a token attends
only to its own segment), each segment keeping its own RoPE positions; a packed row holds at most `k`
understanding images and one generation image. The packer's state is part of the iterator state, so resume stays
exact.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import grain
import numpy as np
from absl import flags

from janus_jax.data.examples import RowBuilder, RowSpec, empty_row
from janus_jax.data.sources import KINDS, Adapter


class _MakeRow(grain.transforms.RandomMap):
  """(record, rng) -> one training row of `kind` (picklable for grain worker processes)."""

  def __init__(self, adapter: Adapter, builder: RowBuilder, kind: str):
    self.make = adapter.makers[kind]
    self.builder = builder
    self.kind = kind

  def random_map(self, record, rng: np.random.Generator):
    args = self.make(record, rng)
    if self.kind == "und":  # (image, question, answer) or (image, [(question, answer), ...])
      image, *qa = args
      row = self.builder.conversation(image, qa[0] if len(qa) == 1 else [tuple(qa)])
    elif self.kind == "t2i":
      row = self.builder.text_to_image(*args)
    elif isinstance(args[0], list):  # a text-only conversation [(question, answer), ...]
      row = self.builder.conversation(None, args[0])
    else:
      row = self.builder.text(*args)
    row["kind"] = np.int32(KINDS.index(self.kind))
    return row


def stream(adapter: Adapter, builder: RowBuilder, kind: str, seed: int) -> grain.MapDataset:
  """An infinite, per-epoch-shuffled MapDataset of rows of one kind from one source."""
  records = adapter.records_for(kind)
  if len(records) == 0:
    raise ValueError(f"The source for the {kind!r} stream is empty.")
  ds = grain.MapDataset.source(records).shuffle(seed=seed).repeat()
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


# Per-token row features: cut to the row's length before packing, concatenated by the packer.
TOKEN_KEYS = ("input_ids", "positions", "valid", "und_image_mask", "gen_image_mask", "targets", "text_loss_mask",
              "image_loss_mask", "cfg_drop_mask")


class _CutRow(grain.transforms.Map):
  """A padded row -> its `n` tokens (n = last valid position + 1) and its images as length-0/1 stacks."""

  def map(self, row):
    n = int(np.flatnonzero(row["valid"])[-1]) + 1 if row["valid"].any() else 0
    out = {k: row[k][:n] for k in TOKEN_KEYS}
    out["und_pixels"] = row["und_pixels"] if row["und_image_mask"].any() else row["und_pixels"][:0]
    out["gen_pixels"] = row["gen_pixels"][None][:1 if bool(row["has_gen_image"]) else 0]
    return out


class _FinishPack(grain.transforms.Map):
  """The packer's output -> the batch format: `segment_ids` (0 on padding), one generation image per row."""

  def map(self, packed):
    out = {k: packed[k] for k in TOKEN_KEYS + ("und_pixels",)}
    out["segment_ids"] = packed["valid_segment_ids"].astype(np.int32)
    out["gen_pixels"] = packed["gen_pixels"][0]
    out["has_gen_image"] = np.asarray(packed["gen_pixels_segment_ids"][0] > 0)
    return out


def pack_rows(rows: grain.IterDataset, builder: RowBuilder, *, max_und_images: int, num_bins: int,
              seed: int) -> grain.IterDataset:
  """Padded rows -> packed rows of the same `seq_len` (see the module docstring)."""
  if max_und_images < 1:
    raise ValueError(f"input.packing.max_und_images={max_und_images} must be >= 1.")
  s = builder.spec
  lengths = {k: s.seq_len for k in TOKEN_KEYS}
  lengths.update(und_pixels=max_und_images, gen_pixels=1)
  packed = grain.experimental.FirstFitPackIterDataset(rows.map(_CutRow()), length_struct=lengths,
                                                      num_packing_bins=num_bins, seed=seed, shuffle_bins=True)
  return packed.map(_FinishPack())


class ProcessShare(grain.MapDataset):
  """Process `index` of `count`'s rows of every global batch: element k is `parent[g*B + index*local + r]` with
  (g, r) = divmod(k, local) and B = local * count; `.batch(local)` then yields this process's slice of global
  batch g, in order."""

  def __init__(self, parent: grain.MapDataset, *, local_batch: int, index: int, count: int):
    super().__init__(parent)
    if not 0 <= index < count:
      raise ValueError(f"process index {index} is not in 0..{count - 1}.")
    self._local, self._index, self._count = int(local_batch), int(index), int(count)

  def __len__(self) -> int:
    return len(self._parent) // self._count

  def __getitem__(self, k):
    if isinstance(k, slice):
      return self.slice(k)
    g, r = divmod(int(k), self._local)
    return self._parent[(g * self._count + self._index) * self._local + r]

  def __str__(self) -> str:
    return f"ProcessShare(index={self._index}, count={self._count}, local_batch={self._local})"


def _drop_gen_images(batch: dict) -> dict:
  """A batch without generation-image inputs (the train step then skips the VQ encoder)."""
  return {k: v for k, v in batch.items() if k not in ("gen_pixels", "has_gen_image")}


def batch_spec(spec: RowSpec, mixture: Mapping[str, float], *, batch_size: int,
               packing: Mapping | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{key: (shape, dtype)} of the batches `build_train_dataset` yields for these settings, without reading data
  (ahead-of-time compilation, `janus_jax.plan`): rows [B, seq_len]; packed rows also `segment_ids` and up to
  `max_und_images` understanding images per row; no generation images without "t2i" in the mixture."""
  weights = mixture_weights(mixture)
  row = empty_row(spec)
  packing = dict(packing or {})
  if packing and packing.get("enabled", True):
    row["und_pixels"] = np.zeros((int(packing.get("max_und_images", 2)),) + row["und_pixels"].shape[1:], np.float32)
    row["segment_ids"] = np.zeros(spec.seq_len, np.int32)
  if "t2i" not in weights:
    row = _drop_gen_images(row)
  return {k: ((int(batch_size),) + v.shape, v.dtype) for k, v in row.items()}


def build_train_dataset(adapters: Sequence[Adapter], builder: RowBuilder, mixture: Mapping[str, float], *,
                        batch_size: int, seed: int = 0, process_index: int = 0, process_count: int = 1,
                        packing: Mapping | None = None, workers: int = 0, prefetch: int = 0,
                        read_threads: int = 0) -> grain.IterDataset:
  """The batched, infinite training dataset of this process.

  Args:
    adapters: the sources; every stream kind draws from all adapters that support it (mixed equally).
    builder: formats rows (tokenizer, seq_len, image sizes).
    mixture: weight per kind ("und", "text", "t2i"); zero-weight kinds are skipped.
    batch_size: rows per batch on THIS process (global batch / process_count).
    packing: None / {} / dict(enabled=False, ...): one row per sequence, padded; dict(max_und_images=k) (and
      `enabled=True`): pack rows into sequences, at most k understanding images per sequence (default 2).

    workers: grain worker processes making the rows (decode, resize, tokenize); each makes every `workers`-th row
      and the rows are merged back in order, so the batches are the same for any number of workers (0: rows are
      made on the calling thread). Resuming needs the same `workers` as the run that saved.
    prefetch: batches a background thread assembles ahead of the training loop (0: none).
    read_threads: threads of each process (the main one, or each worker) reading and making rows ahead
      (`grain.ReadOptions.num_threads`; 0: in order on the iterating thread, grain's advice for local or in-memory
      data: its default of 16 threads costs the demo's Shapes batches 2.3x the CPU time). Same batches for any value.

  Batches of a mixture without "t2i" have no `gen_pixels` / `has_gen_image` (nothing for the VQ to encode).
  """
  if workers < 0 or prefetch < 0 or read_threads < 0:
    raise ValueError(f"input.workers={workers}, input.prefetch={prefetch} and input.read_threads={read_threads} "
                     "must be >= 0.")
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
    mixed = ProcessShare(mixed, local_batch=batch_size, index=process_index, count=process_count)
  packing = dict(packing or {})
  unknown = sorted(set(packing) - {"enabled", "max_und_images"})
  if unknown:
    raise ValueError(f"Unknown input.packing key(s) {unknown}; valid: ['enabled', 'max_und_images'].")
  read = (grain.ReadOptions(num_threads=read_threads) if read_threads else
          grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  rows = mixed.to_iter_dataset(read)
  if workers:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app (tests, notebooks)
      flags.FLAGS.mark_as_parsed()   # they keep their defaults
    rows = rows.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(workers), per_worker_buffer_size=batch_size))
  if not packing.get("enabled", True) or not packing:
    batched = (rows.batch(batch_size, drop_remainder=True) if workers else
               mixed.batch(batch_size, drop_remainder=True).to_iter_dataset(read))
  else:
    packed = pack_rows(rows, builder, max_und_images=int(packing.get("max_und_images", 2)), num_bins=batch_size,
                       seed=seed + 7)
    batched = packed.batch(batch_size, drop_remainder=True)
  # A mixture without text-to-image rows has no generation images: leave them out, and the step skips the VQ.
  batched = batched if "t2i" in weights else batched.map(_drop_gen_images)
  if prefetch:
    batched = grain.experimental.ThreadPrefetchIterDataset(batched, prefetch_buffer_size=int(prefetch))
  return batched


def build_train_iterator(*args, **kwargs) -> grain.DatasetIterator:
  """`iter(build_train_dataset(...))`: a checkpointable iterator (get_state / set_state)."""
  return iter(build_train_dataset(*args, **kwargs))
