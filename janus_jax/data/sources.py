"""Random-access record sources and the adapters that turn their records into the three row streams.

A source is anything with `__len__` and `__getitem__` returning a dict (tfds `data_source`, an ArrayRecord
reader, a list). An adapter knows a source's record layout and yields, per record index, the inputs of a row:
  understanding: (image uint8[H, W, 3], question, answer) or (image, [(question, answer), ...]) (multi-turn)
  text_to_image: (image, caption)
  text:          text, or [(question, answer), ...] (a text-only conversation)
Adapters: `shapes` (the embedded Shapes TFDS dataset), `imagenet2012` (caption = class name, as Janus stage I),
`coco_captions`, and `pairs` (a generic image-text ArrayRecord written by `write_pairs`). Nothing downloads:
TFDS sources must already be prepared in `data_dir` (`download=False`).
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from janus_jax import paths as paths_lib
from janus_jax.data import shapes as shapes_lib

KINDS = ("und", "t2i", "text")


def _text(x) -> str:
  if isinstance(x, bytes):
    return x.decode("utf-8")
  if isinstance(x, np.ndarray) and x.dtype.kind in ("S", "O", "U"):
    return _text(x.item())
  return str(x)


def _texts(x) -> list[str]:
  if isinstance(x, (list, tuple)) or (isinstance(x, np.ndarray) and x.ndim == 1):
    return [_text(v) for v in x]
  return [_text(x)]


def _image(x) -> np.ndarray:
  """uint8[H, W, 3] from a decoded array (grey / RGBA handled) or encoded PNG/JPEG bytes."""
  if isinstance(x, (bytes, np.bytes_)):
    from janus_jax.processing.image import load_image  # pylint: disable=import-outside-toplevel
    from PIL import Image  # pylint: disable=import-outside-toplevel
    return np.asarray(load_image(Image.open(io.BytesIO(bytes(x)))), np.uint8)
  arr = np.asarray(x)
  if arr.ndim == 2:
    arr = arr[..., None]
  if arr.shape[-1] == 1:
    arr = np.repeat(arr, 3, axis=-1)
  return arr[..., :3].astype(np.uint8)


@dataclasses.dataclass
class Adapter:
  """A source plus functions (record, rng) -> row inputs for each kind it supports; `indices[kind]`, when given,
  lists the records that can make rows of that kind (e.g. only captioned pairs make text-to-image rows)."""
  source: Sequence[Any]
  makers: dict[str, Callable[[dict, np.random.Generator], tuple]]
  indices: dict[str, Sequence[int]] | None = None

  def supports(self, kind: str) -> bool:
    return kind in self.makers and (self.indices is None or len(self.indices.get(kind, ())) > 0)

  def records_for(self, kind: str) -> Sequence[Any]:
    """The records that make rows of `kind` (random access)."""
    return self.source if self.indices is None else Subset(self.source, self.indices[kind])


class Subset:
  """Random access to `source[indices[i]]`."""

  def __init__(self, source: Sequence[Any], indices: Sequence[int]):
    self.source, self.indices = source, list(indices)

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.source[self.indices[i]]


# --- Shapes -------------------------------------------------------------------------------------------------
def _pick_questions(rec, rng, turns: int, mc_weight: float = 1.0, scaffold: float = 0.0) -> list[tuple[str, str]]:
  """`turns` distinct (question, answer) pairs of the record, in random order. A multiple-choice question is
  `mc_weight` times as likely to be drawn as an open one; with probability `scaffold` a drawn multiple-choice
  question is preceded by the same question asked open and answered with the right option's text."""
  qa = rec["qa"]
  questions, answers = _texts(qa["question"]), _texts(qa["answer"])
  if not questions:
    raise ValueError("Shapes record without questions.")
  choices = _texts(qa["choices"]) if "choices" in qa else [""] * len(questions)
  p = None
  if mc_weight != 1.0:
    weights = np.where([bool(c) for c in choices], mc_weight, 1.0)
    p = weights / weights.sum()
  if turns == 1 and p is None and not scaffold:  # the draw of earlier versions: older runs resume in the same order
    picked = [int(rng.integers(len(questions)))]
  else:
    picked = rng.choice(len(questions), size=min(turns, len(questions)), replace=False, p=p)
  out = []
  for i in picked:
    if scaffold and choices[i] and rng.random() < scaffold:
      options = shapes_lib.split_choices(choices[i])
      out.append((questions[i].split("\n")[0], options[ord(answers[i].strip()) - ord("A")]))
    out.append((questions[i], answers[i]))
  return out


