"""`janus-jax eval`: Shapes-GenEval on generated images and understanding accuracy on held-out questions.

    results = evaluate(pipe, spec, test_records, n_per_category=20, num_questions=200)
    # {'generation': {'single_object': .., ..., 'overall': ..}, 'understanding': {'colour': .., 'overall': ..}}
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import numpy as np

from janus_jax import paths
from janus_jax.data import shapes
from janus_jax.evals.geneval import score_generations, score_understanding


def generation_scores(pipe, spec: shapes.ShapesSpec, *, n_per_category: int, cfg_weight: float | None,
                      temperature: float | None, seed: int = 0, batch: int = 64) -> tuple[dict[str, Any], np.ndarray]:
  """Generates one image per GenEval-style prompt and scores it; returns (scores, images uint8[N, H, W, 3]).
  None: the generation mode's default (`pipe.cfg.mode.sampling`)."""
  prompts = shapes.geneval_prompts(spec, n_per_category, seed=seed)
  images = []
  for i in range(0, len(prompts), batch):
    chunk = [p["prompt"] for p in prompts[i:i + batch]]
    images.append(pipe.generate(chunk, cfg_weight=cfg_weight, temperature=temperature, seed=seed + i).images)
  images = np.concatenate(images)
  if images.shape[1] != spec.image_size:  # the VQ may decode at another size than the dataset renders
    from PIL import Image  # pylint: disable=import-outside-toplevel
    images = np.stack([np.asarray(Image.fromarray(x).resize((spec.image_size,) * 2, Image.BICUBIC)) for x in images])
  return score_generations(list(images), prompts, spec), images


def understanding_scores(pipe, records: Sequence[dict], *, num_questions: int, seed: int = 0,
                         batch: int = 64, max_new_tokens: int = 8) -> dict[str, Any]:
  """Greedy answers to held-out Shapes questions (one per record, cycling), exact-match accuracy per kind."""
  rng = np.random.default_rng(seed)
  images, questions, answers, kinds, choices = [], [], [], [], []
  for k in range(num_questions):
    rec = records[k % len(records)]
    qa = rec["qa"]
    i = int(rng.integers(len(qa["question"])))
    images.append(np.asarray(rec["image"]))
    questions.append(_text(qa["question"][i]))
    answers.append(_text(qa["answer"][i]))
    kinds.append(_text(qa["kind"][i]))
    choices.append(shapes.split_choices(_text(qa["choices"][i])))
  predictions = []
  for i in range(0, num_questions, batch):
    predictions += pipe.understand(images[i:i + batch], questions[i:i + batch], greedy=True,
                                   max_new_tokens=max_new_tokens, system_prompt="")
  return score_understanding(predictions, answers, kinds, choices=choices)


def _text(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


def evaluate(pipe, spec: shapes.ShapesSpec, records: Sequence[dict], *, n_per_category: int, num_questions: int,
             cfg_weight: float | None = None, temperature: float | None = None, seed: int = 0,
             cfg_weights: Sequence[float] = ()) -> dict[str, Any]:
  """Both evaluations; JSON-serialisable, with timings. `cfg_weights`: generation is also scored at each of these
  guidance weights, under "cfg_sweep" {"<weight>": {"generation": {...}}} (same prompts and seed). `cfg_weight` /
  `temperature` None: the generation mode's defaults (recorded in "settings" as the values used)."""
  sampling = pipe.cfg.mode.sampling
  cfg_weight = sampling["cfg_weight"] if cfg_weight is None else cfg_weight
  if temperature is None and "temperature" in sampling:  # a mode without one (flow) records None
    temperature = sampling["temperature"]
  t0 = time.time()
  gen, _ = generation_scores(pipe, spec, n_per_category=n_per_category, cfg_weight=cfg_weight,
                             temperature=temperature, seed=seed)
  t1 = time.time()
  und = understanding_scores(pipe, records, num_questions=num_questions, seed=seed)
  t2 = time.time()
  cfg_sweep = {f"{float(w):g}": {"generation": generation_scores(pipe, spec, n_per_category=n_per_category,
                                                                  cfg_weight=float(w), temperature=temperature,
                                                                  seed=seed)[0]} for w in cfg_weights}
  extra = {"cfg_sweep": cfg_sweep} if cfg_sweep else {}
  return {"generation": gen, "understanding": und, **extra,
          "settings": dict(n_per_category=n_per_category, num_questions=num_questions, cfg_weight=cfg_weight,
                           temperature=temperature, seed=seed),
          "seconds": {"generation": round(t1 - t0, 1), "understanding": round(t2 - t1, 1),
                      **({"cfg_sweep": round(time.time() - t2, 1)} if cfg_sweep else {})}}


def write_json(results: dict, path: str) -> None:
  """Writes `results` as indented JSON to `path` (local or remote)."""
  paths.resolve(path).write_text(json.dumps(results, indent=2, default=float))


def evaluate_checkpoint(checkpoint: str, data_dir: str, tfds_name: str = "janus_shapes/default", *,
                        n_per_category: int = 25, num_questions: int = 300, cfg_weight: float | None = None,
                        temperature: float | None = None, seed: int = 0, cfg_weights: Sequence[float] = ()
                        ) -> dict[str, Any]:
  """Loads a janus_jax checkpoint and evaluates it on the prepared Shapes dataset's test split (both paths local or
  remote)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  import janus_jax  # pylint: disable=import-outside-toplevel
  from janus_jax.data.shapes_tfds import spec_of  # pylint: disable=import-outside-toplevel
  from janus_jax.data.sources import tfds_source  # pylint: disable=import-outside-toplevel
  pipe = janus_jax.load(checkpoint)
  data_dir = os.fspath(paths.resolve(data_dir))
  spec = spec_of(tfds.builder(tfds_name, data_dir=data_dir))
  src = tfds_source(tfds_name, "test", data_dir, per_process=False)
  records = [src[i] for i in range(min(len(src), num_questions))]
  return evaluate(pipe, spec, records, n_per_category=n_per_category, num_questions=num_questions,
                  cfg_weight=cfg_weight, temperature=temperature, seed=seed, cfg_weights=cfg_weights)
