"""TFDS builder `janus_shapes`: the Shapes dataset (`janus_jax.data.shapes`) as ArrayRecord files.

    from janus_jax.data import shapes_tfds
    shapes_tfds.prepare_shapes("/data/tfds")                       # ~20k examples, seconds, no network
    source = tfds.data_source("janus_shapes/default", data_dir="/data/tfds", split="train")
    ex = source[0]     # {'image': uint8[32, 32, 3], 'caption': b'two red circles', 'objects': {...}, ...}

Records are written in ArrayRecord format, so `tfds.data_source` (and grain) get random access. Decoding is
numpy-only: images are PNG (encoded with PIL here, decoded by tfds with OpenCV or PIL), texts come back as
`bytes`, so grain workers never run TensorFlow ops. Features:
  seed: int64 - `shapes.make_example(seed, spec)` recreates the record.
  image: uint8[S, S, 3].
  caption: one caption; captions: every canonical caption of the scene (sample from these for variety).
  objects: {'shape', 'color', 'size': class ids (names in the builder's `info.features`), 'row', 'col': int32}.
  qa: {'question', 'answer', 'kind', 'choices'} (choices: '\\n'-joined options, b'' for open questions).
The spec is saved in `info.metadata['spec']`; `spec_of(builder)` rebuilds the `ShapesSpec`.

Configs: 'default' (the training spec, 20k/1k/1k), 'tiny' (same spec, 64/16/16, for tests), 'rich' (64x64,
3x3 grid, 5 shapes, jitter, up to 6 objects). Splits draw seeds from disjoint ranges and disjoint scene-hash
buckets (see `shapes.split_of`), so they share neither seeds nor images. `data_source` on a config that is not
in this file (made with `prepare_shapes(..., spec=...)`) is read back from the files alone.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
from etils import epath
import tensorflow_datasets as tfds
from PIL import Image

from janus_jax.data import shapes

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """A `ShapesSpec` plus default split sizes."""
  spec: shapes.ShapesSpec = shapes.ShapesSpec()
  num_train: int = 20_000
  num_validation: int = 1_000
  num_test: int = 1_000


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=6)
  return buf.getvalue()


class JanusShapes(tfds.core.GeneratorBasedBuilder):
  """Procedural shapes: images, captions and question/answer pairs (registered as 'janus_shapes')."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ShapesConfig(name="default", description="32x32, 2x2 grid, 3 shapes, 6 colours, 2 sizes, 1-4 objects."),
      ShapesConfig(name="tiny", description="The default spec with tiny splits (tests).", num_train=64,
                   num_validation=16, num_test=16),
      ShapesConfig(name="rich", description="64x64, 3x3 grid, 5 shapes, 6 colours, jitter, 1-6 objects.",
                   spec=shapes.ShapesSpec(image_size=64, grid=3, shapes=shapes.SHAPE_NAMES, jitter=0.05,
                                          max_objects=6), num_train=50_000),
  ]
  DEFAULT_CONFIG_NAME = "default"
  # tfds' own `code_path` imports `importlib_resources`, which tfds only declares for Python < 3.9; this file's
  # path is what it would compute anyway (tfds looks for an optional checksums.tsv next to it).
  code_path = epath.Path(__file__)

  def __init__(self, *, split_sizes: dict[str, int] | None = None, file_format: str = "array_record", **kwargs):
    """split_sizes: optional {'train': n, ...} overriding the config's sizes when generating."""
    unknown = set(split_sizes or {}) - set(SPLITS)
    if unknown:
      raise ValueError(f"Unknown split(s) {sorted(unknown)} in split_sizes; expected {SPLITS}.")
    self._split_sizes = dict(split_sizes or {})
    super().__init__(file_format=file_format, **kwargs)

  @property
  def spec(self) -> shapes.ShapesSpec:
    return self.builder_config.spec

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.spec
    size = spec.image_size
    text = tfds.features.Text()
    return self.dataset_info_from_configs(
        description=__doc__.split("\n")[0],
        features=tfds.features.FeaturesDict({
            "seed": np.int64,
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "caption": text,
            "captions": tfds.features.Sequence(text),
            "objects": tfds.features.Sequence({
                "shape": tfds.features.ClassLabel(names=list(spec.shapes)),
                "color": tfds.features.ClassLabel(names=list(spec.colors)),
                "size": tfds.features.ClassLabel(names=list(spec.size_names)),
                "row": np.int32,
                "col": np.int32,
            }),
            "qa": tfds.features.Sequence({"question": text, "answer": text, "kind": text, "choices": text}),
        }),
        metadata=tfds.core.MetadataDict(spec=_jsonable(spec.to_dict())),
        disable_shuffling=True,  # Records in seed order; shuffle when reading (grain / data_source).
    )

  def split_size(self, split: str) -> int:
    cfg = self.builder_config
    return int(self._split_sizes.get(split, getattr(cfg, f"num_{split}")))

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is rendered locally.
    return {split: self._generate_examples(split, self.split_size(split)) for split in SPLITS}

  def _generate_examples(self, split: str, num: int):
    spec = self.spec
    for seed in shapes.split_seeds(split, num, spec):
      ex = shapes.make_example(seed, spec)
      ex["image"] = _png(ex["image"])
      yield seed, ex


def _jsonable(value):
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  return value


def spec_of(builder: tfds.core.DatasetBuilder) -> shapes.ShapesSpec:
  """The `ShapesSpec` a prepared janus_shapes dataset was rendered with (from its saved metadata)."""
  meta = builder.info.metadata
  if not meta or "spec" not in meta:
    raise ValueError(f"{builder.name} has no 'spec' in its metadata; is it a janus_shapes dataset?")
  return shapes.ShapesSpec.from_dict(meta["spec"])


def prepare_shapes(data_dir: str, config_name: str = "default", num_train: int | None = None,
                   num_validation: int | None = None, num_test: int | None = None,
                   spec: shapes.ShapesSpec | None = None) -> JanusShapes:
  """Builds janus_shapes/<config_name> under `data_dir` (no network) and returns the builder.

  Split sizes default to the config's. `spec` makes a new config named `config_name` (which must not be a
  built-in one). An already prepared config is reused; asking for split sizes other than the prepared ones
  raises (use another data_dir or config name).
  """
  builtin = {c.name: c for c in JanusShapes.BUILDER_CONFIGS}
  if spec is not None:
    if config_name in builtin:
      raise ValueError(f"config_name {config_name!r} is built in; pick a new name for a custom spec.")
    config = ShapesConfig(name=config_name, description="Custom spec.", spec=spec)
  elif config_name in builtin:
    config = builtin[config_name]
  else:
    raise ValueError(f"Unknown config {config_name!r}; built-in configs are {sorted(builtin)}, or pass `spec`.")
  requested = {k: v for k, v in (("train", num_train), ("validation", num_validation), ("test", num_test))
               if v is not None}
  builder = JanusShapes(config=config, data_dir=data_dir, split_sizes=requested)
  if builder.is_prepared():
    have = {s: builder.info.splits[s].num_examples for s in SPLITS}
    if any(have[s] != n for s, n in requested.items()):
      want = {**have, **requested}
      raise ValueError(f"janus_shapes/{config_name} in {data_dir} was prepared with {have} examples, not {want}; "
                       "use another data_dir or config name, or delete that directory.")
    return builder
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