def _shapes_und(rec, rng, caption_prob: float = 0.0, qa_turns: int = 1, mc_weight: float = 1.0,
                mc_scaffold: float = 0.0):
  """A question/answer row: `qa_turns` distinct questions about the image (a multi-turn conversation, see
  `_pick_questions`) from the record's eight; with probability `caption_prob` a captioning row instead ("Describe
  the image." -> the layout caption naming every object's size, colour, shape and cell: dense image supervision,
  like the image-caption data of Janus stage I)."""
  if caption_prob > 0 and "captions" in rec and rng.random() < caption_prob:
    layout = _texts(rec["captions"])[-1]  # `shapes.all_captions` lists the layout caption last.
    return _image(rec["image"]), [(shapes_lib.DESCRIBE_PROMPT, layout)]
  return _image(rec["image"]), _pick_questions(rec, rng, qa_turns, mc_weight, mc_scaffold)


def _shapes_t2i(rec, rng):
  captions = _texts(rec["captions"]) if "captions" in rec else []
  main = _text(rec["caption"])
  # Mostly the sampled caption; sometimes another canonical caption of the same scene (caption augmentation).
  if captions and rng.random() < 0.25:
    main = captions[int(rng.integers(len(captions)))]
  return _image(rec["image"]), main


def _shapes_text(rec, rng, qa_turns: int = 0, mc_weight: float = 1.0):
  """qa_turns=0: `{caption}. {question} {answer}` (language modelling on every token). qa_turns>=1: a text-only
  conversation about the scene described in words (the layout caption opens the first question), loss on the
  answers: the question-answering skills (e.g. looking an answer up among lettered options) without perception."""
  if qa_turns:
    turns = _pick_questions(rec, rng, qa_turns, mc_weight)
    layout = _texts(rec["captions"])[-1] if "captions" in rec else _text(rec["caption"])
    return ([(f"{layout}.\n{turns[0][0]}", turns[0][1])] + turns[1:],)
  qa = rec["qa"]
  questions, answers = _texts(qa["question"]), _texts(qa["answer"])
  i = int(rng.integers(len(questions)))
  return (f"{_text(rec['caption'])}. {questions[i]} {answers[i]}",)


def _shapes_letter_drill(rec, rng):
  """A text-only drill of the multiple-choice lookup: one of the record's multiple-choice questions asked open and
  answered with the right option's text (context, no loss), then asked with its options in a fresh random order
  and answered with the letter (the only loss target):
    <|User|>: What shape is the red object?\n\n<|Assistant|>: circle<eos>
    <|User|>: What shape is the red object?\nA. square\nB. circle\nC. triangle\n{MC_SUFFIX}\n\n<|Assistant|>: B<eos>
  """
  qa = rec["qa"]
  questions, answers = _texts(qa["question"]), _texts(qa["answer"])
  choices = _texts(qa["choices"]) if "choices" in qa else []
  multiple = [i for i, c in enumerate(choices) if c]
  if not multiple:
    raise ValueError("text_letter_drill needs Shapes records with multiple-choice questions (a `qa/choices` field); "
                     "this record has none. Fix: re-prepare the data with this version, or turn text_letter_drill off.")
  i = multiple[int(rng.integers(len(multiple)))]
  options = shapes_lib.split_choices(choices[i])
  question, answer = questions[i].split("\n")[0], options[ord(answers[i].strip()) - ord("A")]
  lettered, letter, _ = shapes_lib.multiple_choice(question, answer, options, rng, num_choices=len(options))
  return ([(question, answer, False), (lettered, letter)],)


def shapes(source, caption_prob: float = 0.0, qa_turns: int = 1, mc_weight: float = 1.0,
           text_qa_turns: int = 0, mc_scaffold: float = 0.0, text_letter_drill: bool = False) -> Adapter:
  """Shapes adapter; `caption_prob` is the share of understanding rows that are captioning rows, `qa_turns` the
  questions per question/answer row (turns that do not fit `seq_len` are left out by the row builder),
  `mc_weight` how much likelier a multiple-choice question is drawn than an open one, `text_qa_turns` > 0 makes
  the text rows conversations about the scene described in words (see `_shapes_text`), `mc_scaffold` the share of
  multiple-choice turns preceded by the same question asked open (a curriculum for the letter lookup);
  `text_letter_drill` makes every text row the letter drill of `_shapes_letter_drill` instead (the main job's
  `drill` stage)."""
  if text_letter_drill and text_qa_turns:
    raise ValueError("text_letter_drill and text_qa_turns both choose the text rows; set one of them.")
  if not 0.0 <= caption_prob <= 1.0:
    raise ValueError(f"caption_prob={caption_prob} must be in [0, 1].")
  if int(qa_turns) != qa_turns or qa_turns < 1:
    raise ValueError(f"qa_turns={qa_turns} must be a whole number >= 1.")
  if int(text_qa_turns) != text_qa_turns or text_qa_turns < 0:
    raise ValueError(f"text_qa_turns={text_qa_turns} must be a whole number >= 0 (0: plain language-model text).")
  if not 0.0 <= mc_scaffold <= 1.0:
    raise ValueError(f"mc_scaffold={mc_scaffold} must be in [0, 1] (the share of multiple-choice turns asked open "
                     "first).")
  if not mc_weight > 0:
    raise ValueError(f"mc_weight={mc_weight} must be > 0 (1 draws open and multiple-choice questions alike).")
  und = functools.partial(_shapes_und, caption_prob=caption_prob, qa_turns=int(qa_turns), mc_weight=mc_weight,
                          mc_scaffold=mc_scaffold)
  text = _shapes_letter_drill if text_letter_drill else functools.partial(
      _shapes_text, qa_turns=int(text_qa_turns), mc_weight=mc_weight)
  return Adapter(source, {"und": und, "t2i": _shapes_t2i, "text": text})


