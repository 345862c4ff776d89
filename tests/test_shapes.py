"""Shapes dataset, its TFDS builder, the programmatic detector and GenEval / understanding scoring."""
import collections
import hashlib
import re

import numpy as np
import pytest
from scipy import ndimage

from janus_jax.data import shapes
from janus_jax.data.shapes import ShapesSpec
from janus_jax.evals import detector, geneval

SPEC = ShapesSpec()
RICH = ShapesSpec(image_size=64, grid=3, shapes=shapes.SHAPE_NAMES, jitter=0.05, max_objects=6)


def _digest(image):
  return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def _degrade(image, seed, blur=0.8, noise=15.0):
  x = ndimage.gaussian_filter(image.astype(np.float32), sigma=(blur, blur, 0))
  x = x + np.random.default_rng(seed).normal(0.0, noise, x.shape)
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# Dataset.
# ------------------------------------------------------------------------------------------------


def test_make_example_is_deterministic_and_seeds_differ():
  a, b = shapes.make_example(7, SPEC), shapes.make_example(7, SPEC)
  assert a["image"].shape == (32, 32, 3) and a["image"].dtype == np.uint8
  np.testing.assert_array_equal(a["image"], b["image"])
  assert {k: v for k, v in a.items() if k != "image"} == {k: v for k, v in b.items() if k != "image"}
  examples = [shapes.make_example(s, SPEC) for s in range(40)]
  assert len({_digest(e["image"]) for e in examples}) >= 30
  assert len({e["caption"] for e in examples}) >= 30
  counts = collections.Counter(len(e["objects"]["shape"]) for e in examples)
  assert set(counts) == {1, 2, 3, 4}


def test_splits_are_disjoint_in_seeds_and_images():
  seeds = {s: list(shapes.split_seeds(s, n, SPEC)) for s, n in (("train", 400), ("validation", 40), ("test", 40))}
  assert all(len(v) == len(set(v)) for v in seeds.values())
  for split, split_seeds in seeds.items():
    assert all(shapes.split_of(shapes.scene_for_seed(s, SPEC)) == split for s in split_seeds)
  keys = {s: {shapes.scene_for_seed(x, SPEC).key() for x in v} for s, v in seeds.items()}
  images = {s: {_digest(shapes.make_example(x, SPEC)["image"]) for x in v} for s, v in seeds.items()}
  for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
    assert not set(seeds[a]) & set(seeds[b])
    assert not keys[a] & keys[b]
    assert not images[a] & images[b]


def test_spec_validation_and_dict_round_trip():
  assert ShapesSpec.from_dict(RICH.to_dict()) == RICH
  with pytest.raises(ValueError, match="shapes"):
    ShapesSpec(shapes=("circle", "hexagon"))
  with pytest.raises(ValueError, match="apart"):
    ShapesSpec(sizes=(0.5, 0.95))
  with pytest.raises(ValueError, match="max_objects"):
    ShapesSpec(max_objects=5)
  with pytest.raises(ValueError, match="Unknown ShapesSpec key"):
    ShapesSpec.from_dict({"resolution": 64})


# An oracle for the question templates, computed from the scene alone.
def _cell_of(phrase, grid):
  for r in range(grid):
    for c in range(grid):
      if shapes.cell_phrase(r, c, grid) == phrase:
        return r, c
  raise AssertionError(phrase)


