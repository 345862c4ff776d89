"""`train(config, workdir)`: the Janus training loop (any stage, any mesh), resumable and preemption-safe.

Order of events: mesh -> tokenizer -> grain iterator -> train state (resume from the workdir's latest checkpoint,
else `init_from` (partial load of a converted checkpoint), else random init) -> compiled step -> loop
(metrics, progress line, sample grids, NaN guard, checkpoints every K steps and on SIGTERM) -> final checkpoint.
`export_model` then writes the janus_jax checkpoint that `janus_jax.load` opens and a next stage starts from.

What the run reads besides its settings (model, tokenizer, sources, init_from) comes as one `TrainInputs`
(`janus_jax.train.inputs`): by default as the config names it; the main job hands its prepared data and trained
image tokenizer forward this way instead of writing them into the config.

Config keys read here (besides model / optim / train / input / mesh / sharding_rules used by the parts):
  seed, template, input.system_prompt, train.pad_id (None: the tokenizer's),
  train.num_steps, train.log_every, train.checkpoint_every, train.keep_checkpoints, train.sample_every,
  train.sample_prompts (list[str]), train.sample_cfg_weight (None: the generation mode's default).
"""
from __future__ import annotations

import io
import json
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from janus_jax import paths, sharding as sharding_lib
from janus_jax.data import pipeline, sources
from janus_jax.data.examples import RowBuilder, RowSpec
from janus_jax.models.configs import JanusConfig
from janus_jax.processing.tokenizer import Tokenizer, load_tokenizer
from janus_jax.train import state as state_lib, step as step_lib
from janus_jax.train.batch import OPTIONAL, REQUIRED
from janus_jax.train.checkpoint import Checkpointer, writable_dir
from janus_jax.train.inputs import TrainInputs
from janus_jax.train.metrics import MetricsWriter, Progress, check_finite

BATCH_KEYS = tuple(REQUIRED) + tuple(OPTIONAL)


def _get(cfg: Any, key: str, default=None):
  try:
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
  except AttributeError:
    return default
  return default if value is None and default is not None else value


def row_spec(config, cfg: JanusConfig) -> RowSpec:
  """The row shapes and format of a run (`input.seq_len`, the model's image sizes, the template)."""
  return RowSpec(seq_len=int(config.input.seq_len), num_image_tokens=cfg.num_image_tokens,
                 und_image_size=cfg.vision.image_size, gen_image_size=cfg.generated_image_size,
                 template=_get(config, "template", "deepseek"),
                 system_prompt=_get(config.input, "system_prompt", ""), und_boi_slot=cfg.mode.und_boi_slot)


def row_builder(config, cfg: JanusConfig, tokenizer: Tokenizer) -> RowBuilder:
  return RowBuilder(tokenizer, row_spec(config, cfg))


def data_iterator(config, cfg: JanusConfig, tokenizer: Tokenizer, source_list, split: str = "train"):
  """This process's grain iterator over `source_list` (`input.sources` entries) and the configured mixture."""
  adapters = [sources.adapter_from_config(dict(s), split=split) for s in source_list]
  if not adapters:
    raise ValueError("config.input.sources is empty: add at least one source, e.g. dict(kind='shapes', "
                     "tfds_name='janus_shapes/default', data_dir=...).")
  global_batch = int(config.input.batch_size)
  if global_batch % jax.process_count():
    raise ValueError(f"input.batch_size={global_batch} is not divisible by the {jax.process_count()} processes.")
  return pipeline.build_train_iterator(
      adapters, row_builder(config, cfg, tokenizer), dict(config.input.mixture),
      batch_size=global_batch // jax.process_count(), seed=int(_get(config, "seed", 0)),
      process_index=jax.process_index(), process_count=jax.process_count(), packing=packing_settings(config.input),
      workers=int(_get(config.input, "workers", 0)), prefetch=int(_get(config.input, "prefetch", 0)),
      read_threads=int(_get(config.input, "read_threads", 0)))


def packing_settings(input_cfg) -> dict | None:
  """`input.packing` as a plain dict, or None when absent (no packing)."""
  packing = _get(input_cfg, "packing")
  return dict(packing.to_dict() if hasattr(packing, "to_dict") else packing) if packing else None


def global_batch(local: Mapping[str, np.ndarray], batch_sharding) -> dict[str, jax.Array]:
  """This process's rows -> global jax.Arrays sharded over the data axes (drops non-batch keys like `kind`)."""
  return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v))
          for k, v in local.items() if k in BATCH_KEYS}