# --- ImageNet (tfds imagenet2012): class-name prompts ----------------------------------------------------------
def imagenet2012(source, label_names: Sequence[str]) -> Adapter:
  names = [n.split(",")[0].strip() for n in label_names]

  def t2i(rec, rng):
    return _image(rec["image"]), names[int(rec["label"])]

  def und(rec, rng):
    return _image(rec["image"]), "What is the main object in the image?", names[int(rec["label"])]

  return Adapter(source, {"t2i": t2i, "und": und})


# --- COCO captions (tfds coco_captions) -------------------------------------------------------------------------
def coco_captions(source) -> Adapter:
  def caption(rec, rng):
    caps = _texts(rec["captions"]["text"])
    return caps[int(rng.integers(len(caps)))]

  def t2i(rec, rng):
    return _image(rec["image"]), caption(rec, rng)

  def und(rec, rng):
    return _image(rec["image"]), "Describe the image.", caption(rec, rng)

  def text(rec, rng):
    return (caption(rec, rng),)

  return Adapter(source, {"t2i": t2i, "und": und, "text": text})


# --- Generic image-text pairs in ArrayRecord ------------------------------------------------------------------
def pair_kinds(record: dict) -> list[str]:
  """The row kinds a pairs record makes: a caption ("text") makes text-to-image, captioning and text rows; a
  "question" + "answer" makes an understanding row."""
  kinds = ["und"] if "question" in record else []
  return kinds + (["t2i", "text"] + ([] if kinds else ["und"]) if "text" in record else [])


def kinds_index_path(arrayrecord_path: str) -> str:
  """Where `write_pairs` lists which records make which row kinds."""
  return os.fspath(arrayrecord_path) + ".kinds.json"


def write_pairs(jsonl_path: str, out_path: str, image_root: str | None = None) -> int:
  """Converts a JSONL of your own rows into an ArrayRecord file of JSON records with the image bytes inlined (hex),
  plus `<out>.kinds.json` (the records of each row kind). Returns the number of records. Each line is one of
    {"image": "cats/1.png", "text": "a cat on a mat"}                          image-caption pair
    {"image": "cats/1.png", "question": "What animal is it?", "answer": "A cat."}   image-question-answer row
  (both "text" and a question/answer may be on one line). Relative image paths are taken from `image_root`
  (default: the JSONL's folder). A line without an image, without a caption or question/answer, or whose image
  cannot be read raises a ValueError naming the line; nothing is written then. The JSONL, the images and the
  `.kinds.json` may be remote (`gs://...`); `out_path` is where array_record can write.
  """
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  jsonl = paths_lib.resolve(jsonl_path)
  root = paths_lib.resolve(image_root) if image_root else jsonl.parent
  records, kinds = [], {k: [] for k in KINDS}
  with jsonl.open("r") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{jsonl_path}:{lineno}"
      try:
        item = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not a JSON object ({e}).") from None
      if not isinstance(item, dict) or "image" not in item:
        got = sorted(item) if isinstance(item, dict) else item
        raise ValueError(f"{where}: each line needs an 'image' path, got {got!r}.")
      if ("question" in item) != ("answer" in item):
        raise ValueError(f"{where}: 'question' and 'answer' go together; got only one of them.")
      if not pair_kinds(item):
        raise ValueError(f"{where}: each line needs a caption ('text') or a 'question' and an 'answer'.")
      # An absolute local path replaces `root` when joined; a remote one is taken as it is.
      path = paths_lib.resolve(item["image"]) if paths_lib.is_remote(item["image"]) else root / item["image"]
      try:
        data = path.read_bytes()
        _image(data)  # decodable
      except Exception as e:  # pylint: disable=broad-except  # OSError, ValueError, or a remote backend's own error.
        raise ValueError(f"{where}: cannot read image {path}: {e}. Fix the path (relative paths start at "
                         f"{root}) or drop the line.") from None
      for kind in pair_kinds(item):
        kinds[kind].append(len(records))
      records.append(json.dumps(dict({k: v for k, v in item.items() if k != "image"}, image_bytes=data.hex())))
  out_path = paths_lib.resolve(out_path)
  writer = array_record_module.ArrayRecordWriter(os.fspath(out_path), "group_size:1")
  try:
    for record in records:
      writer.write(record.encode())
  finally:
    writer.close()
  paths_lib.resolve(kinds_index_path(out_path)).write_text(json.dumps(kinds))
  return len(records)


