"""GenEval-style scoring of generated Shapes images, and accuracy of answers to Shapes questions.

    prompts = shapes.geneval_prompts(spec, n_per_category=50, seed=0)
    images = [generate(p["prompt"]) for p in prompts]          # uint8[H, W, 3] or float [-1, 1]
    scores = score_generations(images, prompts, spec)          # {'single_object': 0.9, ..., 'overall': 0.7}

An image passes its prompt when, among the objects `janus_jax.evals.detector.detect` finds, every `include`
requirement has at least `count` objects of its shape (and colour, if given) - with its relation to the
objects of the referenced requirement holding for at least one pair - and every `exclude` requirement has
fewer than `count`. Relations compare fitted object centres with a margin of a quarter cell ("left of": x + margin <
other x; diagonals satisfy both their horizontal and vertical relation). 'overall' is the unweighted mean over
the categories present, as in GenEval. All results are plain floats / ints (JSON-serialisable).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

from janus_jax.data.shapes import CATEGORIES, ShapesSpec
from janus_jax.evals.detector import Detection, detect


def relation_holds(a: Detection, b: Detection, relation: str, margin: float) -> bool:
  """Whether `a` is `relation` ('left of' | 'right of' | 'above' | 'below') `b`."""
  if relation == "left of":
    return a.cx + margin < b.cx
  if relation == "right of":
    return a.cx > b.cx + margin
  if relation == "above":
    return a.cy + margin < b.cy
  if relation == "below":
    return a.cy > b.cy + margin
  raise ValueError(f"Unknown relation {relation!r}; expected 'left of', 'right of', 'above' or 'below'.")


def _matching(detections: Sequence[Detection], req: Mapping) -> list[Detection]:
  return [d for d in detections if d.shape == req["shape"] and (req.get("color") is None or d.color == req["color"])]


def evaluate_detections(detections: Sequence[Detection], meta: Mapping, spec: ShapesSpec) -> bool:
  """Whether detections satisfy one prompt's metadata (see `shapes.geneval_prompts`)."""
  margin = 0.25 * spec.cell_size
  groups = [_matching(detections, req) for req in meta["include"]]
  for req, found in zip(meta["include"], groups):
    if len(found) < req["count"]:
      return False
    if req.get("position"):
      relation, other = req["position"]
      if not any(relation_holds(a, b, relation, margin) for a in found for b in groups[other]):
        return False
  return all(len(_matching(detections, req)) < req["count"] for req in meta.get("exclude", ()))


def score_generations(images, prompt_metadata: Sequence[Mapping], spec: ShapesSpec, *,
                      return_details: bool = False) -> dict:
  """Per-category accuracy and 'overall' (mean over categories) of images against their prompts.

  images: a sequence (or array [N, H, W, 3]) of uint8 or [-1, 1] float images, one per metadata entry (repeat
  an entry to score several samples of one prompt). With `return_details`, 'details' lists per image
  {'prompt', 'category', 'correct', 'detections'}.
  """
  if len(images) != len(prompt_metadata):
    raise ValueError(f"Got {len(images)} images for {len(prompt_metadata)} prompt metadata entries; pass one "
                     "metadata entry per image.")
  correct: dict[str, list[bool]] = {}
  details = []
  for image, meta in zip(images, prompt_metadata):
    detections = detect(np.asarray(image), spec)
    ok = evaluate_detections(detections, meta, spec)
    correct.setdefault(meta["category"], []).append(ok)
    if return_details:
      details.append({"prompt": meta["prompt"], "category": meta["category"], "correct": ok,
                      "detections": [d.to_dict() for d in detections]})
  order = [c for c in CATEGORIES if c in correct] + sorted(c for c in correct if c not in CATEGORIES)
  out: dict = {c: float(np.mean(correct[c])) for c in order}
  out["overall"] = float(np.mean([out[c] for c in order])) if order else 0.0
  out["num_images"] = len(images)
  if return_details:
    out["details"] = details
  return out


# ------------------------------------------------------------------------------------------------
# Understanding.
# ------------------------------------------------------------------------------------------------

_WORD_NUMBERS = {w: str(i) for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
_WORD_NUMBERS["none"] = "0"
_SPELLING = {"grey": "gray", "centre": "center", "colour": "color"}
_LETTER = re.compile(r"^\(?([A-Z])\)?(?:[.:)]|\s|$)")


def normalize_answer(text: str) -> str:
  """Lower-case, trimmed, without trailing punctuation, 'the '/'a '/'an ' prefixes, or US/UK spelling and
  number-word differences: ' Two.' -> '2', 'The top left' -> 'top left', 'grey' -> 'gray'."""
  text = " ".join(str(text).strip().lower().split())
  text = text.rstrip(".!?,;: ").strip()
  for prefix in ("answer:", "the answer is", "the ", "a ", "an "):
    if text.startswith(prefix):
      text = text[len(prefix):].strip()
  words = [_SPELLING.get(w, _WORD_NUMBERS.get(w, w)) for w in text.split()]
  return " ".join(words)


def _choice_letter(prediction: str, choices: Sequence[str]) -> str | None:
  """The option letter a multiple-choice prediction names: 'B', '(B)', 'B. red', or the option text."""
  norm = normalize_answer(prediction)
  for i, choice in enumerate(choices):
    if norm == normalize_answer(choice):
      return chr(ord("A") + i)
  m = _LETTER.match(str(prediction).strip())
  return m.group(1) if m else None


def _as_choices(choices) -> list[str]:
  if isinstance(choices, (bytes, np.bytes_)):
    choices = choices.decode()
  if isinstance(choices, str):
    return choices.split("\n") if choices else []
  return [c.decode() if isinstance(c, bytes) else str(c) for c in choices]


def is_correct(prediction: str, answer: str, choices=()) -> bool:
  """Exact match after normalisation; multiple-choice answers (letters) also accept the option text."""
  choices = _as_choices(choices)
  if choices:
    return _choice_letter(prediction, choices) == answer.strip()
  if len(answer.strip()) == 1 and answer.strip().isupper():  # A letter answer without its choices.
    m = _LETTER.match(str(prediction).strip())
    return bool(m) and m.group(1) == answer.strip()
  return normalize_answer(prediction) == normalize_answer(answer)


def score_understanding(predictions: Sequence[str], answers: Sequence[str], kinds: Sequence[str],
                        choices: Sequence | None = None) -> dict:
  """Accuracy per question kind and 'overall' (over all questions).

  choices: optional per-question options (a list, or the '\\n'-joined string of the dataset; empty for open
  questions); when given, multiple-choice predictions may name the option text instead of its letter, and
  'open' / 'multiple_choice' accuracies are added.
  """
  n = len(predictions)
  if not (len(answers) == len(kinds) == n) or (choices is not None and len(choices) != n):
    raise ValueError(f"predictions ({n}), answers ({len(answers)}), kinds ({len(kinds)})"
                     + ("" if choices is None else f" and choices ({len(choices)})") + " must have equal lengths.")
  per_q = [(_as_choices(choices[i]) if choices is not None else []) for i in range(n)]
  hits = [is_correct(p, a, c) for p, a, c in zip(predictions, answers, per_q)]
  out: dict = {}
  for kind in dict.fromkeys(kinds):
    out[kind] = float(np.mean([h for h, k in zip(hits, kinds) if k == kind]))
  out["overall"] = float(np.mean(hits)) if hits else 0.0
  if choices is not None:
    for name, want in (("open", False), ("multiple_choice", True)):
      sel = [h for h, c in zip(hits, per_q) if bool(c) == want]
      if sel:
        out[name] = float(np.mean(sel))
  out["num_questions"] = n
  return out
