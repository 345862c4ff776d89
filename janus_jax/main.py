r"""Entry point: `python -m janus_jax.main --config=experiments/<x>.py[:arg] --workdir=DIR [--mode=...]`.

The job runs as stages that hand their results forward as values (`TrainInputs`); it never writes into the config:
  prepare  when the config has a `data` section and no `input.sources`: the Shapes dataset + its sentencepiece
           tokenizer in data.data_dir (default <workdir>/data), which become the run's sources and tokenizer
  vq       when there is no `init_from` and a `vq` section (flow mode: `vae`): trains the image tokenizer on Shapes
           (or takes the one of the checkpoint `image_tokenizer_from`) and writes <workdir>/init_model (random model
           from the run's seed + that tokenizer), the run's `init_from`
  drill    when `drill.steps` > 0: the LLM alone on text-only multiple-choice letter drills (`drill_config`)
  pre      when `pre_stages` is set, e.g. ({'stage': 1, 'steps': 100}, {'stage': 2, 'steps': 200}): the paper
           recipe's earlier stages (their trainable sets), each from the previous one's export (`pre_stage_config`)
  train    trains in <workdir>/janus (checkpoints, metrics, TensorBoard) and exports <workdir>/model, a checkpoint
           `janus_jax.load` opens and a next stage's `init_from` (the EMA weights when there is one)
  eval     (`--mode=all` with an `eval` section and Shapes data): Shapes-GenEval + understanding of the untrained
           and the trained model -> eval.json, samples.png (`--mode=eval`: the exported model only -> eval.json)
Modes: all (the main job, e.g. experiments/shapes_demo.py), train (default for stage configs: everything but
eval), prepare / vq (stop after that stage), eval (evaluate <workdir>/model). Every stage resumes from what the
workdir holds. Settings and inputs are checked before any work starts; a bad one ends with a message naming the
field and the fix (exit status 2). A run stopped by SIGTERM saves a checkpoint, exports nothing and exits with
status 75 (EX_TEMPFAIL: restart the same command to resume).
Any config field can be overridden: --config.train.num_steps=100.
Many hosts: every process runs the same command. `--distributed=auto` (default) calls `jax.distributed.initialize()`
when the environment is a cluster (JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES + JAX_PROCESS_ID, SLURM with several
tasks, Open MPI, multi-host Cloud TPU: `janus_jax.distributed`); `on` / `off` force it. Each process reads its share
of every global batch; process 0 alone writes metrics, samples, reports and the exported config (orbax writes every
process's shards). Workdirs, data dirs and checkpoints may be `gs://` paths. The Shapes image-tokenizer stage runs
on one process: run `--mode=vq` once on one host, then the multi-host command reuses <workdir>/init_model (as any
restart does: a finished image-tokenizer stage is not run again).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from janus_jax import distributed, paths
from janus_jax.train.inputs import ConfigError, TrainInputs, check_init_from, check_inputs, check_settings

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/<name>.py[:arg]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and outputs go")
_MODE = flags.DEFINE_enum("mode", None, ["all", "prepare", "vq", "train", "eval"], "what to run (default: the "
                          "config's `mode`, else 'train')")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", list(distributed.MODES), "jax.distributed.initialize(): "
                                 "auto = when the environment is a cluster, on = always, off = never")
EXIT_CONFIG_ERROR = 2
EXIT_PREEMPTED = 75


def is_primary() -> bool:
  """Process 0: the one that writes reports and images (all processes compute)."""
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index() == 0


def _write_json(path, value) -> None:
  """`value` as indented JSON at `path` (local or remote), by process 0 only."""
  if is_primary():
    import numpy as np  # pylint: disable=import-outside-toplevel
    paths.resolve(path).write_text(json.dumps(value, indent=2, default=lambda x: float(x) if np.isscalar(x) else str(x)))


def prepare_step(config, workdir) -> dict:
  """The Shapes data + tokenizer in data.data_dir (default <workdir>/data); on several processes process 0 builds
  it while the others wait, then they open it."""
  from janus_jax.data.prepare import prepare  # pylint: disable=import-outside-toplevel
  data_dir = paths.resolve(config.data.data_dir) if config.data.data_dir else paths.resolve(workdir) / "data"
  if not is_primary():
    distributed.barrier("janus_jax_prepare")
  data = prepare(str(data_dir), config.data.config_name, config.data.vocab_size)
  if is_primary():
    distributed.barrier("janus_jax_prepare")
  return data


def shapes_source(data_cfg, data: dict) -> dict:
  """The `input.sources` entry of the prepared Shapes data, with the row options of the `data` section."""
  get = lambda k, d: data_cfg.get(k, d)
  return dict(kind="shapes", tfds_name=data["tfds_name"], data_dir=data["data_dir"],
              caption_prob=get("und_caption_prob", 0.0), qa_turns=get("und_qa_turns", 1),
              mc_weight=get("und_mc_weight", 1.0), text_qa_turns=get("text_qa_turns", 0),
              mc_scaffold=get("und_mc_scaffold", 0.0), text_letter_drill=get("text_letter_drill", False))


def _images(tfds_name: str, data_dir: str, split: str, num: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from janus_jax.data.sources import tfds_source  # pylint: disable=import-outside-toplevel
  src = tfds_source(tfds_name, split, data_dir, per_process=False)
  return np.stack([np.asarray(src[i]["image"]) for i in range(min(num, len(src)))])


def image_tokenizer_step(config, workdir: str, data: dict, cfg):
  """Trains (or reloads) the mode's image tokenizer (VQ or KL-VAE; settings: the config section of the same name)
  on Shapes; returns (params, report, the model cfg using it, e.g. with the VAE's calibrated scale)."""
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() > 1:
    raise ConfigError(
        f"The Shapes image-tokenizer stage runs on one process, and this run has {jax.process_count()}. Fix: run "
        "the same command once on one process with --mode=vq --distributed=off (it writes <workdir>/init_model), "
        "then start the multi-process run again; or pass --config.init_from=<a janus_jax checkpoint>.")
  mode, section = cfg.mode, cfg.mode.tokenizer_section
  settings = config[section]
  train_images = _images(data["tfds_name"], data["data_dir"], "train", settings.num_images)
  eval_images = _images(data["tfds_name"], data["data_dir"], "validation", 512)
  out = paths.resolve(workdir) / section
  params, report = mode.train_tokenizer(cfg, settings, train_images, eval_images, seed=int(config.seed),
                                        workdir=str(out))
  _write_json(out / "report.json", report)
  print(f"[{section}] {mode.tokenizer_summary(report)}", flush=True)
  return params, report, mode.with_tokenizer_report(cfg, report)


def _tokenizer_part(cfg) -> tuple[str, str]:
  """(param module, config part) of the mode's image tokenizer."""
  return cfg.mode.tokenizer_module, cfg.mode.tokenizer_section


def check_image_tokenizer_from(source: str, cfg) -> None:
  """Raises ConfigError unless `source` is a janus_jax checkpoint whose image tokenizer is the one `cfg` describes
  (same generation mode, same VQ / VAE shape fields; the VAE's calibrated scaling_factor is taken from it)."""
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  src = paths.resolve(source)
  fix = ("Fix: --config.image_tokenizer_from=<workdir>/init_model of a run that trained it (e.g. one with "
         "--mode=vq), or another janus_jax checkpoint of this model.")
  if not store.is_checkpoint(src):
    raise ConfigError(f"image_tokenizer_from={source}: {src} is not a janus_jax checkpoint (no janus_config.json / "
                      f"params). {fix}")
  stored = store.load_config(src)
  if stored.mode.tokenizer_section != cfg.mode.tokenizer_section:
    raise ConfigError(f"image_tokenizer_from={source} is a {stored.generation_mode!r} model (image tokenizer "
                      f"{stored.mode.tokenizer_section!r}); this run generates with {cfg.generation_mode!r}, whose "
                      f"image tokenizer is {cfg.mode.tokenizer_section!r}. {fix}")
  _, part = _tokenizer_part(cfg)
  a, b = dataclasses.asdict(getattr(stored, part)), dataclasses.asdict(getattr(cfg, part))
  from janus_jax.train.inputs import RUN_SETTINGS  # pylint: disable=import-outside-toplevel
  diff = [f"model.{part}.{k}: checkpoint {a.get(k)!r} vs config {b.get(k)!r}" for k in sorted(set(a) | set(b))
          if k not in RUN_SETTINGS + ("scaling_factor",) and a.get(k) != b.get(k)]
  if diff:
    raise ConfigError(f"image_tokenizer_from={source} holds another image tokenizer: {'; '.join(diff)}. {fix}")


def reused_image_tokenizer(config, cfg):
  """(params, report, model cfg) of the image tokenizer in `config.image_tokenizer_from`, in place of training one
  (`image_tokenizer_step`): e.g. one tokenizer per seed shared by the work units of a sweep. The report is the one of
  the run that trained it (<its workdir>/vq|vae/report.json) when it is there."""
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  check_image_tokenizer_from(config.image_tokenizer_from, cfg)
  src = paths.resolve(config.image_tokenizer_from)
  key, part = _tokenizer_part(cfg)
  params, stored = store.load_checkpoint(src)
  report_file = src.parent / part / "report.json"
  report = json.loads(report_file.read_text()) if report_file.exists() else {}
  report["from"] = str(src)
  cfg = cfg.mode.with_tokenizer_of(cfg, stored)
  print(f"[{part}] reused from {src}", flush=True)
  return params[key], report, cfg


def _initial_checkpoint(config, workdir: str, inputs: TrainInputs, image_tokenizer_params) -> str:
  """A janus_jax checkpoint of the randomly initialised model with the trained VQ (flow mode: VAE): the `init_from`
  of training, and the 'untrained' model of the evaluation."""
  import jax  # pylint: disable=import-outside-toplevel
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  from janus_jax.train import state  # pylint: disable=import-outside-toplevel
  path = str(paths.resolve(workdir) / "init_model")
  if not store.is_checkpoint(path):
    cfg = inputs.model
    params = state.init_model_params(cfg, jax.random.PRNGKey(int(config.seed)))
    params = dict(params, **{cfg.mode.tokenizer_module: image_tokenizer_params})
    store.save_checkpoint(path, params, cfg, tokenizer_dir=inputs.tokenizer, extra_info={"template": config.template},
                          overwrite=True)  # over what a run killed mid-save left (no config yet: incomplete)
  return path


def drill_config(config, inputs: TrainInputs) -> tuple:
  """The `drill` stage's (config, inputs): `config` with the text-only letter drill as its only data
  (`sources._shapes_letter_drill`), `drill.trainable` trained at `drill.lr` for `drill.steps` steps, from the same
  `inputs.init_from`. A derived copy: `config` itself is left as it is.

  `drill` keys: steps, lr, warmup_steps, batch_size, seq_len, trainable (regexes, e.g. ["language_model/.*"])."""
  from janus_jax.configs.common import reject_unknown_keys  # pylint: disable=import-outside-toplevel
  d = config.drill
  reject_unknown_keys(d, ("steps", "lr", "warmup_steps", "batch_size", "seq_len", "trainable"), "drill")
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.input.mixture = {"text": 1.0}
    c.input.seq_len, c.input.batch_size = int(d.seq_len), int(d.batch_size)
    c.input.packing = dict(enabled=False)
    c.optim.lr, c.optim.warmup_steps, c.optim.total_steps = float(d.lr), int(d.warmup_steps), int(d.steps)
    c.optim.trainable = list(d.trainable)
    c.optim.ema_decay = 0.0
    c.train.num_steps = int(d.steps)
    c.train.sample_every = 0
    c.train.checkpoint_every = 0
  sources = tuple(dict(s, text_letter_drill=True, text_qa_turns=0) for s in inputs.sources)
  return c, inputs.replace(sources=sources)


def _side_stage(workdir, name: str, config, inputs: TrainInputs, note: str) -> str:
  """Trains `config` from `inputs.init_from` in <workdir>/<name> and exports <workdir>/<name>_model (skipped when
  that export exists; an unfinished run resumes from its checkpoint); returns the export. Prints `note` first."""
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  from janus_jax.train import loop  # pylint: disable=import-outside-toplevel
  path = str(paths.resolve(workdir) / f"{name}_model")
  if not store.is_checkpoint(path):
    print(note, flush=True)
    state = loop.train(config, paths.resolve(workdir) / name, inputs)
    if not loop.finished(state, config):
      from janus_jax.train.checkpoint import Preempted  # pylint: disable=import-outside-toplevel
      raise Preempted()
    loop.export_model(state, inputs, path, config.template)
  return path


def drill_step(config, workdir: str, inputs: TrainInputs) -> str:
  """Runs the `drill` stage (see `drill_config`) unless `<workdir>/drill_model` exists; returns that checkpoint."""
  drill, drill_inputs = drill_config(config, inputs)
  return _side_stage(workdir, "drill", drill, drill_inputs,
                     f"[drill] {config.drill.steps} steps of the text-only letter drill, trainable "
                     f"{list(config.drill.trainable)}, lr {config.drill.lr}")


PRE_STAGE_KEYS = ("stage", "steps", "lr")


def pre_stage_config(config, spec, generation_mode: str):
  """The config of one `pre_stages` entry {stage: 1|2|3, steps: N[, lr]}: `config` with the paper recipe's trainable
  set of that stage (`optim.stage_trainable`) for N steps (warm-up at most N - 1, no sample grids). A derived copy."""
  from janus_jax.configs.common import reject_unknown_keys  # pylint: disable=import-outside-toplevel
  from janus_jax.train.optim import stage_trainable  # pylint: disable=import-outside-toplevel
  spec = dict(spec)
  try:
    reject_unknown_keys(spec, PRE_STAGE_KEYS, "pre_stages entry")
    trainable = stage_trainable(int(spec["stage"]), generation_mode)
    steps = int(spec["steps"])
  except (KeyError, ValueError, TypeError) as e:
    raise ConfigError(f"pre_stages entry {spec}: {e} Each entry is {{'stage': 1|2|3, 'steps': N[, 'lr': x]}}, e.g. "
                      "--config.pre_stages=\"({'stage': 1, 'steps': 100}, {'stage': 2, 'steps': 200})\".") from None
  if steps < 1:
    raise ConfigError(f"pre_stages entry {spec}: steps must be >= 1.")
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.optim.update(trainable)
    c.optim.total_steps = steps
    c.optim.warmup_steps = min(int(c.optim.warmup_steps), steps - 1)
    c.optim.lr = float(spec.get("lr", c.optim.lr))
    c.train.num_steps = steps
    c.train.sample_every = 0
  return c


def pre_stages_step(config, workdir: str, inputs: TrainInputs) -> str:
  """Runs the `pre_stages` in order (stage k in <workdir>/pre_stage<i>, each from the previous export) before the
  main training stage; returns the last export, the main stage's `init_from`."""
  for i, spec in enumerate(config.pre_stages):
    c = pre_stage_config(config, spec, inputs.model.generation_mode)
    note = f"[pre-stage {i}] the stage-{int(spec['stage'])} trainable set for {int(spec['steps'])} steps"
    inputs = inputs.replace(init_from=_side_stage(workdir, f"pre_stage{i}", c, inputs, note))
  return inputs.init_from


def image_size_note(config, data_image_size: int) -> str | None:
  """A message when the model generates images of another size than the data's (None when they agree): the
  text-to-image targets are then resized and the Shapes-GenEval detector sees resized scenes. In Janus the number of
  generated tokens is the understanding encoder's patch count, so e.g. `model.vision.patch_size` changes it too."""
  from janus_jax.train.inputs import model_config  # pylint: disable=import-outside-toplevel
  cfg = model_config(config)
  size = cfg.generated_image_size
  if size == data_image_size:
    return None
  return (f"note: the model generates {size} px images ({cfg.num_image_tokens} tokens, as many as the understanding "
          f"encoder's {cfg.gen_grid}x{cfg.gen_grid} patches) but the data's images are {data_image_size} px: "
          f"text-to-image targets are resized to {size} px. "
          "For same-size generation make (model.vision.image_size / patch_size) * the image tokenizer's downsampling "
          f"equal {data_image_size}.")


def eval_step(config, checkpoint: str, data: dict, name: str) -> dict:
  from janus_jax.evals.run import evaluate_checkpoint  # pylint: disable=import-outside-toplevel
  results = evaluate_checkpoint(checkpoint, data["data_dir"], data["tfds_name"],
                                n_per_category=config.eval.n_per_category, num_questions=config.eval.num_questions,
                                cfg_weight=config.eval.cfg_weight, temperature=config.eval.temperature,
                                seed=int(config.seed), cfg_weights=tuple(config.eval.get("cfg_weights", ())))
  print(f"[eval:{name}] generation overall {results['generation']['overall']:.3f}  understanding overall "
        f"{results['understanding']['overall']:.3f}", flush=True)
  return results


def _samples_png(config, checkpoint: str, path) -> list[str]:
  """4 CFG samples of each `train.sample_prompts` entry from `checkpoint`, as one grid PNG (4x nearest upscale)."""
  import janus_jax  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from janus_jax.processing.image import image_grid  # pylint: disable=import-outside-toplevel
  prompts = list(config.train.sample_prompts)
  out = janus_jax.load(checkpoint).generate(prompts, num_images=4, cfg_weight=config.eval.cfg_weight, seed=0)
  grid = image_grid(out.images, cols=4)
  if is_primary():
    import io  # pylint: disable=import-outside-toplevel
    buffer = io.BytesIO()
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(buffer, format="PNG")
    paths.resolve(path).write_bytes(buffer.getvalue())
  return prompts


def check_config(config, mode: str) -> None:
  """The settings checks of `janus_jax.train.inputs.check_settings`, plus the sections `mode` needs."""
  check_settings(config)
  if mode in ("prepare", "vq") and "data" not in config:
    raise ConfigError(f"--mode={mode} prepares the Shapes data: this config has no `data` section. Use --mode=train.")
  if mode == "eval" and ("eval" not in config or "data" not in config):
    raise ConfigError("--mode=eval scores a model on Shapes: this config has no `eval` / `data` section.")
  if config.get("pre_stages"):
    from janus_jax.train.inputs import model_config  # pylint: disable=import-outside-toplevel
    mode_name = model_config(config).generation_mode
    for spec in config.pre_stages:
      pre_stage_config(config, spec, mode_name)
  init_from = config.get("init_from")
  if config.get("image_tokenizer_from"):
    from janus_jax.train.inputs import model_config  # pylint: disable=import-outside-toplevel
    if init_from:
      raise ConfigError("image_tokenizer_from and init_from are both set: init_from already holds an image "
                        "tokenizer. Fix: drop one of them.")
    check_image_tokenizer_from(config.image_tokenizer_from, model_config(config))
  if init_from:
    from janus_jax.train.inputs import model_config  # pylint: disable=import-outside-toplevel
    check_init_from(str(paths.resolve(init_from)), model_config(config))


def run_all(config, workdir: str, mode: str = "all") -> dict:
  """The main job (see module docstring); returns the summary (with `--mode=all` also `<workdir>/eval.json`)."""
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  from janus_jax.train import loop  # pylint: disable=import-outside-toplevel
  from janus_jax.train.checkpoint import NotWritableError, writable_dir  # pylint: disable=import-outside-toplevel
  check_config(config, mode)
  t0 = time.time()
  try:
    workdir = writable_dir(workdir)
  except NotWritableError as e:
    raise ConfigError(str(e)) from e
  print(f"workdir: {workdir}", flush=True)
  inputs = TrainInputs.from_config(config)
  if inputs.init_from:
    from janus_jax.train.inputs import model_config, model_notes  # pylint: disable=import-outside-toplevel
    notes = model_notes(store.load_config(inputs.init_from), model_config(config))
    if notes:
      print(f"note: the model is init_from's; where the config differs it uses the checkpoint's values: {notes}",
            flush=True)
  data, timings = None, {}
  if not inputs.sources and "data" in config:
    data = prepare_step(config, workdir)
    timings["prepare"] = round(time.time() - t0, 1)
    inputs = inputs.replace(sources=(shapes_source(config.data, data),), tokenizer=inputs.tokenizer or data["tokenizer"])
    if mode == "prepare":
      return {"data": {k: v for k, v in data.items() if k != "spec"}}
    note = image_size_note(config, data["spec"].image_size)
    if note:
      print(note, flush=True)
  check_inputs(inputs)
  summary = {"generation_mode": inputs.model.generation_mode}
  model_ckpt = str(workdir / "model")
  if mode == "eval":
    if not store.is_checkpoint(model_ckpt):
      raise ConfigError(f"--mode=eval: {model_ckpt} holds no exported model yet; run --mode=all or --mode=train first.")
    summary["trained"] = eval_step(config, model_ckpt, data, "trained")
    _write_json(workdir / "eval.json", summary)
    return summary
  tok_section = inputs.model.mode.tokenizer_section
  init_ckpt = inputs.init_from
  existing_init = workdir / "init_model"
  if not inputs.init_from and data is not None and tok_section in config and store.is_checkpoint(existing_init):
    # The image-tokenizer stage finished in an earlier run of this workdir (a restart, or a one-process --mode=vq
    # run before a multi-process one): its model (with e.g. the calibrated VAE scale) and report are reused.
    from janus_jax.train.inputs import adopt_settings  # pylint: disable=import-outside-toplevel
    init_ckpt = str(existing_init)
    inputs = inputs.replace(init_from=init_ckpt, model=adopt_settings(store.load_config(init_ckpt), inputs.model))
    report = workdir / tok_section / "report.json"
    if report.exists():
      summary[tok_section] = json.loads(report.read_text())
    print(f"[{tok_section}] done in an earlier run: {init_ckpt}", flush=True)
  reuse = bool(config.get("image_tokenizer_from"))
  if not inputs.init_from and (reuse or (data is not None and tok_section in config)):
    t = time.time()
    if reuse:
      tok_params, summary[tok_section], model = reused_image_tokenizer(config, inputs.model)
    else:
      tok_params, summary[tok_section], model = image_tokenizer_step(config, workdir, data, inputs.model)
    timings[tok_section] = round(time.time() - t, 1)
    inputs = inputs.replace(model=model)
    init_ckpt = _initial_checkpoint(config, workdir, inputs, tok_params)
    inputs = inputs.replace(init_from=init_ckpt)
  if mode == "vq":
    return summary
  if config.get("drill") and int(config.drill.steps) > 0:
    t = time.time()
    inputs = inputs.replace(init_from=drill_step(config, workdir, inputs))
    timings["drill"] = round(time.time() - t, 1)
  if config.get("pre_stages"):
    t = time.time()
    inputs = inputs.replace(init_from=pre_stages_step(config, workdir, inputs))
    timings["pre_stages"] = round(time.time() - t, 1)
  t = time.time()
  state = loop.train(config, workdir / "janus", inputs)
  timings["train"] = round(time.time() - t, 1)
  if not loop.finished(state, config):
    from janus_jax.train.checkpoint import Preempted  # pylint: disable=import-outside-toplevel
    raise Preempted()
  loop.export_model(state, inputs, model_ckpt, config.template)
  if is_primary():
    print(f"exported {model_ckpt}", flush=True)
  summary["checkpoint"] = model_ckpt
  if mode == "train" or "eval" not in config or data is None:
    return summary
  t = time.time()
  if init_ckpt:
    summary["untrained"] = eval_step(config, init_ckpt, data, "untrained")
  summary["trained"] = eval_step(config, model_ckpt, data, "trained")
  timings["eval"] = round(time.time() - t, 1)
  prompts = _samples_png(config, model_ckpt, workdir / "samples.png")
  timings["total"] = round(time.time() - t0, 1)
  summary.update(timings_seconds=timings, prompts=prompts)
  _write_json(workdir / "eval.json", summary)
  print(json.dumps({"timings_seconds": timings, "trained": {k: summary["trained"][k]["overall"] for k in
                    ("generation", "understanding")}}, indent=2))
  print(f"main job done: samples.png, eval.json, checkpoints and TensorBoard logs in {workdir}", flush=True)
  return summary


def quiet_logs() -> None:
  """Keeps the console to our own progress lines (orbax / TF / tfds log every file operation at INFO)."""
  import os  # pylint: disable=import-outside-toplevel
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from absl import logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)


