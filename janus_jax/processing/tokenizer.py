"""Text tokenizers behind one interface: DeepSeek `tokenizer.json` (HF) and our own SentencePiece models.

Special-token ids are always looked up by name in the loaded vocabulary, never hard-coded: they differ
between checkpoints (e.g. pad is 100002 in Janus-Pro-1B and 100015 in Janus-Pro-7B).

The DeepSeek names of BOS / EOS / pad / begin-of-generation use the full-width bar "｜" (U+FF5C) and the
lower-one-eighth block "▁" (U+2581); they are written with escapes below so they cannot be mistyped.
Tokenizer files may be local or remote (`gs://...`, any `etils.epath` path): they are read as bytes / text.
"""
from __future__ import annotations

import abc
import dataclasses
import functools
import io
import json
import os
import re
from typing import Iterable, Sequence

from janus_jax import paths

BOS_TOKEN = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS_TOKEN = "<\uff5cend\u2581of\u2581sentence\uff5c>"
PAD_TOKEN = "<\uff5c\u2581pad\u2581\uff5c>"
IMAGE_PLACEHOLDER = "<image_placeholder>"
BEGIN_OF_IMAGE = "<begin_of_image>"
END_OF_IMAGE = "<end_of_image>"
BEGIN_OF_GENERATION = "<\uff5cbegin\u2581of\u2581generation\uff5c>"  # JanusFlow only.

# Every tag the Janus processors rely on (ASCII "|" in the role and grounding tags).
JANUS_SPECIAL_TOKENS = (
    IMAGE_PLACEHOLDER,
    "<patch_placeholder>",
    "<|ref|>",
    "<|/ref|>",
    "<|det|>",
    "<|/det|>",
    "<|grounding|>",
    "<|User|>",
    "<|Assistant|>",
    BEGIN_OF_IMAGE,
    END_OF_IMAGE,
    BEGIN_OF_GENERATION,
)


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """Ids of the special tokens the Janus processors use, resolved from one tokenizer."""
  bos: int
  eos: int
  pad: int
  image_placeholder: int
  begin_of_image: int
  end_of_image: int
  begin_of_generation: int | None = None  # Only JanusFlow vocabularies have it.


