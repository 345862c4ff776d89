"""Prompt templates, image-placeholder expansion and left-padded batches, as the official Janus processors.

Prompt strings follow `SeparatorStyle.DeepSeek.get_prompt` + `apply_sft_template_for_multi_turn_prompts`:
each message is stripped, `system + "\\n\\n"` starts the prompt when the system prompt is non-empty, message
i is written `role + ": " + content + seps[i % 2]` (seps = "\\n\\n", EOS string) or `role + ":"` when empty,
and the result is stripped.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from janus_jax.processing.tokenizer import (BEGIN_OF_IMAGE, EOS_TOKEN, IMAGE_PLACEHOLDER, SpecialTokens,
                                            Tokenizer)

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language.")

NUM_IMAGE_TOKENS = 576


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A DeepSeek-style conversation template."""
  name: str
  user_role: str
  assistant_role: str
  sep: str = "\n\n"
  sep2: str = EOS_TOKEN
  stop_strings: tuple[str, ...] = ()

  @property
  def roles(self) -> tuple[str, str]:
    return (self.user_role, self.assistant_role)


TEMPLATES = {
    # Janus-Pro.
    "deepseek": ChatTemplate("deepseek", "<|User|>", "<|Assistant|>", stop_strings=("<|User|>", EOS_TOKEN)),
    # Janus-1.3B and JanusFlow.
    "deepseek_old": ChatTemplate("deepseek_old", "User", "Assistant", stop_strings=("User:", EOS_TOKEN)),
}


def require_texts(texts: Sequence[str], name: str, hint: str = "") -> list[str]:
  """`texts` as a list, checked: at least one, each a non-blank string (else a ValueError naming `name`[i])."""
  texts = list(texts)
  if not texts:
    raise ValueError(f"{name} is empty; pass at least one.")
  for i, t in enumerate(texts):
    if not isinstance(t, str) or not t.strip():
      raise ValueError(f"{name}[{i}] is {t!r}; every entry needs text.{hint}")
  return texts


def get_template(template: str | ChatTemplate) -> ChatTemplate:
  """The template named `template` (a `ChatTemplate` passes through); ValueError listing valid names."""
  if isinstance(template, ChatTemplate):
    return template
  if template not in TEMPLATES:
    raise ValueError(f"Unknown chat template {template!r}. Valid templates: {sorted(TEMPLATES)}.")
  return TEMPLATES[template]


# ------------------------------------------------------------------------------------------------
# Prompt strings.
# ------------------------------------------------------------------------------------------------


def _resolve_role(role: str, tpl: ChatTemplate) -> str:
  """The template's role string for `role`: "user"/"assistant" or the template's own role strings."""
  if role in tpl.roles:
    return role
  generic = {"user": tpl.user_role, "assistant": tpl.assistant_role}
  if role in generic:
    return generic[role]
  raise ValueError(
      f"Unknown role {role!r} for chat template {tpl.name!r}. Use 'user'/'assistant' or {list(tpl.roles)}.")


def format_conversation(
    messages: Sequence[Mapping[str, str]],
    template: str | ChatTemplate,
    system_prompt: str = "",
) -> str:
  """The prompt for `messages` (dicts with "role" and "content"), exactly as the official SFT formatter.

  Separators alternate by message index ("\\n\\n" after even, EOS after odd messages), as in the official
  code. An empty last message (normally the assistant's) leaves the prompt open: `...<|Assistant|>:`.
  """
  tpl = get_template(template)
  seps = (tpl.sep, tpl.sep2)
  out = system_prompt + seps[0] if system_prompt else ""
  for i, message in enumerate(messages):
    role = _resolve_role(message["role"], tpl)
    content = (message.get("content") or "").strip()
    out += f"{role}: {content}{seps[i % 2]}" if content else f"{role}:"
  return out.strip()


def image_placeholders(num_images: int) -> str:
  """The text put before the question: one `<image_placeholder>` line per image."""
  return (IMAGE_PLACEHOLDER + "\n") * num_images


def understanding_prompt(
    question: str,
    template: str | ChatTemplate,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    num_images: int = 1,
) -> str:
  """`"{sys}\\n\\n<|User|>: <image_placeholder>\\n{question}\\n\\n<|Assistant|>:"` (deepseek roles).

  The system prompt defaults to the one the official processor always uses; VLMEvalKit passes "".
  With several images the placeholders go on separate lines before the question.
  """
  tpl = get_template(template)
  messages = [
      {"role": tpl.user_role, "content": image_placeholders(num_images) + question},
      {"role": tpl.assistant_role, "content": ""},
  ]
  return format_conversation(messages, tpl, system_prompt)