class PairsSource:
  """Random access to ArrayRecord file(s) written by `write_pairs`; records decode to {'image': bytes, 'text', ...}.
  `kinds`: the record indices of each row kind (from the `.kinds.json` files; None when a file has none)."""

  def __init__(self, paths: str | Sequence[str]):
    import grain  # pylint: disable=import-outside-toplevel
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    paths = [os.fspath(paths_lib.resolve(p)) for p in paths]
    self._src = grain.sources.ArrayRecordDataSource(paths)
    self.kinds: dict[str, list[int]] | None = {k: [] for k in KINDS}
    offset = 0
    for p in paths:
      n = len(grain.sources.ArrayRecordDataSource([p]))
      index = paths_lib.resolve(kinds_index_path(p))
      if not index.is_file():
        self.kinds = None
      elif self.kinds is not None:
        for kind, idx in json.loads(index.read_text()).items():
          self.kinds[kind].extend(offset + i for i in idx)
      offset += n

  def __len__(self):
    return len(self._src)

  def __getitem__(self, i):
    rec = json.loads(self._src[i])
    rec["image"] = bytes.fromhex(rec.pop("image_bytes"))
    return rec


def pairs(source) -> Adapter:
  def t2i(rec, rng):
    return _image(rec["image"]), rec["text"]

  def und(rec, rng):
    if "question" in rec:
      return _image(rec["image"]), rec["question"], rec["answer"]
    return _image(rec["image"]), "Describe the image.", rec["text"]

  def text(rec, rng):
    return (rec["text"],)

  return Adapter(source, {"t2i": t2i, "und": und, "text": text}, indices=getattr(source, "kinds", None))


# --- From config ------------------------------------------------------------------------------------------------
def tfds_source(name: str, split: str, data_dir: str | None, per_process: bool = False):
  """`tfds.data_source` of an already prepared dataset (random access). Training reads the whole split on every
  process and takes its rows of each global batch by index (`pipeline.ProcessShare`), so it is not split per
  process; `per_process=True` gives this process its `tfds.split_for_jax_process` part instead."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if per_process:
    split = tfds.split_for_jax_process(split)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types for "not prepared"
    raise FileNotFoundError(
        f"TFDS dataset {name!r} (split {split!r}) is not prepared in data_dir={data_dir!r}: {e}. "
        "Fix: prepare it first (for Shapes: `python -m janus_jax.main --mode=prepare ...` or "
        "janus_jax.data.shapes_tfds.prepare_shapes), or point input.data_dir at the prepared copy.") from e


def adapter_from_config(src_cfg, split: str | None = None) -> Adapter:
  """Builds an adapter from one `input.sources` entry: {kind: shapes|imagenet2012|coco_captions|pairs, ...}."""
  kind = src_cfg["kind"]
  split = split or src_cfg.get("split", "train")
  data_dir = src_cfg.get("data_dir")
  if kind == "shapes":
    return shapes(tfds_source(src_cfg.get("tfds_name", "janus_shapes"), split, data_dir),
                  caption_prob=float(src_cfg.get("caption_prob", 0.0)), qa_turns=int(src_cfg.get("qa_turns", 1)),
                  mc_weight=float(src_cfg.get("mc_weight", 1.0)), text_qa_turns=int(src_cfg.get("text_qa_turns", 0)),
                  mc_scaffold=float(src_cfg.get("mc_scaffold", 0.0)),
                  text_letter_drill=bool(src_cfg.get("text_letter_drill", False)))
  if kind == "imagenet2012":
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    return imagenet2012(tfds_source("imagenet2012", split, data_dir), builder.info.features["label"].names)
  if kind == "coco_captions":
    return coco_captions(tfds_source(src_cfg.get("tfds_name", "coco_captions"), split, data_dir))
  if kind == "pairs":
    return pairs(PairsSource(src_cfg["paths"]))
  raise ValueError(f"Unknown input source kind {kind!r}; valid: shapes, imagenet2012, coco_captions, pairs.")