class Tokenizer(abc.ABC):
  """Common interface of all tokenizers.

  Subclasses set `path` (the file loaded, used in error messages) and the token names `bos_token`,
  `eos_token`, `pad_token`, and implement `encode`, `decode`, `_lookup` and `vocab_size`.
  """
  path: str
  bos_token: str = BOS_TOKEN
  eos_token: str = EOS_TOKEN
  pad_token: str = PAD_TOKEN

  @abc.abstractmethod
  def encode(self, text: str, add_bos: bool = True) -> list[int]:
    """Token ids of `text`; with `add_bos`, BOS is prepended once (like the official `tokenizer.encode`)."""

  @abc.abstractmethod
  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    """Text of `ids` (any iterable of ints, e.g. `int32[T]`)."""

  def _known(self, ids: Iterable[int]) -> list[int]:
    """ids with those outside [0, vocab_size) dropped: a model's embedding table may be larger than its tokenizer
    (Janus: 102400 rows for ~100k tokens), and a sampled id in that padding decodes to nothing."""
    n = self.vocab_size
    return [i for i in _as_int_list(ids) if 0 <= i < n]

  @abc.abstractmethod
  def _lookup(self, token: str) -> int | None:
    """Id of `token`, or None when the vocabulary lacks it."""

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of tokens the tokenizer knows (not the model's embedding rows, which may be more)."""

  def encode_batch(self, texts: Sequence[str], add_bos: bool = True) -> list[list[int]]:
    """`encode` applied to each text."""
    return [self.encode(t, add_bos=add_bos) for t in texts]

  def has_token(self, token: str) -> bool:
    return self._lookup(token) is not None

  def token_to_id(self, token: str) -> int:
    """Id of `token`; KeyError naming the token and the tokenizer file when absent."""
    idx = self._lookup(token)
    if idx is None:
      raise KeyError(f"Token {token!r} is not in the vocabulary of tokenizer file '{self.path}'.")
    return idx

  @property
  def bos_id(self) -> int:
    return self.token_to_id(self.bos_token)

  @property
  def eos_id(self) -> int:
    return self.token_to_id(self.eos_token)

  @property
  def pad_id(self) -> int:
    """Id of the pad token; EOS when the vocabulary has no pad token.

    The EOS fallback reproduces the Janus-1.3B history (its first `special_tokens_map.json` had no pad, so
    the official processor padded with EOS). Current official processors look `<｜▁pad▁｜>` up in the vocab.
    """
    idx = self._lookup(self.pad_token)
    return self.eos_id if idx is None else idx

  def special_ids(self) -> SpecialTokens:
    """The Janus special-token ids of this vocabulary (KeyError if a required one is missing)."""
    return SpecialTokens(
        bos=self.bos_id,
        eos=self.eos_id,
        pad=self.pad_id,
        image_placeholder=self.token_to_id(IMAGE_PLACEHOLDER),
        begin_of_image=self.token_to_id(BEGIN_OF_IMAGE),
        end_of_image=self.token_to_id(END_OF_IMAGE),
        begin_of_generation=self._lookup(BEGIN_OF_GENERATION),
    )


def _with_bos(ids: list[int], bos: int, add_bos: bool) -> list[int]:
  """Prepends `bos` when asked, unless the ids already start with it (never a double BOS)."""
  if add_bos and not (ids and ids[0] == bos):
    return [bos] + ids
  return ids


def _as_int_list(ids: Iterable[int]) -> list[int]:
  return [int(i) for i in ids]


# ------------------------------------------------------------------------------------------------
# HF tokenizers (`tokenizer.json`).
# ------------------------------------------------------------------------------------------------


def _token_name(value) -> str | None:
  """A special-token entry of a HF config: a string, an AddedToken dict or None."""
  if isinstance(value, dict):
    return value.get("content")
  return value if isinstance(value, str) else None


def _read_json(path) -> dict:
  path = paths.resolve(path)
  if not path.is_file():
    return {}
  data = json.loads(path.read_text(encoding="utf-8"))
  return data if isinstance(data, dict) else {}


def _special_names(directory) -> dict[str, str]:
  """bos/eos/pad names from `tokenizer_config.json`, overridden by `special_tokens_map.json` (as HF does)."""
  names = {}
  for filename in ("tokenizer_config.json", "special_tokens_map.json"):
    config = _read_json(paths.resolve(directory) / filename)
    for key in ("bos", "eos", "pad"):
      name = _token_name(config.get(f"{key}_token"))
      if name:
        names[key] = name
  return names


class HFTokenizer(Tokenizer):
  """DeepSeek byte-level BPE from a `tokenizer.json` (file or directory holding one).

  Encoding skips the file's post-processor and prepends BOS by hand, so `add_bos` behaves the same whether
  or not the post-processor adds BOS (the official LlamaTokenizerFast adds exactly one BOS and no EOS).
  Special-token names come from `tokenizer_config.json` / `special_tokens_map.json` beside the file when
  present, otherwise the DeepSeek names.
  """

  def __init__(self, path: str | os.PathLike):
    import tokenizers  # Local import: only this class needs the library.

    file = paths.resolve(path)
    if file.is_dir():
      file = file / "tokenizer.json"
    self.path = os.fspath(file)
    if not file.is_file():
      raise FileNotFoundError(f"Tokenizer file '{self.path}' does not exist.")
    try:
      self._tok = tokenizers.Tokenizer.from_str(file.read_text(encoding="utf-8"))
    except Exception as e:
      raise ValueError(f"Cannot parse tokenizer file '{self.path}': {e}") from e
    names = _special_names(file.parent)
    self.bos_token = names.get("bos", BOS_TOKEN)
    self.eos_token = names.get("eos", EOS_TOKEN)
    self.pad_token = names.get("pad", PAD_TOKEN)

  @functools.cached_property
  def _bos(self) -> int:
    return self.bos_id

  def encode(self, text: str, add_bos: bool = True) -> list[int]:
    ids = self._tok.encode(text, add_special_tokens=False).ids
    return _with_bos(ids, self._bos, add_bos)

  def encode_batch(self, texts: Sequence[str], add_bos: bool = True) -> list[list[int]]:
    encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
    return [_with_bos(e.ids, self._bos, add_bos) for e in encodings]

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    return self._tok.decode(self._known(ids), skip_special_tokens=skip_special_tokens)

  def _lookup(self, token: str) -> int | None:
    return self._tok.token_to_id(token)

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)