def partial_init(params: Any, loaded: Any, prefix: str = "") -> tuple[Any, dict[str, list[str]]]:
  """Copies every param of `loaded` whose path and shape match into `params` (fine-tuning from a checkpoint).

  Returns (params, report) with the '/'-joined paths that were `loaded`, `kept` (absent from the checkpoint)
  and `mismatched` (present with another shape: kept random, reported).
  """
  report = {"loaded": [], "kept": [], "mismatched": []}

  def walk(p, l, path):
    if not isinstance(p, Mapping):
      if l is None:
        report["kept"].append(path)
        return p
      if tuple(np.shape(l)) != tuple(p.shape):
        report["mismatched"].append(f"{path}: checkpoint {tuple(np.shape(l))} vs model {tuple(p.shape)}")
        return p
      report["loaded"].append(path)
      return jnp.asarray(l, p.dtype)
    return {k: walk(v, (l or {}).get(k) if isinstance(l, Mapping) else None, f"{path}/{k}" if path else k)
            for k, v in p.items()}

  return walk(params, loaded, prefix), report


def _initial_state(config, cfg: JanusConfig, init_from: str | None, shardings, rng, mesh=None, rules=None):
  """Fresh sharded state: random params (created sharded), overwritten by `init_from` where paths and shapes
  match (restored straight onto `mesh`: no device holds the whole model). When the checkpoint has every param of
  the model (a stage starting from the previous stage's export), the random init is skipped: same state, no
  compile and no memory for params that would be overwritten. Returns (state, partial-init report or None)."""
  if not init_from:
    return state_lib.create_sharded_train_state(cfg, config.optim, shardings, rng=rng), None
  from janus_jax.models.janus import abstract_params  # pylint: disable=import-outside-toplevel
  loaded = _load_init_from(init_from, cfg, mesh=mesh, rules=rules)
  params, report = partial_init(abstract_params(cfg), loaded)
  if report["kept"] or report["mismatched"]:
    del params
    params, report = partial_init(state_lib.init_sharded_params(cfg, rng, shardings.params), loaded)
  return state_lib.create_sharded_train_state(cfg, config.optim, shardings, params=params), report


def _load_init_from(init_from: str, cfg: JanusConfig, mesh=None, rules=None):
  """The params of the checkpoint in `init_from`, its LLM layers brought to the layout of `cfg` (scanned or
  unrolled, whichever the checkpoint has). With `mesh` the checkpoint is restored onto it by the logical-axis
  `rules` (else onto the first device)."""
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  from janus_jax.models import param_layout  # pylint: disable=import-outside-toplevel
  loaded, loaded_cfg = store.load_checkpoint(init_from, mesh=mesh, rules=rules)
  to_layout = param_layout.for_training if cfg.llm.scan_layers else param_layout.for_decoding
  return to_layout(loaded, loaded_cfg)[0]