def user_turn_prompt(text: str, template: str | ChatTemplate) -> str:
  """One user message left open for the answer, no system prompt: `"<|User|>: {text}\\n\\n<|Assistant|>:"`
  (deepseek roles). The text-to-image prompt, and a later turn of a conversation (written after the previous
  answer's EOS)."""
  tpl = get_template(template)
  messages = [{"role": tpl.user_role, "content": text}, {"role": tpl.assistant_role, "content": ""}]
  return format_conversation(messages, tpl, system_prompt="")


def generation_prompt(
    text: str,
    template: str | ChatTemplate,
    image_start_tag: str = BEGIN_OF_IMAGE,
) -> str:
  """`"<|User|>: {text}\\n\\n<|Assistant|>:<begin_of_image>"` (deepseek roles; system prompt "").

  JanusFlow's README ends with `<｜begin▁of▁generation｜>` instead (it drops that last token anyway).
  """
  return user_turn_prompt(text, template) + image_start_tag


# ------------------------------------------------------------------------------------------------
# Token-level helpers.
# ------------------------------------------------------------------------------------------------


def expand_image_placeholders(
    ids: Sequence[int],
    special: SpecialTokens,
    num_image_tokens: int = NUM_IMAGE_TOKENS,
    extra_boi_slot: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
  """Replaces each `<image_placeholder>` id by `[boi] + [placeholder] * num_image_tokens + [eoi]`.

  Returns `(int32[T'], bool[T'])`: the expanded ids and the mask of image-feature positions (the
  placeholders; with `extra_boi_slot`, JanusFlow's layout, also the `<begin_of_image>` before them, giving
  num_image_tokens + 1 slots per image).
  """
  block_ids = [special.begin_of_image] + [special.image_placeholder] * num_image_tokens + [special.end_of_image]
  block_mask = [extra_boi_slot] + [True] * num_image_tokens + [False]
  out_ids, out_mask = [], []
  for idx in ids:
    idx = int(idx)
    if idx == special.image_placeholder:
      out_ids.extend(block_ids)
      out_mask.extend(block_mask)
    else:
      out_ids.append(idx)
      out_mask.append(False)
  return np.asarray(out_ids, np.int32), np.asarray(out_mask, bool)


def _check_length(length: int, max_len: int | None, row: int) -> None:
  if max_len is not None and length > max_len:
    raise ValueError(
        f"Sequence {row} is {length} tokens long, more than the context limit max_len={max_len}. "
        f"Shorten the prompt or use fewer images (each image takes its image tokens + 2), or raise max_len "
        f"if the model's context allows it.")


def _padded_length(lengths: Sequence[int], pad_to_multiple_of: int) -> int:
  longest = max(lengths, default=0)
  return -(-longest // pad_to_multiple_of) * pad_to_multiple_of


def batch_left_pad(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    max_len: int | None = None,
    pad_to_multiple_of: int = 1,
) -> dict[str, np.ndarray]:
  """Left-pads token sequences into `input_ids int32[B, T]` and `attention_mask bool[B, T]`.

  T is the longest length rounded up to `pad_to_multiple_of` (fewer distinct shapes to compile).
  ValueError when a sequence is longer than `max_len` (the context).
  """
  lengths = [len(s) for s in sequences]
  for row, length in enumerate(lengths):
    _check_length(length, max_len, row)
  t = _padded_length(lengths, pad_to_multiple_of)
  input_ids = np.full((len(sequences), t), pad_id, np.int32)
  mask = np.zeros((len(sequences), t), bool)
  for row, seq in enumerate(sequences):
    if lengths[row]:
      input_ids[row, t - lengths[row]:] = np.asarray(seq, np.int32)
      mask[row, t - lengths[row]:] = True
  return {"input_ids": input_ids, "attention_mask": mask}


def left_pad_masks(masks: Sequence[Sequence[bool]], length: int) -> np.ndarray:
  """Left-pads per-row bool masks (e.g. image-feature masks) to `bool[B, length]` with False."""
  out = np.zeros((len(masks), length), bool)
  for row, m in enumerate(masks):
    if len(m):
      out[row, length - len(m):] = np.asarray(m, bool)
  return out


# ------------------------------------------------------------------------------------------------
# Batches.
# ------------------------------------------------------------------------------------------------


def _per_question(num_images: int | Sequence[int], n: int) -> list[int]:
  if isinstance(num_images, int):
    return [num_images] * n
  counts = list(num_images)
  if len(counts) != n:
    raise ValueError(f"num_images_per_question has {len(counts)} entries for {n} questions.")
  return counts


def prepare_understanding_batch(
    tokenizer: Tokenizer,
    questions: Sequence[str],
    num_images_per_question: int | Sequence[int] = 1,
    template: str | ChatTemplate = "deepseek",
    num_image_tokens: int = NUM_IMAGE_TOKENS,
    max_len: int | None = None,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    extra_boi_slot: bool = False,
    pad_to_multiple_of: int = 1,
) -> dict[str, np.ndarray]:
  """Tokenised, placeholder-expanded, left-padded understanding prompts.

  Returns `input_ids int32[B, T]`, `attention_mask bool[B, T]`, `image_seq_mask bool[B, T]` (True where
  an image feature goes, in image order) and `num_images int32[B]`. Images are expected in the order
  their placeholders appear. `extra_boi_slot=True` gives JanusFlow's 577-slot layout.
  """
  special = tokenizer.special_ids()
  counts = _per_question(num_images_per_question, len(questions))
  ids, masks = [], []
  for row, (question, count) in enumerate(zip(questions, counts)):
    prompt = understanding_prompt(question, template, system_prompt, num_images=count)
    raw = tokenizer.encode(prompt)
    found = sum(int(i == special.image_placeholder) for i in raw)
    if found != count:
      raise ValueError(
          f"Question {row} should hold {count} image(s) but its prompt has {found} "
          f"'{IMAGE_PLACEHOLDER}' tokens; remove literal '{IMAGE_PLACEHOLDER}' tags from the question text.")
    row_ids, row_mask = expand_image_placeholders(raw, special, num_image_tokens, extra_boi_slot)
    ids.append(row_ids)
    masks.append(row_mask)
  batch = batch_left_pad(ids, special.pad, max_len, pad_to_multiple_of)
  batch["image_seq_mask"] = left_pad_masks(masks, batch["input_ids"].shape[1])
  batch["num_images"] = np.asarray(counts, np.int32)
  return batch


def unconditional_ids(ids: Sequence[int], pad_id: int) -> list[int]:
  """The CFG unconditional prompt: first (BOS) and last (`<begin_of_image>`) tokens kept, the rest pad."""
  ids = [int(i) for i in ids]
  if len(ids) <= 2:
    return ids
  return [ids[0]] + [pad_id] * (len(ids) - 2) + [ids[-1]]


def prepare_generation_batch(
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    template: str | ChatTemplate = "deepseek",
    max_len: int | None = None,
    image_start_tag: str = BEGIN_OF_IMAGE,
    pad_to_multiple_of: int = 1,
) -> dict[str, np.ndarray]:
  """Conditional and unconditional (CFG) text-to-image prompts, left-padded to one length T.

  Returns `input_ids`/`attention_mask` (conditional rows) and `uncond_input_ids`/`uncond_attention_mask`
  (`int32[B, T]` / `bool[B, T]`). Each unconditional row has its conditional row's length with
  `[1:-1]` set to pad, as the official loop. Its mask is True on all of its own positions, pads included:
  the official code passes no mask, so those pads are attended to; only the batch's left padding is
  masked out (the official loop never left-pads, since all its rows share one prompt).
  """
  pad = tokenizer.pad_id
  cond = [tokenizer.encode(generation_prompt(p, template, image_start_tag)) for p in prompts]
  uncond = [unconditional_ids(ids, pad) for ids in cond]
  cond_batch = batch_left_pad(cond, pad, max_len, pad_to_multiple_of)
  uncond_batch = batch_left_pad(uncond, pad, max_len, pad_to_multiple_of)
  return {
      "input_ids": cond_batch["input_ids"],
      "attention_mask": cond_batch["attention_mask"],
      "uncond_input_ids": uncond_batch["input_ids"],
      "uncond_attention_mask": uncond_batch["attention_mask"],
  }
