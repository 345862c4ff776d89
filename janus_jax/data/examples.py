"""Raw image / text records -> fixed-length training rows in the batch format of `janus_jax.train.batch`.

Three kinds of rows, each a dict of numpy arrays with identical keys and shapes (so any mixture batches):
  understanding  `<sys>\\n\\n<|User|>: <image>\\n{question}\\n\\n<|Assistant|>: {answer}<eos>`; loss on the answer and EOS.
                 Multi-turn (`conversation`): further `<|User|>: {question}\\n\\n<|Assistant|>: {answer}<eos>` turns
                 about the same image, loss on every answer and its EOS; with no image, a text-only conversation.
  text_to_image  `<|User|>: {caption}\\n\\n<|Assistant|>:<begin_of_image>` + N image-code positions; loss on the N
                 codes (predicted from `<begin_of_image>` and codes 0..N-2). The codes themselves are computed in the
                 train step from `gen_pixels` with the frozen VQ; `cfg_drop_mask` marks the prompt for CFG dropout.
  text           `{text}<eos>`; loss on every next token.
Rows are right-padded to `seq_len`; a row that does not fit raises a ValueError saying by how much.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from janus_jax.processing import chat, image as image_proc
from janus_jax.processing.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class RowSpec:
  """Shapes and formatting shared by every row of a run."""
  seq_len: int
  num_image_tokens: int          # understanding features per image = generated codes per image
  und_image_size: int            # SigLIP input side
  gen_image_size: int            # VQ input side (gen_grid * downsample)
  template: str = "deepseek"
  system_prompt: str = ""        # understanding system prompt ("" keeps rows short; official default is longer)
  und_boi_slot: bool = False     # JanusFlow: `<begin_of_image>` is an image slot too (learned BOI embedding)


def empty_row(s: RowSpec) -> dict[str, np.ndarray]:
  """An all-padding row: every key of the row format at its shape and dtype (tokens [seq_len], images)."""
  t = s.seq_len
  return {
      "input_ids": np.zeros(t, np.int32), "positions": np.zeros(t, np.int32), "valid": np.zeros(t, bool),
      "und_image_mask": np.zeros(t, bool), "gen_image_mask": np.zeros(t, bool), "targets": np.zeros(t, np.int32),
      "text_loss_mask": np.zeros(t, bool), "image_loss_mask": np.zeros(t, bool), "cfg_drop_mask": np.zeros(t, bool),
      "und_pixels": np.zeros((1, s.und_image_size, s.und_image_size, 3), np.float32),
      "gen_pixels": np.zeros((s.gen_image_size, s.gen_image_size, 3), np.float32),
      "has_gen_image": np.zeros((), bool),
  }


class RowBuilder:
  """Turns (image, question, answer) / (image, caption) / text into training rows. Picklable (grain workers)."""

  def __init__(self, tokenizer: Tokenizer, spec: RowSpec):
    self.tokenizer = tokenizer
    self.spec = spec
    self.special = tokenizer.special_ids()

  # --- helpers -------------------------------------------------------------------------------------------
  def _empty(self) -> dict[str, np.ndarray]:
    return empty_row(self.spec)

  def _fill(self, row: dict, seq: np.ndarray, what: str) -> int:
    n = len(seq)
    if n > self.spec.seq_len:
      raise ValueError(f"A {what} row needs {n} tokens but seq_len is {self.spec.seq_len} (over by "
                       f"{n - self.spec.seq_len}); raise input.seq_len or shorten the text.")
    row["input_ids"][:n] = seq
    row["valid"][:n] = True
    row["positions"][:n] = np.arange(n)
    row["targets"][:n - 1] = seq[1:]
    return n

  # --- the three kinds -----------------------------------------------------------------------------------
  def understanding(self, image, question: str, answer: str) -> dict[str, np.ndarray]:
    """image: uint8[H, W, 3] (any size; resized and padded as shipped) -> one single-turn understanding row."""
    return self.conversation(image, [(question, answer)])

  def conversation(self, image, turns: Sequence[tuple[str, str] | tuple[str, str, bool]]) -> dict[str, np.ndarray]:
    """A multi-turn understanding row about one image: the first user message holds the image, each assistant
    answer (and its EOS) is a loss target, as the official multi-turn SFT format
    (`<|User|>: <image>\\n{q1}\\n\\n<|Assistant|>: {a1}<eos><|User|>: {q2}\\n\\n<|Assistant|>: {a2}<eos>...`).
    image=None gives a text-only conversation (no image block), otherwise the same format and loss.
    A turn (question, answer, False) is context only: its answer is in the row but not a loss target.

    Whole turns after the first that would overflow `seq_len` are left out (a conversation is cut at a turn
    boundary); a first turn that does not fit raises a ValueError.
    """
    if not turns:
      raise ValueError("An understanding row needs at least one (question, answer) turn.")
    s = self.spec
    prompt = chat.understanding_prompt(turns[0][0], s.template, s.system_prompt, num_images=int(image is not None))
    ids, img_mask = chat.expand_image_placeholders(self.tokenizer.encode(prompt), self.special, s.num_image_tokens,
                                                   extra_boi_slot=s.und_boi_slot)
    pieces, answer_spans, n = [np.asarray(ids, np.int32)], [], len(ids)
    for k, (question, answer, *supervised) in enumerate(turns):
      follow = self.tokenizer.encode(chat.user_turn_prompt(question, s.template), add_bos=False) if k else []
      answer_ids = self.tokenizer.encode(" " + answer.strip(), add_bos=False) + [self.special.eos]
      if k and n + len(follow) + len(answer_ids) > s.seq_len:
        break
      pieces += [np.asarray(follow, np.int32), np.asarray(answer_ids, np.int32)]
      if not supervised or supervised[0]:
        answer_spans.append((n + len(follow), n + len(follow) + len(answer_ids)))
      n += len(follow) + len(answer_ids)
    seq = np.concatenate(pieces).astype(np.int32)
    row = self._empty()
    self._fill(row, seq, "understanding")
    row["und_image_mask"][:len(ids)] = img_mask
    for start, end in answer_spans:
      row["text_loss_mask"][start - 1:end - 1] = True  # predicts the answer tokens and EOS
    if image is not None:
      row["und_pixels"][0] = image_proc.preprocess_understanding([image], s.und_image_size)[0]
    return row

  def text_to_image(self, image, caption: str) -> dict[str, np.ndarray]:
    """image: uint8[H, W, 3] (short side resized + centre crop) -> one text-to-image row."""
    s = self.spec
    prompt_ids = np.asarray(self.tokenizer.encode(chat.generation_prompt(caption, s.template)), np.int32)
    p, n_img = len(prompt_ids), s.num_image_tokens
    seq = np.concatenate([prompt_ids, np.zeros(n_img, np.int32)])  # codes are filled in by the train step
    row = self._empty()
    self._fill(row, seq, "text-to-image")
    row["gen_image_mask"][p:p + n_img] = True
    row["image_loss_mask"][p - 1:p + n_img - 1] = True
    row["cfg_drop_mask"][1:p - 1] = True
    row["gen_pixels"] = image_proc.preprocess_generation(image, s.gen_image_size)
    row["has_gen_image"] = np.ones((), bool)
    return row

  def text(self, text: str) -> dict[str, np.ndarray]:
    """Plain text (language modelling on every token)."""
    seq = np.asarray(self.tokenizer.encode(text) + [self.special.eos], np.int32)
    row = self._empty()
    n = self._fill(row, seq, "text")
    row["text_loss_mask"][:n - 1] = True
    return row