def train(config, workdir: paths.PathLike, inputs: TrainInputs | None = None, *, verbose: bool = True
          ) -> state_lib.TrainState:
  """Trains as configured; resumes from `<workdir>/checkpoints` when present. Returns the final state.

  `inputs`: model, tokenizer, sources and init_from (default: `TrainInputs.from_config(config)`)."""
  inputs = inputs or TrainInputs.from_config(config)
  cfg = inputs.model
  workdir = writable_dir(workdir)
  mesh = sharding_lib.make_mesh([tuple(x) for x in config.mesh])
  accum = step_lib.resolved_grad_accum(config.train, int(config.input.batch_size), mesh)  # before any work
  rules = [tuple(r) for r in config.sharding_rules]
  tokenizer = load_tokenizer(inputs.tokenizer)
  data_iter = data_iterator(config, cfg, tokenizer, inputs.sources)
  num_steps = int(config.train.num_steps)
  seed = int(_get(config, "seed", 0))

  shardings = state_lib.state_shardings(cfg, config.optim, mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          state_lib.abstract_state(cfg, config.optim), shardings)
  ckpt = Checkpointer(workdir / "checkpoints", save_every=int(_get(config.train, "checkpoint_every", 0)),
                      keep=int(_get(config.train, "keep_checkpoints", 3)))
  restored = ckpt.restore_latest(abstract, data_iter, log=lambda m: print(m, flush=True) if verbose else None)
  if restored is not None:
    state, start = restored
    if verbose:
      print(f"resumed from {ckpt.directory} at step {start}", flush=True)
  else:
    state, report = _initial_state(config, cfg, inputs.init_from, shardings, jax.random.PRNGKey(seed), mesh, rules)
    if report is not None and verbose:
      print(f"init_from {inputs.init_from}: {len(report['loaded'])} params loaded, {len(report['kept'])} kept "
            f"random, {len(report['mismatched'])} mismatched {report['mismatched'][:5]}", flush=True)
    start = 0
  config_dict = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else None
  if config_dict is not None:  # what this run actually read, next to its settings
    config_dict["resolved_inputs"] = dict(tokenizer=inputs.tokenizer, init_from=inputs.init_from,
                                          sources=[dict(s) for s in inputs.sources], model=cfg.to_dict())

  pad_id = _get(config.train, "pad_id")
  train_cfg = dict(config.train.to_dict() if hasattr(config.train, "to_dict") else config.train,
                   pad_id=tokenizer.pad_id if pad_id is None else int(pad_id))
  if verbose and accum != int(train_cfg.get("grad_accum_steps", 1)):
    print(f"grad_accum_steps {accum}: at most {train_cfg['max_rows_per_device']} row(s) per device at once "
          f"(train.max_rows_per_device)", flush=True)
  step_fn = step_lib.make_train_step(cfg, dict(train_cfg, grad_accum_steps=accum))
  batch_sharding = step_lib.batch_sharding(mesh)
  run = step_lib.compile_train_step(step_fn, shardings, batch_sharding, mesh, rules)
  writer = MetricsWriter(workdir, resume_step=start if restored is not None else None)
  progress = Progress(num_steps, start)
  log_every = int(_get(config.train, "log_every", 50))
  sample_every = int(_get(config.train, "sample_every", 0))
  prompts = list(_get(config.train, "sample_prompts", []) or [])
  rng = jax.random.PRNGKey(seed + 1)
  last_saved = ckpt.latest_step()
  step = start
  try:
    while step < num_steps:
      batch = global_batch(next(data_iter), batch_sharding)
      state, metrics = run(state, batch, rng)
      step += 1
      if step % log_every == 0 or step == num_steps:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        check_finite(step, {"loss": values["loss"], "grad_norm": values["grad_norm"]}, last_saved)
        writer.scalars(step, {f"train/{k}": v for k, v in values.items()})
        if verbose:
          print(progress.line(step, {k: values[k] for k in cfg.mode.shown_metrics}), flush=True)
      if sample_every and prompts and (step % sample_every == 0 or step == num_steps):
        grid = _sample_grid(state.params, cfg, tokenizer, _get(config, "template", "deepseek"), prompts,
                            _get(config.train, "sample_cfg_weight"), seed=step)
        if grid is not None:
          _write_png(grid, workdir / f"samples_{step:06d}.png")
          writer.images(step, {"samples": grid[None]})
          if verbose:
            print(f"samples: {workdir / f'samples_{step:06d}.png'}", flush=True)
      stop = ckpt.preemption_point(step)  # every process, every step: on several hosts they agree on the step
      if ckpt.maybe_save(step, state, data_iter, config_dict, force=stop):
        last_saved = step
      if stop:
        if verbose:
          print(f"SIGTERM: checkpoint written at step {step}; exiting.", flush=True)
        break
    if step == num_steps and ckpt.latest_step() != step:
      ckpt.save(step, state, data_iter, config_dict)
  finally:
    ckpt.close()
    writer.close()
    if hasattr(data_iter, "close"):  # stops grain's prefetch thread / worker processes now, not at exit
      data_iter.close()
  return state


def _sample_grid(params, cfg: JanusConfig, tokenizer: Tokenizer, template: str, prompts, cfg_weight, seed: int):
  """One uint8 grid of samples of `prompts` on process 0 (None on the others). With several processes the params
  are first gathered to every host (a collective), then process 0 samples on its own devices."""
  from janus_jax.processing.image import image_grid  # pylint: disable=import-outside-toplevel
  from janus_jax.sampling.text_to_image import sample_images  # pylint: disable=import-outside-toplevel
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() != 0:
      return None
  images = sample_images(params, cfg, tokenizer, template, prompts, cfg_weight=cfg_weight, seed=seed)
  return image_grid(images)


def _write_png(image: np.ndarray, path) -> None:
  """uint8[H, W, 3] -> a PNG at `path` (local or remote)."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  paths.resolve(path).write_bytes(buffer.getvalue())


def finished(state: state_lib.TrainState, config) -> bool:
  """Did `state` reach `train.num_steps` (False after a preemption)?"""
  return int(jax.device_get(state.step)) >= int(config.train.num_steps)


def export_model(state: state_lib.TrainState, inputs: TrainInputs, path: paths.PathLike,
                 template: str = "deepseek") -> str:
  """Writes `state` as a janus_jax checkpoint at `path` (replacing one there) with the run's tokenizer: the
  model `janus_jax.load` opens and a next stage's `init_from`. With an EMA (JanusFlow: 0.99) the exported params
  are the EMA weights, as the released checkpoints are. Every process calls it (orbax writes each process's
  shards; process 0 the config and tokenizer). Returns `path`."""
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  params = state.ema_params if state.ema_params is not None else state.params
  if jax.process_count() == 1:
    params = jax.device_get(params)
  store.save_checkpoint(path, params, inputs.model, tokenizer_dir=_tokenizer_dir(inputs.tokenizer),
                        extra_info={"template": template}, overwrite=True)
  return path


def _tokenizer_dir(tokenizer: paths.PathLike):
  """The folder holding the tokenizer files (`input.tokenizer` may name the folder or a file in it)."""
  path = paths.resolve(tokenizer)
  return path if path.is_dir() else path.parent