def _oracle(question, scene):
  objs, grid = scene.objects, scene.grid
  plural = {shapes.plural(s): s for s in shapes.SHAPE_NAMES}
  shape_re = "|".join(shapes.SHAPE_NAMES)
  if question == "How many objects are there?":
    return str(len(objs))
  if m := re.fullmatch(r"How many (?:(\w+) )?(\w+) are there\?", question):
    color, noun = m.groups()
    if noun == "objects":
      return str(sum(o.color == color for o in objs))
    return str(sum(o.shape == plural[noun] and color in (None, o.color) for o in objs))
  if m := re.fullmatch(rf"What color is the ({shape_re})(?: in the (.+))?\?", question):
    shape, cell = m.groups()
    found = [o for o in objs if o.shape == shape and (cell is None or (o.row, o.col) == _cell_of(cell, grid))]
    assert len(found) == 1
    return found[0].color
  if m := re.fullmatch(r"What shape is the (\w+) object\?", question):
    (found,) = [o for o in objs if o.color == m.group(1)]
    return found.shape
  if m := re.fullmatch(r"What shape is the object in the (.+)\?", question):
    (found,) = [o for o in objs if (o.row, o.col) == _cell_of(m.group(1), grid)]
    return found.shape
  if m := re.fullmatch(r"Where is the (\w+) (\w+)\?", question):
    (found,) = [o for o in objs if (o.color, o.shape) == m.groups()]
    return shapes.cell_phrase(found.row, found.col, grid)
  if m := re.fullmatch(r"Is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+)\?", question):
    c1, s1, rel, c2, s2 = m.groups()
    (a,) = [o for o in objs if (o.color, o.shape) == (c1, s1)]
    (b,) = [o for o in objs if (o.color, o.shape) == (c2, s2)]
    holds = {"left of": a.col < b.col, "right of": a.col > b.col, "above": a.row < b.row, "below": a.row > b.row}
    return "yes" if holds[rel] else "no"
  if m := re.fullmatch(r"Is there an? (\w+) (\w+) in the (.+)\?", question):
    color, shape, cell = m.groups()
    rc = _cell_of(cell, grid)
    return "yes" if any((o.color, o.shape, (o.row, o.col)) == (color, shape, rc) for o in objs) else "no"
  raise AssertionError(f"No oracle for {question!r}")


def _parse_counts(text):
  """{(shape, colour or None): count} from a count caption like 'two red circles and a square'."""
  words = {w: i for i, w in enumerate(shapes._NUMBER_WORDS)}
  words.update(a=1, an=1)
  plural = {shapes.plural(s): s for s in shapes.SHAPE_NAMES}
  out = collections.Counter()
  for part in re.split(r", | and ", text):
    tokens = part.split()
    noun = plural.get(tokens[-1], tokens[-1])
    out[(noun, tokens[1] if len(tokens) == 3 else None)] += words[tokens[0]]
  return out


@pytest.mark.parametrize("spec", [SPEC, RICH], ids=["default", "rich"])
def test_questions_and_captions_match_the_scene(spec):
  kinds = collections.Counter()
  for seed in range(150):
    ex = shapes.make_example(seed, spec)
    scene = shapes.scene_for_seed(seed, spec)
    assert ex["objects"]["shape"] == [o.shape for o in scene.objects]
    qa = ex["qa"]
    assert len(qa["question"]) == 2 * len(shapes.KINDS)
    for q, a, kind, choices in zip(qa["question"], qa["answer"], qa["kind"], qa["choices"]):
      kinds[kind] += 1
      options = shapes.split_choices(choices)
      if options:
        stem, *lines = q.split("\n")
        assert lines[-1] == shapes.MC_SUFFIX
        assert lines[:-1] == [f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(options)]
        assert len(set(options)) == len(options)
        assert options[ord(a) - ord("A")] == _oracle(stem, scene)
      else:
        assert a == _oracle(q, scene), q
    assert ex["caption"] in ex["captions"]
    truth = collections.Counter((o.shape, o.color) for o in scene.objects)
    assert _parse_counts(ex["captions"][0]) == truth
    assert _parse_counts(ex["captions"][1]) == collections.Counter((o.shape, None) for o in scene.objects)
    layout = ex["captions"][-1]
    for o in scene.objects:
      assert f"{o.size} {o.color} {o.shape} {shapes.in_cell(o.row, o.col, spec.grid)}" in layout
    for cap in ex["captions"][2:-1]:  # Relation captions (two-object scenes).
      a, b = scene.objects
      m = re.fullmatch(r"an? (?:(\w+) )?(\w+) (left of|right of|above|below) an? (?:(\w+) )?(\w+)", cap)
      c1, s1, rel, c2, s2 = m.groups()
      x, y = (a, b) if (a.shape, a.color if c1 else None) == (s1, c1) else (b, a)
      assert rel in shapes.relations_between(x, y)
  assert set(kinds) == set(shapes.KINDS)


