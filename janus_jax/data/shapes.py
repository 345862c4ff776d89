"""Shapes: a procedural image / caption / question-answer dataset, deterministic by seed.

Each scene places `min_objects..max_objects` coloured shapes in distinct cells of a `grid x grid` layout on a
plain background (objects never overlap or touch, so a programmatic detector is exact on clean renders; see
`janus_jax.evals.detector`). Everything is pure numpy and a function of `(seed, spec)`:

    spec = ShapesSpec()                       # 32x32, 2x2 grid, 3 shapes, 6 colours, 2 sizes, 1-4 objects
    ex = make_example(123, spec)              # {'image': uint8[32, 32, 3], 'caption': 'two red circles', ...}

Splits are disjoint by construction: each split draws seeds from its own range (`SPLIT_SEED_OFFSETS`) AND keeps
only scenes whose content hash falls in the split's bucket (`split_of`), so no image (scene) is shared between
train, validation and test. The TFDS builder lives in `janus_jax.data.shapes_tfds`.

Text conventions: captions are lower-case noun phrases without a final period ("a red circle left of a blue
square"); open answers are single words or short phrases ("red", "2", "top left", "yes"); multiple-choice
questions list the options VLMEvalKit-style and their answer is the option letter.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping, Sequence

import numpy as np

# ------------------------------------------------------------------------------------------------
# Vocabulary and spec.
# ------------------------------------------------------------------------------------------------

SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "cross")

# Saturated colours, pairwise >= ~150 apart in RGB and far from dark / grey backgrounds.
COLOR_RGB = {
    "red": (220, 30, 30),
    "green": (40, 170, 40),
    "blue": (30, 70, 230),
    "yellow": (235, 215, 30),
    "purple": (180, 50, 220),
    "cyan": (30, 210, 220),
    "orange": (245, 130, 20),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "black": (10, 10, 10),
}

KINDS = ("colour", "shape", "count", "position")
RELATIONS = ("left of", "right of", "above", "below")
CATEGORIES = ("single_object", "two_objects", "counting", "colors", "position", "color_attr")
MC_SUFFIX = "Answer with the option's letter from the given choices directly."
SPLIT_SEED_OFFSETS = {"train": 0, "validation": 1_000_000_000, "test": 2_000_000_000}
# Fraction of scene-content hash buckets (out of 1000) per split.
SPLIT_BUCKETS = {"train": (0, 900), "validation": (900, 950), "test": (950, 1000)}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen")


@dataclasses.dataclass(frozen=True)
class ShapesSpec:
  """What a Shapes scene may contain and how it is drawn.

  image_size: side of the square image in pixels (cells may be fractional: 64 px on a 3x3 grid is fine).
  grid: objects sit in distinct cells of a `grid x grid` layout (one object per cell).
  shapes / colors: vocabulary (names from `SHAPE_NAMES` / `COLOR_RGB`, or any colour names with `palette`).
  sizes: object extent (bounding-box side) as a fraction of the cell side, one per name in `size_names`.
  min_objects / max_objects: objects per scene (<= grid**2).
  background: RGB of the plain background.
  jitter: max offset of an object's centre from its cell centre, as a fraction of the cell side (rounded
    down to whole pixels).
  antialias: supersampling factor per axis (1 = hard edges).
  repeat_prob: chance that an object copies the shape and colour of an earlier one (so "two red circles"
    style counts appear often).
  palette: RGB per entry of `colors`; None looks the names up in `COLOR_RGB`.
  """
  image_size: int = 32
  grid: int = 2
  shapes: tuple[str, ...] = ("circle", "square", "triangle")
  colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "cyan")
  sizes: tuple[float, ...] = (0.5, 0.8)
  size_names: tuple[str, ...] = ("small", "large")
  min_objects: int = 1
  max_objects: int = 4
  background: tuple[int, int, int] = (24, 24, 24)
  jitter: float = 0.0
  antialias: int = 4
  repeat_prob: float = 0.5
  palette: tuple[tuple[int, int, int], ...] | None = None

  def __post_init__(self):
    def fail(msg):
      raise ValueError(f"Invalid ShapesSpec: {msg}")
    if self.grid < 1 or self.image_size < self.grid:
      fail(f"need image_size ({self.image_size}) >= grid ({self.grid}) >= 1.")
    unknown = [s for s in self.shapes if s not in SHAPE_NAMES]
    if unknown or len(set(self.shapes)) != len(self.shapes) or not self.shapes:
      fail(f"shapes={self.shapes} must be distinct names from {SHAPE_NAMES}.")
    if len(set(self.colors)) != len(self.colors) or not self.colors:
      fail(f"colors={self.colors} must be distinct, non-empty.")
    if self.palette is None:
      missing = [c for c in self.colors if c not in COLOR_RGB]
      if missing:
        fail(f"colours {missing} have no built-in RGB; pass `palette` or use names from {sorted(COLOR_RGB)}.")
    elif len(self.palette) != len(self.colors):
      fail(f"palette has {len(self.palette)} entries for {len(self.colors)} colors.")
    if len(self.sizes) != len(self.size_names) or not self.sizes or list(self.sizes) != sorted(set(self.sizes)):
      fail(f"sizes={self.sizes} must be strictly increasing with one name each (size_names={self.size_names}).")
    cell = self.cell_size
    gap = cell * (1.0 - self.sizes[-1]) - 2.0 * self.max_jitter_px
    if gap < 2.0:
      fail(f"objects in neighbouring cells would be {gap:.1f}px apart (< 2px); lower sizes[-1] or jitter, or "
           "raise image_size.")
    if self.sizes[0] * cell < 5.0:
      fail(f"smallest object is {self.sizes[0] * cell:.1f}px (< 5px), too small to recognise; raise image_size "
           "or sizes[0].")
    if not 1 <= self.min_objects <= self.max_objects <= self.grid ** 2:
      fail(f"need 1 <= min_objects ({self.min_objects}) <= max_objects ({self.max_objects}) <= grid**2.")
    if self.max_objects >= len(_NUMBER_WORDS):
      fail(f"max_objects={self.max_objects} exceeds the number words available ({len(_NUMBER_WORDS) - 1}).")
    if self.antialias < 1:
      fail("antialias must be >= 1.")
    rgbs = [tuple(self.background)] + [self.rgb(c) for c in self.colors]
    if len(set(rgbs)) != len(rgbs):
      fail("background and colours must all have distinct RGB values.")

  @classmethod
  def from_dict(cls, values: Mapping[str, Any] | None) -> "ShapesSpec":
    """Builds a spec from a (config) mapping; lists become tuples; unknown keys are named in the error."""
    values = dict(values or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
      raise ValueError(f"Unknown ShapesSpec key(s) {unknown}; valid keys: {sorted(fields)}.")
    for k, v in list(values.items()):
      if isinstance(v, list):
        values[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    return cls(**values)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @property
  def cell_size(self) -> float:
    return self.image_size / self.grid

  def rgb(self, color: str) -> tuple[int, int, int]:
    if self.palette is not None:
      return tuple(self.palette[self.colors.index(color)])
    return COLOR_RGB[color]

  def size_px(self, size: str) -> float:
    """Nominal bounding-box side of an object of size `size` (a name in `size_names`)."""
    return self.sizes[self.size_names.index(size)] * self.cell_size

  @property
  def max_jitter_px(self) -> int:
    return int(np.floor(self.jitter * self.cell_size))


# ------------------------------------------------------------------------------------------------
# Scenes.
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SceneObject:
  """One object: vocabulary names, its grid cell and its pixel offset from the cell centre."""
  shape: str
  color: str
  size: str
  row: int
  col: int
  dx: int = 0
  dy: int = 0


@dataclasses.dataclass(frozen=True)
class Scene:
  """Objects in reading order (row-major by cell); `grid` is the layout they live on."""
  objects: tuple[SceneObject, ...]
  grid: int

  def key(self) -> str:
    """Canonical content string (equal keys <=> equal renders for a given spec)."""
    return f"g{self.grid}|" + ";".join(
        f"{o.shape},{o.color},{o.size},{o.row},{o.col},{o.dx},{o.dy}" for o in self.objects)


def _make_scene(objects: Sequence[SceneObject], grid: int) -> Scene:
  return Scene(tuple(sorted(objects, key=lambda o: (o.row, o.col))), grid)


def _jitter(rng: np.random.Generator, spec: ShapesSpec) -> tuple[int, int]:
  j = spec.max_jitter_px
  if j == 0:
    return 0, 0
  dx, dy = rng.integers(-j, j + 1, size=2)
  return int(dx), int(dy)


def sample_scene(rng: np.random.Generator, spec: ShapesSpec) -> Scene:
  """A random scene: n ~ U{min_objects..max_objects} objects in distinct cells.

  With probability `repeat_prob` an object copies the shape and colour of an earlier one; sizes are
  always independent.
  """
  n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
  cells = rng.choice(spec.grid ** 2, size=n, replace=False)
  objects: list[SceneObject] = []
  for cell in cells:
    if objects and rng.random() < spec.repeat_prob:
      proto = objects[int(rng.integers(len(objects)))]
      shape, color = proto.shape, proto.color
    else:
      shape = spec.shapes[int(rng.integers(len(spec.shapes)))]
      color = spec.colors[int(rng.integers(len(spec.colors)))]
    size = spec.size_names[int(rng.integers(len(spec.size_names)))]
    dx, dy = _jitter(rng, spec)
    objects.append(SceneObject(shape, color, size, int(cell) // spec.grid, int(cell) % spec.grid, dx, dy))
  return _make_scene(objects, spec.grid)


def scene_for_seed(seed: int, spec: ShapesSpec) -> Scene:
  """The scene of `make_example(seed, spec)` (its first use of the seed's generator)."""
  return sample_scene(np.random.default_rng(seed), spec)


def split_of(scene: Scene) -> str:
  """'train' | 'validation' | 'test' from a stable hash of the scene content (90 / 5 / 5 %)."""
  bucket = int(hashlib.sha256(scene.key().encode()).hexdigest()[:12], 16) % 1000
  for split, (lo, hi) in SPLIT_BUCKETS.items():
    if lo <= bucket < hi:
      return split
  raise AssertionError(bucket)


def split_seeds(split: str, num: int, spec: ShapesSpec):
  """Yields the first `num` seeds of `split`: seeds from the split's range whose scene hashes into it."""
  if split not in SPLIT_SEED_OFFSETS:
    raise ValueError(f"Unknown split {split!r}; expected one of {sorted(SPLIT_SEED_OFFSETS)}.")
  seed, found = SPLIT_SEED_OFFSETS[split], 0
  limit = seed + 500_000_000
  while found < num:
    if seed >= limit:
      raise ValueError(f"Split {split!r} ran out of seeds; ask for fewer than {num} examples.")
    if split_of(scene_for_seed(seed, spec)) == split:
      found += 1
      yield seed
    seed += 1


# ------------------------------------------------------------------------------------------------
# Rendering.
# ------------------------------------------------------------------------------------------------


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """bool mask of `shape` at normalised coordinates u (x, right) and v (y, down), box [-1, 1]^2.

  Every shape touches all four sides of the box (so an object's bounding box is its size).
  """
  if shape == "circle":
    return u * u + v * v <= 1.0
  if shape == "square":
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
  if shape == "triangle":  # Apex up, base at the bottom.
    return (v >= -1.0) & (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
  if shape == "diamond":
    return np.abs(u) + np.abs(v) <= 1.0
  if shape == "cross":
    inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    return inside & ((np.abs(u) <= 1.0 / 3.0) | (np.abs(v) <= 1.0 / 3.0))
  raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPE_NAMES}.")


def coverage(shape: str, cx: float, cy: float, half: float, x0: int, y0: int, w: int, h: int,
             antialias: int) -> np.ndarray:
  """float32[h, w] fraction of each pixel of the window at (x0, y0) covered by `shape`.

  The shape is centred at pixel coordinates (cx, cy) (pixel (i, j) spans [j, j+1) x [i, i+1)) with
  half-extent `half`; coverage is estimated with `antialias**2` samples per pixel.
  """
  s = antialias
  xs = x0 + (np.arange(w * s, dtype=np.float64) + 0.5) / s
  ys = y0 + (np.arange(h * s, dtype=np.float64) + 0.5) / s
  m = shape_mask(shape, ((xs - cx) / half)[None, :], ((ys - cy) / half)[:, None])
  return m.reshape(h, s, w, s).mean(axis=(1, 3), dtype=np.float32)


def object_center(obj: SceneObject, spec: ShapesSpec) -> tuple[float, float]:
  """Pixel coordinates (x, y) of an object's centre."""
  cell = spec.cell_size
  return (obj.col + 0.5) * cell + obj.dx, (obj.row + 0.5) * cell + obj.dy


def render(scene: Scene, spec: ShapesSpec) -> np.ndarray:
  """uint8[H, W, 3]: the scene drawn over the background (pure numpy, deterministic)."""
  if scene.grid != spec.grid:
    raise ValueError(f"Scene has grid {scene.grid} but spec.grid is {spec.grid}.")
  size = spec.image_size
  img = np.empty((size, size, 3), np.float32)
  img[:] = np.asarray(spec.background, np.float32)
  for obj in scene.objects:
    cx, cy = object_center(obj, spec)
    half = spec.size_px(obj.size) / 2.0
    x0, y0 = max(int(np.floor(cx - half)), 0), max(int(np.floor(cy - half)), 0)
    x1, y1 = min(int(np.ceil(cx + half)), size), min(int(np.ceil(cy + half)), size)
    cov = coverage(obj.shape, cx, cy, half, x0, y0, x1 - x0, y1 - y0, spec.antialias)[..., None]
    rgb = np.asarray(spec.rgb(obj.color), np.float32)
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1.0 - cov) + rgb * cov
  return np.clip(np.round(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Language helpers.
# ------------------------------------------------------------------------------------------------


def plural(shape: str) -> str:
  return shape + ("es" if shape.endswith(("s", "x", "ch", "sh")) else "s")


def noun_phrase(count: int, shape: str, color: str | None = None, size: str | None = None) -> str:
  """'a red circle', 'an orange square', 'two small circles'."""
  words = [w for w in (size, color) if w]
  noun = shape if count == 1 else plural(shape)
  head = " ".join(words + [noun])
  if count == 1:
    return ("an " if head[0] in "aeiou" else "a ") + head
  return f"{_NUMBER_WORDS[count]} {head}"


def join_phrases(parts: Sequence[str]) -> str:
  """'x', 'x and y', 'x, y and z'."""
  parts = list(parts)
  if len(parts) == 1:
    return parts[0]
  return ", ".join(parts[:-1]) + " and " + parts[-1]


def cell_phrase(row: int, col: int, grid: int) -> str:
  """'top left', 'center', 'middle right' (grid <= 3), else 'row 2 column 4'."""
  if grid == 1:
    return "center"
  if grid == 2:
    return f"{('top', 'bottom')[row]} {('left', 'right')[col]}"
  if grid == 3:
    r, c = ("top", "middle", "bottom")[row], ("left", "middle", "right")[col]
    return "center" if r == c == "middle" else f"{r} {c}"
  return f"row {row + 1} column {col + 1}"


def in_cell(row: int, col: int, grid: int) -> str:
  """'in the top left' / 'at row 2 column 4'."""
  return ("at " if grid > 3 else "in the ") + cell_phrase(row, col, grid)


def relations_between(a: SceneObject, b: SceneObject) -> list[str]:
  """All of RELATIONS that hold for `a` relative to `b`, from their grid cells."""
  rels = []
  if a.col < b.col:
    rels.append("left of")
  if a.col > b.col:
    rels.append("right of")
  if a.row < b.row:
    rels.append("above")
  if a.row > b.row:
    rels.append("below")
  return rels


# ------------------------------------------------------------------------------------------------
# Captions.
# ------------------------------------------------------------------------------------------------


def _groups(scene: Scene, with_color: bool) -> list[tuple[int, str, str | None]]:
  """(count, shape, colour or None) groups in order of first appearance."""
  counts: dict[tuple[str, str | None], int] = {}
  for o in scene.objects:
    k = (o.shape, o.color if with_color else None)
    counts[k] = counts.get(k, 0) + 1
  return [(n, shape, color) for (shape, color), n in counts.items()]


def _count_captions(scene: Scene, with_color: bool) -> list[str]:
  return [join_phrases([noun_phrase(n, s, c) for n, s, c in _groups(scene, with_color)])]


def _relation_captions(scene: Scene, with_color: bool) -> list[str]:
  """'a red circle left of a blue square' (both orders, each holding relation); two-object scenes only."""
  if len(scene.objects) != 2:
    return []
  a, b = scene.objects
  if (a.shape, a.color if with_color else None) == (b.shape, b.color if with_color else None):
    return []
  out = []
  for x, y in ((a, b), (b, a)):
    for rel in relations_between(x, y):
      out.append(f"{noun_phrase(1, x.shape, x.color if with_color else None)} {rel} "
                 f"{noun_phrase(1, y.shape, y.color if with_color else None)}")
  return out


def _layout_captions(scene: Scene) -> list[str]:
  return [join_phrases([f"{noun_phrase(1, o.shape, o.color, o.size)} {in_cell(o.row, o.col, scene.grid)}"
                        for o in scene.objects])]


def all_captions(scene: Scene) -> list[str]:
  """Every canonical caption of the scene (deterministic; `caption` draws from these)."""
  out = (_count_captions(scene, True) + _count_captions(scene, False) + _relation_captions(scene, True)
         + _relation_captions(scene, False) + _layout_captions(scene))
  return list(dict.fromkeys(out))


def caption(scene: Scene, rng: np.random.Generator) -> str:
  """One natural caption: counts ('two red circles and a blue square'), a relation ('a red circle left of a
  blue square', two-object scenes) or a layout ('a small red circle in the top left and ...').

  Two-object scenes get a relation half of the time; count and relation captions drop colours a quarter of
  the time ('two circles and a square').
  """
  families = [lambda c: _count_captions(scene, c), lambda c: _layout_captions(scene)]
  if _relation_captions(scene, True):  # Two distinguishable objects: half of the captions are relations.
    families += [lambda c: _relation_captions(scene, c)] * 2
  family = families[int(rng.integers(len(families)))]
  with_color = rng.random() >= 0.25
  options = family(with_color) or family(True)
  return options[int(rng.integers(len(options)))]


# ------------------------------------------------------------------------------------------------
# Questions and answers.
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class QA:
  """A question about a scene. Open questions have no choices; multiple-choice ones list the choices in the
  question text and their answer is the option letter ("A", "B", ...)."""
  question: str
  answer: str
  kind: str  # One of KINDS.
  choices: tuple[str, ...] = ()


def _pick(rng: np.random.Generator, items: Sequence):
  return items[int(rng.integers(len(items)))]


def _colour_question(scene: Scene, rng, spec: ShapesSpec):
  o = _pick(rng, scene.objects)
  if [p.shape for p in scene.objects].count(o.shape) == 1 and rng.random() < 0.5:
    q = f"What color is the {o.shape}?"
  else:
    q = f"What color is the {o.shape} {in_cell(o.row, o.col, scene.grid)}?"
  return q, o.color, _vocab(spec.colors, [p.color for p in scene.objects])


def _shape_question(scene: Scene, rng, spec: ShapesSpec):
  o = _pick(rng, scene.objects)
  if [p.color for p in scene.objects].count(o.color) == 1 and rng.random() < 0.5:
    q = f"What shape is the {o.color} object?"
  else:
    q = f"What shape is the object {in_cell(o.row, o.col, scene.grid)}?"
  return q, o.shape, _vocab(spec.shapes, [p.shape for p in scene.objects])


def _count_question(scene: Scene, rng, spec: ShapesSpec):
  mode = _pick(rng, ("all", "shape", "color", "color_shape"))
  ref = _pick(rng, scene.objects)
  shape = ref.shape if rng.random() < 0.7 else _pick(rng, spec.shapes)
  color = ref.color if rng.random() < 0.7 else _pick(rng, spec.colors)
  if mode == "all":
    q, n = "How many objects are there?", len(scene.objects)
  elif mode == "shape":
    q, n = f"How many {plural(shape)} are there?", sum(o.shape == shape for o in scene.objects)
  elif mode == "color":
    q, n = f"How many {color} objects are there?", sum(o.color == color for o in scene.objects)
  else:
    q = f"How many {color} {plural(shape)} are there?"
    n = sum(o.color == color and o.shape == shape for o in scene.objects)
  return q, str(n), [str(i) for i in range(spec.max_objects + 1)]


def _position_question(scene: Scene, rng, spec: ShapesSpec):
  objs, grid = scene.objects, scene.grid
  kinds = [(o.shape, o.color) for o in objs]
  unique = [o for o in objs if kinds.count((o.shape, o.color)) == 1]
  pairs = [(a, b) for a in unique for b in unique if a is not b]
  modes = ["exists"] + (["where"] if unique else []) + (["relation"] if pairs else [])
  mode = _pick(rng, modes)
  if mode == "where":
    o = _pick(rng, unique)
    cells = [cell_phrase(r, c, grid) for r in range(grid) for c in range(grid)]
    return f"Where is the {o.color} {o.shape}?", cell_phrase(o.row, o.col, grid), cells
  if mode == "relation":
    a, b = _pick(rng, pairs)
    axes = ([("left of", "right of")] if a.col != b.col else []) + ([("above", "below")] if a.row != b.row else [])
    rel = _pick(rng, _pick(rng, axes))
    answer = "yes" if rel in relations_between(a, b) else "no"
    return f"Is the {a.color} {a.shape} {rel} the {b.color} {b.shape}?", answer, ["yes", "no"]
  # Half the time about a real object; otherwise one attribute (shape, colour or cell) changed.
  ref = _pick(rng, objs)
  shape, color, row, col = ref.shape, ref.color, ref.row, ref.col
  if rng.random() < 0.5:
    attribute = _pick(rng, ("shape", "color", "cell"))
    if attribute == "shape" and len(spec.shapes) > 1:
      shape = _pick(rng, [x for x in spec.shapes if x != ref.shape])
    elif attribute == "color" and len(spec.colors) > 1:
      color = _pick(rng, [x for x in spec.colors if x != ref.color])
    elif grid > 1:
      row, col = _pick(rng, [divmod(c, grid) for c in range(grid * grid) if divmod(c, grid) != (ref.row, ref.col)])
  present = any(o.shape == shape and o.color == color and (o.row, o.col) == (row, col) for o in objs)
  q = f"Is there {noun_phrase(1, shape, color)} {in_cell(row, col, grid)}?"
  return q, "yes" if present else "no", ["yes", "no"]


_QUESTION_MAKERS = {"colour": _colour_question, "shape": _shape_question, "count": _count_question,
                    "position": _position_question}


def _vocab(names: Sequence[str], extra: Sequence[str]) -> list[str]:
  return list(dict.fromkeys(list(names) + list(extra)))


def multiple_choice(question: str, answer: str, vocab: Sequence[str], rng: np.random.Generator,
                    num_choices: int = 4) -> tuple[str, str, tuple[str, ...]]:
  """(question with lettered options, answer letter, choices); the options are the answer plus distractors
  from `vocab`, shuffled."""
  distractors = [v for v in vocab if v != answer]
  k = min(num_choices - 1, len(distractors))
  picked = [distractors[i] for i in rng.choice(len(distractors), size=k, replace=False)] if k else []
  choices = [answer] + picked
  choices = [choices[i] for i in rng.permutation(len(choices))]
  letters = [chr(ord("A") + i) for i in range(len(choices))]
  lines = "\n".join(f"{l}. {c}" for l, c in zip(letters, choices))
  return f"{question}\n{lines}\n{MC_SUFFIX}", letters[choices.index(answer)], tuple(choices)


def questions(scene: Scene, rng: np.random.Generator, spec: ShapesSpec | None = None) -> list[QA]:
  """Eight QAs: for each kind in KINDS, one open question and one multiple-choice question.

  `spec` supplies the vocabulary for distractors and count ranges (default: `ShapesSpec()`).
  """
  if spec is None:
    g = scene.grid
    spec = ShapesSpec(image_size=32 * g, grid=g, max_objects=max(len(scene.objects), min(4, g * g)))
  out = []
  for kind in KINDS:
    q, a, _ = _QUESTION_MAKERS[kind](scene, rng, spec)
    out.append(QA(q, a, kind))
    q, a, vocab = _QUESTION_MAKERS[kind](scene, rng, spec)
    q, a, choices = multiple_choice(q, a, vocab, rng)
    out.append(QA(q, a, kind, choices))
  return out


def split_choices(joined: str) -> list[str]:
  """Inverse of the '\\n'-joined `choices` field of `make_example` / the TFDS records."""
  return joined.split("\n") if joined else []


# ------------------------------------------------------------------------------------------------
# Examples.
# ------------------------------------------------------------------------------------------------


# The instruction of captioning understanding rows (answer: the layout caption, see `all_captions`).
DESCRIBE_PROMPT = "Describe the image."


def make_example(seed: int, spec: ShapesSpec) -> dict:
  """The example for `seed` (deterministic; the same dict layout the TFDS builder stores).

  Returns {'seed': int, 'image': uint8[H, W, 3], 'caption': str, 'captions': list[str] (all canonical
  captions), 'objects': {'shape', 'color', 'size': list[str], 'row', 'col': list[int]},
  'qa': {'question', 'answer', 'kind': list[str], 'choices': list[str] ('\\n'-joined options, '' if open)}}.
  """
  if seed < 0:
    raise ValueError(f"seed must be non-negative, got {seed}.")
  rng = np.random.default_rng(seed)
  scene = sample_scene(rng, spec)
  cap = caption(scene, rng)
  qas = questions(scene, rng, spec)
  return {
      "seed": int(seed),
      "image": render(scene, spec),
      "caption": cap,
      "captions": all_captions(scene),
      "objects": {
          "shape": [o.shape for o in scene.objects],
          "color": [o.color for o in scene.objects],
          "size": [o.size for o in scene.objects],
          "row": [o.row for o in scene.objects],
          "col": [o.col for o in scene.objects],
      },
      "qa": {
          "question": [x.question for x in qas],
          "answer": [x.answer for x in qas],
          "kind": [x.kind for x in qas],
          "choices": ["\n".join(x.choices) for x in qas],
      },
  }


# ------------------------------------------------------------------------------------------------
# GenEval-style evaluation prompts.
# ------------------------------------------------------------------------------------------------


def _req(shape: str, count: int = 1, color: str | None = None, position: list | None = None) -> dict:
  return {"shape": shape, "color": color, "count": count, "position": position}


def geneval_prompts(spec: ShapesSpec, n_per_category: int, seed: int = 0) -> list[dict]:
  """Text-to-image evaluation prompts in the six GenEval categories, phrased like the training captions.

  Each dict: {'category', 'prompt', 'include': [req], 'exclude': [req]} with req = {'shape', 'color' (None =
  any), 'count', 'position' (None or [relation, index of the include it is relative to])}. An image passes
  when every include has at least `count` matching detections (and the relation holds) and every exclude
  has fewer than `count` matching detections (GenEval semantics).
  """
  if len(spec.shapes) < 2 or len(spec.colors) < 2 or spec.max_objects < 2:
    raise ValueError("geneval_prompts needs >= 2 shapes, >= 2 colours and max_objects >= 2.")
  rng = np.random.default_rng(seed)
  out = []
  max_count = min(4, spec.max_objects)
  for category in CATEGORIES:
    for _ in range(n_per_category):
      s1, s2 = (spec.shapes[i] for i in rng.choice(len(spec.shapes), size=2, replace=False))
      c1, c2 = (spec.colors[i] for i in rng.choice(len(spec.colors), size=2, replace=False))
      if category == "single_object":
        prompt, include, exclude = noun_phrase(1, s1), [_req(s1)], []
      elif category == "two_objects":
        prompt, include, exclude = join_phrases([noun_phrase(1, s1), noun_phrase(1, s2)]), [_req(s1), _req(s2)], []
      elif category == "counting":
        n = int(rng.integers(2, max_count + 1))
        prompt, include, exclude = noun_phrase(n, s1), [_req(s1, n)], [_req(s1, n + 1)]
      elif category == "colors":
        prompt, include, exclude = noun_phrase(1, s1, c1), [_req(s1, color=c1)], []
      elif category == "position":
        rel = _pick(rng, RELATIONS)
        prompt = f"{noun_phrase(1, s1)} {rel} {noun_phrase(1, s2)}"
        include, exclude = [_req(s2), _req(s1, position=[rel, 0])], []
      else:  # color_attr
        prompt = join_phrases([noun_phrase(1, s1, c1), noun_phrase(1, s2, c2)])
        include, exclude = [_req(s1, color=c1), _req(s2, color=c2)], []
      out.append({"category": category, "prompt": prompt, "include": include, "exclude": exclude})
  return out


def scene_for_prompt(meta: Mapping, rng: np.random.Generator, spec: ShapesSpec) -> Scene:
  """A ground-truth scene satisfying `meta` from `geneval_prompts` (exactly the required objects;
  unconstrained colours and all sizes random)."""
  include = list(meta["include"])
  needed = sum(r["count"] for r in include)
  if needed > spec.grid ** 2:
    raise ValueError(f"Prompt {meta['prompt']!r} needs {needed} objects but the grid has {spec.grid ** 2} cells.")
  cells = [divmod(int(c), spec.grid) for c in rng.permutation(spec.grid ** 2)]
  placed: dict[int, tuple[int, int]] = {}
  for i, r in enumerate(include):
    if r.get("position"):
      rel, j = r["position"]
      probe_a, probe_b = SceneObject("", "", "", 0, 0), SceneObject("", "", "", 0, 0)
      valid = [(ca, cb) for ca in cells for cb in cells if ca != cb and rel in relations_between(
          dataclasses.replace(probe_a, row=ca[0], col=ca[1]), dataclasses.replace(probe_b, row=cb[0], col=cb[1]))]
      if not valid:
        raise ValueError(f"No cells satisfy {rel!r} on a {spec.grid}x{spec.grid} grid.")
      ca, cb = valid[int(rng.integers(len(valid)))]
      placed[i], placed[j] = ca, cb
  free = [c for c in cells if c not in placed.values()]
  objects = []
  for i, r in enumerate(include):
    for k in range(r["count"]):
      cell = placed[i] if (i in placed and k == 0) else free.pop()
      color = r.get("color") or _pick(rng, spec.colors)
      size = _pick(rng, spec.size_names)
      dx, dy = _jitter(rng, spec)
      objects.append(SceneObject(r["shape"], color, size, cell[0], cell[1], dx, dy))
  return _make_scene(objects, spec.grid)
