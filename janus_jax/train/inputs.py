"""What a training run reads besides its settings, and the checks that run before any work starts.

`TrainInputs` holds the model config, the tokenizer, the data sources and the checkpoint to start from. A stage
config names them (`model`, `input.tokenizer`, `input.sources`, `init_from`); the main job's earlier stages (data
preparation, image-tokenizer training) produce them and hand them forward as values: a run never writes into its
config.

    inputs = TrainInputs.from_config(config)          # what the config says
    check_settings(config)                            # batch sizes, steps, mixture, optimizer, mesh, `required`
    check_inputs(inputs)                              # tokenizer, sources, init_from vs the model: before training

`input.sources` is a tuple of dicts (ml_collections overrides tuples from the command line, not lists):
    --config.input.sources="({'kind': 'pairs', 'paths': '/data/train.arrayrecord'},)"
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from janus_jax import paths as paths_lib
from janus_jax.models.configs import RUN_SETTINGS, JanusConfig  # RUN_SETTINGS: re-exported

SOURCE_KINDS = ("shapes", "imagenet2012", "coco_captions", "pairs")
SOURCES_HINT = ("--config.input.sources=\"({'kind': 'pairs', 'paths': '/data/train.arrayrecord'},)\" (a tuple of "
                f"dicts; kinds: {', '.join(SOURCE_KINDS)}; `janus-jax pairs` writes the ArrayRecord from a JSONL)")
INIT_HINT = ("a janus_jax checkpoint directory: the output of `janus-jax convert --from <downloaded checkpoint> --to "
             "DIR`, or the `<workdir>/model` an earlier stage exported")


class ConfigError(ValueError):
  """A setting or input that cannot work; the message names the field and the fix."""


def _get(cfg: Any, key: str, default=None):
  try:
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
  except AttributeError:
    return default
  return default if value is None else value


def _plain(x):
  return x.to_dict() if hasattr(x, "to_dict") else x


def model_config(config) -> JanusConfig:
  """The `JanusConfig` of `config.model` (unknown keys raise, naming them)."""
  return JanusConfig.from_dict(dict(_plain(config.model)))


@dataclasses.dataclass(frozen=True)
class TrainInputs:
  """model: the model to train; tokenizer: tokenizer dir or file; sources: `input.sources` entries (dicts, see
  `janus_jax.data.sources.adapter_from_config`); init_from: janus_jax checkpoint to start from (None: random)."""
  model: JanusConfig
  tokenizer: str
  sources: tuple[dict, ...]
  init_from: str | None = None

  @classmethod
  def from_config(cls, config) -> "TrainInputs":
    """The inputs as the config names them. With `init_from`, the model is the checkpoint's (its weights define it,
    e.g. a calibrated VAE scaling factor) in the config's dtypes and layouts (`check_init_from` has made sure the
    shapes agree), and `input.tokenizer` falls back to `<init_from>/tokenizer`."""
    init_from = _get(config, "init_from") or None
    init_from = str(paths_lib.resolve(init_from)) if init_from else None
    model = model_config(config)
    tokenizer = _get(config.input, "tokenizer", "") or ""
    if init_from and paths_lib.resolve(init_from).is_dir():
      from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
      if store.is_checkpoint(init_from):
        model = adopt_settings(store.load_config(init_from), model)
      if not tokenizer and (paths_lib.resolve(init_from) / "tokenizer").is_dir():
        tokenizer = paths_lib.join(init_from, "tokenizer")
    sources = tuple(_plain(s) for s in (_get(config.input, "sources", ()) or ()))
    return cls(model=model, tokenizer=str(paths_lib.resolve(tokenizer)) if tokenizer else "", sources=sources,
               init_from=init_from)

  def replace(self, **changes) -> "TrainInputs":
    return dataclasses.replace(self, **changes)




def adopt_settings(stored: JanusConfig, cfg: JanusConfig) -> JanusConfig:
  """`stored` (a checkpoint's model) with the RUN_SETTINGS of `cfg` (the run's config) in every component."""
  d, c = stored.to_dict(), cfg.to_dict()
  for part, fields in d.items():
    if isinstance(fields, dict) and isinstance(c.get(part), Mapping):
      fields.update({k: c[part][k] for k in RUN_SETTINGS if k in fields and k in c[part]})
  return JanusConfig.from_dict(d)


def model_notes(stored: JanusConfig, cfg: JanusConfig) -> list[str]:
  """'model.part.field: checkpoint x vs config y' for the model fields (other than RUN_SETTINGS) where the run's
  config differs from the checkpoint it starts from (the checkpoint's values are used)."""
  return _config_differences(stored, cfg)


def _positive_int(value, name: str, fix: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f"{name}={value!r} must be a whole number > 0. Fix: {fix}")


def check_settings(config) -> None:
  """Checks the run's settings (no file access, no compute); raises ConfigError naming the field and the fix."""
  from janus_jax.data.sources import KINDS  # pylint: disable=import-outside-toplevel
  from janus_jax.train import optim  # pylint: disable=import-outside-toplevel
  from janus_jax.train.step import resolve_train_config  # pylint: disable=import-outside-toplevel
  try:
    cfg = model_config(config)
    optim.resolve_config(config.optim)
    resolve_train_config(config.train)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  from janus_jax.models.janus import abstract_params  # pylint: disable=import-outside-toplevel
  try:
    abstract_params(cfg)  # shapes only: no memory, no compute
  except Exception as e:  # pylint: disable=broad-except  # e.g. a hidden size its aligner does not produce
    raise ConfigError(f"The model of `config.model` cannot be built: {str(e).splitlines()[0]}. Fix the sizes that "
                      "must agree (e.g. model.aligner.output_dim = model.llm.hidden_size).") from None
  inp = config.input
  _positive_int(inp.batch_size, "input.batch_size", "--config.input.batch_size=32 (the global batch, all hosts).")
  _positive_int(inp.seq_len, "input.seq_len", "--config.input.seq_len=4096 (tokens per training sequence).")
  _positive_int(config.train.num_steps, "train.num_steps", "--config.train.num_steps=1000.")
  accum = int(_get(config.train, "grad_accum_steps", 1))
  if inp.batch_size % accum:
    raise ConfigError(f"input.batch_size={inp.batch_size} is not divisible by train.grad_accum_steps={accum}. Fix: "
                      f"make the batch a multiple of {accum}.")
  from janus_jax import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  from janus_jax.train.step import data_parallel_size  # pylint: disable=import-outside-toplevel
  try:
    parallel = data_parallel_size(sharding_lib.make_mesh([tuple(x) for x in config.mesh]))
  except ValueError as e:
    raise ConfigError(f"mesh={list(config.mesh)}: {e}") from None
  if inp.batch_size % (parallel * accum):
    raise ConfigError(f"input.batch_size={inp.batch_size} must be a multiple of the mesh's data-parallel size "
                      f"({parallel} = data x fsdp over the devices) x train.grad_accum_steps ({accum}). Fix: "
                      f"--config.input.batch_size={max(1, inp.batch_size // (parallel * accum)) * parallel * accum}, "
                      "or another --config.mesh.")
  mixture = dict(_plain(inp.mixture))
  unknown = sorted(set(mixture) - set(KINDS))
  if unknown:
    raise ConfigError(f"input.mixture has unknown kind(s) {unknown}; valid kinds: {list(KINDS)}.")
  if any(float(w) < 0 for w in mixture.values()) or not any(float(w) > 0 for w in mixture.values()):
    raise ConfigError(f"input.mixture={mixture} needs weights >= 0 with at least one > 0, e.g. "
                      "--config.input.mixture.und=1.")
  if "init_from" in tuple(_get(config, "required", ()) or ()) and not _get(config, "init_from"):
    raise ConfigError(f"This config starts from pretrained weights: pass --config.init_from=DIR, {INIT_HINT}.")
  for key in ("log_every", "checkpoint_every", "sample_every"):
    value = _get(config.train, key, 0)
    if int(value) < 0:
      raise ConfigError(f"train.{key}={value} must be >= 0 (0 turns it off).")


def check_sources(sources: Sequence[Any]) -> None:
  """Every `input.sources` entry is a dict with a known kind; `pairs` files exist."""
  if not sources:
    raise ConfigError(f"input.sources is empty: name the training data, e.g. {SOURCES_HINT}.")
  for i, src in enumerate(sources):
    if not isinstance(src, Mapping) or "kind" not in src:
      raise ConfigError(f"input.sources[{i}]={src!r} is not a dict with a 'kind'. Write the sources as a tuple of "
                        f"dicts: {SOURCES_HINT}.")
    if src["kind"] not in SOURCE_KINDS:
      raise ConfigError(f"input.sources[{i}]: unknown kind {src['kind']!r}; valid kinds: {list(SOURCE_KINDS)}.")
    if src["kind"] == "pairs":
      paths = src.get("paths")
      paths = [paths] if isinstance(paths, str) else list(paths or [])
      if not paths:
        raise ConfigError(f"input.sources[{i}] (pairs) needs 'paths': the ArrayRecord file(s) `janus-jax pairs` "
                          "wrote.")
      missing = [p for p in paths if not paths_lib.resolve(p).is_file()]
      if missing:
        raise ConfigError(f"input.sources[{i}] (pairs): no such file(s) {missing}. Fix: write them with `janus-jax "
                          "pairs --jsonl rows.jsonl --out train.arrayrecord`, or correct the path.")


def _shapes(tree) -> dict[str, tuple]:
  import jax  # pylint: disable=import-outside-toplevel
  from janus_jax.train.optim import path_str  # pylint: disable=import-outside-toplevel
  return {path_str(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def check_init_from(init_from: str, cfg: JanusConfig) -> None:
  """`init_from` is a janus_jax checkpoint whose params have the shapes of `cfg`'s (layouts aside).

  Params the model has and the checkpoint lacks are fine (they start random, e.g. JanusFlow's REPA head); a param
  with another shape means another model: ConfigError listing the first differences and the config fields."""
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  from janus_jax.models.janus import abstract_params  # pylint: disable=import-outside-toplevel
  if not paths_lib.resolve(init_from).is_dir():
    raise ConfigError(f"init_from={init_from!r} does not exist. It must be {INIT_HINT}.")
  try:
    stored_cfg = store.load_config(init_from)
  except (FileNotFoundError, ValueError) as e:
    raise ConfigError(f"init_from={init_from!r}: {e} It must be {INIT_HINT}.") from None
  ours, theirs = (_shapes(abstract_params(_unrolled(c))) for c in (cfg, stored_cfg))
  diff = [f"{k}: checkpoint {theirs[k]} vs config {v}" for k, v in ours.items() if k in theirs and theirs[k] != v]
  for field in ("und_encoder", "generation_mode"):  # other models even where no param shape differs
    if getattr(cfg, field) != getattr(stored_cfg, field):
      diff.insert(0, f"{field}: checkpoint {getattr(stored_cfg, field)!r} vs config {getattr(cfg, field)!r}")
  if diff:
    fields = _config_differences(stored_cfg, cfg)
    raise ConfigError(f"init_from={init_from!r} holds another model than the config: {len(diff)} param(s) differ, "
                      f"e.g. {diff[:4]}. Differing model fields: {fields[:8]}. Fix: choose the config (size=...) "
                      "of that checkpoint, or override --config.model.<field> to match it.")


def _unrolled(cfg: JanusConfig) -> JanusConfig:
  return dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, scan_layers=False, remat_policy="none"))


def _config_differences(a: JanusConfig, b: JanusConfig) -> list[str]:
  """'part.field: a vs b' for every shape-relevant field that differs (dtypes and layouts left out)."""
  skip = set(RUN_SETTINGS)
  out = []
  da, db = a.to_dict(), b.to_dict()
  for part in sorted(set(da) | set(db)):
    pa, pb = da.get(part), db.get(part)
    if isinstance(pa, Mapping) and isinstance(pb, Mapping):
      out += [f"model.{part}.{k}: checkpoint {pa.get(k)!r} vs config {pb.get(k)!r}" for k in sorted(set(pa) | set(pb))
              if k not in skip and pa.get(k) != pb.get(k)]
    elif pa != pb:
      out.append(f"model.{part}: checkpoint {pa!r} vs config {pb!r}")
  return out


def check_inputs(inputs: TrainInputs) -> None:
  """Checks what training will read: tokenizer, sources and init_from."""
  if not inputs.tokenizer:
    raise ConfigError("input.tokenizer is empty: pass --config.input.tokenizer=<converted checkpoint>/tokenizer (or "
                      "--config.init_from=<converted checkpoint>, whose tokenizer/ is then used).")
  if not paths_lib.resolve(inputs.tokenizer).exists():
    raise ConfigError(f"input.tokenizer={inputs.tokenizer!r} does not exist: pass the tokenizer/ folder of a converted "
                      "checkpoint, or a tokenizer.json / sentencepiece .model file.")
  from janus_jax.processing.tokenizer import load_tokenizer  # pylint: disable=import-outside-toplevel
  vocab = load_tokenizer(inputs.tokenizer).vocab_size
  if vocab > inputs.model.llm.vocab_size:
    raise ConfigError(f"The tokenizer {inputs.tokenizer} has {vocab} tokens but the model's vocabulary "
                      f"(model.llm.vocab_size) is {inputs.model.llm.vocab_size}. Fix: use the tokenizer of the "
                      "checkpoint you train from, or --config.model.llm.vocab_size >= the tokenizer's size.")
  check_sources(inputs.sources)
  if inputs.init_from:
    check_init_from(inputs.init_from, inputs.model)


__all__ = ["TrainInputs", "ConfigError", "model_config", "check_settings", "check_sources", "check_init_from",
           "check_inputs", "SOURCE_KINDS"]