# ------------------------------------------------------------------------------------------------
# TFDS builder.
# ------------------------------------------------------------------------------------------------


def test_tfds_builder_writes_array_record_readable_by_data_source(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  from janus_jax.data import shapes_tfds
  builder = shapes_tfds.prepare_shapes(str(tmp_path), "tiny", num_train=24, num_validation=6, num_test=6)
  files = sorted(p.name for p in (tmp_path / "janus_shapes" / "tiny" / "1.0.0").iterdir())
  assert any(".array_record-" in f for f in files), files
  spec = shapes_tfds.spec_of(builder)
  assert spec == SPEC
  features = builder.info.features["objects"]
  seen = {}
  for split, n in (("train", 24), ("validation", 6), ("test", 6)):
    source = tfds.data_source("janus_shapes/tiny", data_dir=str(tmp_path), split=split)
    assert len(source) == n
    seen[split] = {int(source[i]["seed"]) for i in range(n)}
    ex = source[n - 1]
    ref = shapes.make_example(int(ex["seed"]), spec)
    np.testing.assert_array_equal(ex["image"], ref["image"])
    assert ex["caption"].decode() == ref["caption"]
    assert [c.decode() for c in ex["captions"]] == ref["captions"]
    for key in ("shape", "color", "size"):
      assert [features[key].int2str(int(i)) for i in ex["objects"][key]] == ref["objects"][key]
    for key in ("row", "col"):
      assert [int(i) for i in ex["objects"][key]] == ref["objects"][key]
    for key in ("question", "answer", "kind", "choices"):
      assert [t.decode() for t in ex["qa"][key]] == ref["qa"][key]
  assert not (seen["train"] & seen["validation"] or seen["train"] & seen["test"] or seen["validation"] & seen["test"])
  # Re-preparing reuses the files; other sizes are refused.
  assert shapes_tfds.prepare_shapes(str(tmp_path), "tiny", num_train=24).info.splits["train"].num_examples == 24
  with pytest.raises(ValueError, match="prepared with"):
    shapes_tfds.prepare_shapes(str(tmp_path), "tiny", num_train=30)


# ------------------------------------------------------------------------------------------------
# Detector and GenEval scoring.
# ------------------------------------------------------------------------------------------------


def _scene_tuples(objs):
  return sorted((o.shape, o.color, o.size, o.row, o.col) for o in objs)


@pytest.mark.parametrize("spec", [SPEC, RICH], ids=["default", "rich"])
def test_detector_recovers_scenes_exactly_and_under_blur_and_noise(spec):
  clean = degraded = 0
  n = 60
  for seed in range(n):
    scene = shapes.scene_for_seed(seed, spec)
    image = shapes.render(scene, spec)
    clean += _scene_tuples(detector.detect(image, spec)) == _scene_tuples(scene.objects)
    degraded += _scene_tuples(detector.detect(_degrade(image, seed), spec)) == _scene_tuples(scene.objects)
  assert clean == n
  assert degraded >= 0.95 * n
  # Float images in [-1, 1] are accepted.
  image = shapes.render(shapes.scene_for_seed(0, spec), spec)
  assert detector.detect(image.astype(np.float32) / 127.5 - 1.0, spec) == detector.detect(image, spec)


@pytest.mark.parametrize("spec", [SPEC, RICH], ids=["default", "rich"])
def test_geneval_scores_ground_truth_high_and_noise_zero(spec):
  prompts = shapes.geneval_prompts(spec, n_per_category=12, seed=0)
  assert [p["category"] for p in prompts[::12]] == list(shapes.CATEGORIES)
  rng = np.random.default_rng(0)
  truth = [shapes.render(shapes.scene_for_prompt(p, rng, spec), spec) for p in prompts]
  scores = geneval.score_generations(truth, prompts, spec)
  assert set(scores) == set(shapes.CATEGORIES) | {"overall", "num_images"}
  assert scores["overall"] >= 0.99, scores
  noisy = geneval.score_generations([_degrade(x, i) for i, x in enumerate(truth)], prompts, spec)
  assert noisy["overall"] >= 0.95, noisy
  noise = np.random.default_rng(1).integers(0, 256, (len(prompts), spec.image_size, spec.image_size, 3), np.uint8)
  assert geneval.score_generations(noise, prompts, spec)["overall"] <= 0.05
  blank = np.broadcast_to(np.asarray(spec.background, np.uint8), noise.shape)
  assert geneval.score_generations(blank, prompts, spec)["overall"] == 0.0


def _image(*objects):
  return shapes.render(shapes.Scene(tuple(shapes.SceneObject(*o) for o in objects), 2), SPEC)


def test_geneval_requirements():
  def meta(category, include, exclude=()):
    return {"category": category, "prompt": "", "include": list(include), "exclude": list(exclude)}

  red_circle_left = _image(("circle", "red", "large", 0, 0), ("square", "blue", "small", 0, 1))
  three_circles = _image(("circle", "red", "large", 0, 0), ("circle", "blue", "small", 0, 1),
                         ("circle", "green", "small", 1, 1))
  two = {"shape": "circle", "color": None, "count": 2, "position": None}
  three = dict(two, count=3)
  left = [{"shape": "square", "color": None, "count": 1, "position": None},
          {"shape": "circle", "color": None, "count": 1, "position": ["left of", 0]}]
  right = [left[0], dict(left[1], position=["right of", 0])]
  red = [{"shape": "circle", "color": "red", "count": 1, "position": None}]
  blue = [dict(red[0], color="blue")]
  cases = [(red_circle_left, meta("position", left), True), (red_circle_left, meta("position", right), False),
           (red_circle_left, meta("colors", red), True), (red_circle_left, meta("colors", blue), False),
           (three_circles, meta("counting", [three], [dict(three, count=4)]), True),
           (three_circles, meta("counting", [two], [three]), False)]
  for image, m, want in cases:
    assert geneval.evaluate_detections(detector.detect(image, SPEC), m, SPEC) is want, m
  scores = geneval.score_generations([c[0] for c in cases], [c[1] for c in cases], SPEC, return_details=True)
  assert scores["position"] == scores["colors"] == scores["counting"] == 0.5
  assert scores["overall"] == 0.5 and len(scores["details"]) == len(cases)


def test_score_understanding():
  preds = ["Red.", " two", "B", "(C) blue", "top left", "circle", "yes", "red"]
  answers = ["red", "2", "B", "C", "top left", "square", "no", "A"]
  kinds = ["colour", "count", "shape", "colour", "position", "shape", "position", "colour"]
  choices = ["", "", "circle\nsquare", "red\ngreen\nblue", "", "", "", "red\nblue"]
  out = geneval.score_understanding(preds, answers, kinds, choices)
  assert out["overall"] == pytest.approx(6 / 8)
  assert out["colour"] == 1.0 and out["count"] == 1.0 and out["shape"] == 0.5 and out["position"] == 0.5
  assert out["multiple_choice"] == 1.0 and out["open"] == pytest.approx(3 / 5)
  assert out["num_questions"] == 8
  no_choices = geneval.score_understanding(preds, answers, kinds)
  assert no_choices["overall"] == pytest.approx(5 / 8)  # 'red' no longer maps to option A.
  assert geneval.normalize_answer("The Top  Left.") == "top left"
  with pytest.raises(ValueError, match="equal lengths"):
    geneval.score_understanding(["a"], [], [])