# ------------------------------------------------------------------------------------------------
# SentencePiece (our own trained models).
# ------------------------------------------------------------------------------------------------


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece `.model`, e.g. one trained with `train_sentencepiece`.

  Special tokens written in the text (BOS/EOS/pad and the Janus tags present in the vocab) are matched as
  whole tokens before the rest is encoded, like added tokens in HF tokenizers. BOS/EOS/pad names come from
  the model's own bos/eos/pad pieces. `skip_special_tokens` drops control pieces and the Janus tags.
  """

  def __init__(self, model_path: str | os.PathLike):
    import sentencepiece as spm  # Local import: only this class needs the library.

    file = paths.resolve(model_path)
    self.path = os.fspath(file)
    if not file.is_file():
      raise FileNotFoundError(f"SentencePiece model '{self.path}' does not exist.")
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=file.read_bytes())
    except Exception as e:
      raise ValueError(f"Cannot load SentencePiece model '{self.path}': {e}") from e
    self.bos_token = self._piece_or(self._sp.bos_id(), BOS_TOKEN)
    self.eos_token = self._piece_or(self._sp.eos_id(), EOS_TOKEN)
    self.pad_token = self._piece_or(self._sp.pad_id(), PAD_TOKEN)
    self._special = self._collect_special()
    names = sorted(self._special, key=len, reverse=True)  # Longest first, so no tag shadows a longer one.
    self._split_re = re.compile("(" + "|".join(re.escape(n) for n in names) + ")") if names else None
    self._special_id_set = frozenset(self._special.values())

  def _piece_or(self, idx: int, default: str) -> str:
    return self._sp.id_to_piece(idx) if idx >= 0 else default

  def _collect_special(self) -> dict[str, int]:
    """name -> id of control pieces and Janus tags present in the model."""
    special = {}
    for idx in range(self._sp.get_piece_size()):
      if self._sp.is_control(idx):
        special[self._sp.id_to_piece(idx)] = idx
    for name in JANUS_SPECIAL_TOKENS:
      idx = self._lookup(name)
      if idx is not None:
        special[name] = idx
    return special

  def encode(self, text: str, add_bos: bool = True) -> list[int]:
    ids = []
    parts = self._split_re.split(text) if self._split_re else [text]
    for part in parts:
      if part in self._special:
        ids.append(self._special[part])
      elif part:
        ids.extend(self._sp.encode(part))
    return _with_bos(ids, self.bos_id, add_bos)

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    pieces, run = [], []
    for idx in self._known(ids):
      if idx not in self._special_id_set:
        run.append(idx)
        continue
      pieces.append(self._sp.decode(run))
      run = []
      if not skip_special_tokens:
        pieces.append(self._sp.id_to_piece(idx))
    pieces.append(self._sp.decode(run))
    return "".join(pieces)

  def _lookup(self, token: str) -> int | None:
    idx = self._sp.piece_to_id(token)
    # piece_to_id answers unk_id for unknown pieces: confirm the piece really is `token`.
    return idx if self._sp.id_to_piece(idx) == token else None

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str | os.PathLike,
    vocab_size: int,
    *,
    model_type: str = "bpe",
    extra_symbols: Sequence[str] = (),
    unk_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 3,
    byte_fallback: bool = True,
    character_coverage: float = 1.0,
    quiet: bool = True,
    **trainer_kwargs,
) -> str:
  """Trains a SentencePiece model whose vocab holds the Janus special tokens; returns the `.model` path (a remote
  `model_prefix` gets the `.model` only, no `.vocab`).

  BOS/EOS/pad get the DeepSeek names at the given ids; the Janus tags (`JANUS_SPECIAL_TOKENS`, plus
  `extra_symbols`) are user-defined symbols. Normalisation is "identity" (NFKC would turn the full-width
  "｜" into "|"), no dummy prefix and no whitespace collapsing, so text round-trips exactly (except a
  literal "▁", which SentencePiece reserves for spaces). `trainer_kwargs` go to `SentencePieceTrainer`.
  """
  import sentencepiece as spm

  prefix = os.fspath(model_prefix)
  remote = paths.is_remote(prefix)
  options = dict(
      model_prefix=prefix,
      vocab_size=vocab_size,
      model_type=model_type,
      user_defined_symbols=list(JANUS_SPECIAL_TOKENS) + list(extra_symbols),
      unk_id=unk_id,
      bos_id=bos_id,
      eos_id=eos_id,
      pad_id=pad_id,
      bos_piece=BOS_TOKEN,
      eos_piece=EOS_TOKEN,
      pad_piece=PAD_TOKEN,
      byte_fallback=byte_fallback,
      character_coverage=character_coverage,
      normalization_rule_name="identity",
      add_dummy_prefix=False,
      remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True,
      split_digits=True,
  )
  options.update(trainer_kwargs)
  sentences = (t for t in texts if t)
  model = None
  if remote:  # The trainer writes local files only: take the model as bytes and write it with epath.
    model = io.BytesIO()
    options["model_writer"] = model
    del options["model_prefix"]
  if quiet:
    with open(os.devnull, "w") as devnull:  # The trainer logs to a file descriptor.
      spm.SentencePieceTrainer.train(sentence_iterator=sentences, logstream=devnull, **options)
  else:
    spm.SentencePieceTrainer.train(sentence_iterator=sentences, **options)
  if model is not None:
    out = paths.resolve(prefix + ".model")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.getvalue())
  return prefix + ".model"


# ------------------------------------------------------------------------------------------------
# Loading.
# ------------------------------------------------------------------------------------------------


def _find_in_directory(directory) -> Tokenizer:
  directory = paths.resolve(directory)
  hf_path = directory / "tokenizer.json"
  if hf_path.is_file():
    return HFTokenizer(hf_path)
  found = sorted(p.name for p in directory.iterdir())
  models = [f for f in found if f.endswith(".model")]
  if "tokenizer.model" in models:
    models = ["tokenizer.model"]
  if len(models) == 1:
    return SentencePieceTokenizer(directory / models[0])
  if len(models) > 1:
    raise ValueError(
        f"Directory '{directory}' holds several SentencePiece models {models}; pass the file to load.")
  raise FileNotFoundError(
      f"No tokenizer found in directory '{directory}': expected 'tokenizer.json' (HF / DeepSeek) or a "
      f"SentencePiece '*.model' file (e.g. 'tokenizer.model'). Found: {found}.")


def load_tokenizer(directory_or_file: str | os.PathLike) -> Tokenizer:
  """Loads `tokenizer.json` (HF) or a `*.model` (SentencePiece) from a file or a checkpoint directory, local or
  remote."""
  path = paths.resolve(directory_or_file)
  if path.is_dir():
    return _find_in_directory(path)
  if not path.is_file():
    raise FileNotFoundError(f"Tokenizer path '{path}' does not exist.")
  if path.name.endswith(".json"):
    return HFTokenizer(path)
  if path.name.endswith(".model"):
    return SentencePieceTokenizer(path)
  raise ValueError(
      f"Unknown tokenizer file '{path}': expected a 'tokenizer.json' (HF) or a SentencePiece '*.model' file.")