def _fail(message: str) -> None:
  print(f"janus_jax.main: error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_CONFIG_ERROR)


def override_problem(config, overrides) -> str | None:
  """The first `--config.a.b=v` override whose path `config` lacks, explained with close matches (else None)."""
  for arg in overrides:
    path = arg.split("=", 1)[0][len("--config."):].split(".")
    node, walked = config, "config"
    for key in path:
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if key not in keys:
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f" Did you mean {walked}.{close[0]}?" if close else ""
        return (f"{arg.split('=', 1)[0]}: {walked} has no field {key!r}.{hint} Valid fields of {walked}: "
                f"{sorted(keys)}.")
      node, walked = node[key], f"{walked}.{key}"
  return None


def config_problem(argv: list[str]) -> str | None:
  """What is wrong with the `--config=` file / argument or a `--config.*` override in `argv`, in one line."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if not spec:
    return None
  from janus_jax.configs.common import load_config  # pylint: disable=import-outside-toplevel
  try:
    config = load_config(spec)
  except Exception as e:  # pylint: disable=broad-except  # get_config's own ValueError, a missing file, ...
    return f"--config={spec}: {e}"
  return override_problem(config, [a for a in argv if a.startswith("--config.")])


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with clear errors for what ml_collections reports as a raw traceback: an unknown config
  argument (`:stage=9`), a typo in an override key (`--config.input.tokenzer=`), a value of the wrong type."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  # absl's flags.Error; ml_collections' AttributeError, ...
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    _fail(config_problem(argv) or f"{first_line} (see --helpfull)")
  return []


def main(argv) -> None:
  del argv
  quiet_logs()
  try:
    kind = distributed.initialize(_DISTRIBUTED.value)
  except distributed.DistributedInitError as e:
    _fail(str(e))
  if kind:
    import jax  # pylint: disable=import-outside-toplevel
    print(f"distributed ({kind}): process {jax.process_index()} of {jax.process_count()}, "
          f"{jax.local_device_count()} local / {jax.device_count()} devices", flush=True)
  config = _CONFIG.value
  if config is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required.")
  mode = _MODE.value or config.get("mode", "train")
  from janus_jax.train.checkpoint import (  # pylint: disable=import-outside-toplevel
      CheckpointMismatchError, DataStateError, Preempted)
  try:
    run_all(config, _WORKDIR.value, mode)
  except (ConfigError, CheckpointMismatchError, DataStateError) as e:
    _fail(str(e))
  except Preempted:
    print(f"preempted (SIGTERM): the last checkpoint is in {_WORKDIR.value}; nothing exported. Run the same command "
          "again to resume.", flush=True)
    sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
