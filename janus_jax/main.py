r"""Entry point: `python -m janus_jax.main --config=experiments/<x>.py[:arg] --workdir=DIR [--mode=...]`.

Modes:
  train  (default for stage configs) `janus_jax.train.loop.train(config, workdir)`.
  all    the embedded-default main job (configs with a `data` and `vq` section, e.g. experiments/shapes_demo.py):
         prepare Shapes + tokenizer -> train the VQ tokenizer (flow mode: the KL-VAE, section `vae`) -> the
         `drill` stage when configured (the LLM alone on text-only multiple-choice letter drills, `drill_config`)
         -> train Janus / JanusFlow on the mixture -> export a janus_jax
         checkpoint -> evaluate the untrained and the trained model (Shapes-GenEval + understanding) -> samples.png,
         eval.json, TensorBoard logs under the workdir. Every step resumes from what the workdir already holds.
  prepare / vq / eval: one step of `all`.
Any config field can be overridden: --config.train.num_steps=100. On several hosts, `jax.distributed.initialize()`
runs first (set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or let the TPU / SLURM cluster
environment provide them).
"""
from __future__ import annotations

import json
import os
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiments/<name>.py[:arg]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and outputs go")
_MODE = flags.DEFINE_enum("mode", None, ["all", "prepare", "vq", "train", "eval"], "what to run (default: the "
                          "config's `mode`, else 'train')")


def _maybe_initialize_distributed() -> None:
  import jax  # pylint: disable=import-outside-toplevel
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or int(os.environ.get("JAX_NUM_PROCESSES", "1")) > 1:
    jax.distributed.initialize()


def prepare_step(config, workdir: str) -> dict:
  from janus_jax.data.prepare import prepare  # pylint: disable=import-outside-toplevel
  data_dir = config.data.data_dir or os.path.join(workdir, "data")
  return prepare(data_dir, config.data.config_name, config.data.vocab_size)


def _images(tfds_name: str, data_dir: str, split: str, num: int):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from janus_jax.data.sources import tfds_source  # pylint: disable=import-outside-toplevel
  src = tfds_source(tfds_name, split, data_dir, per_process=False)
  return np.stack([np.asarray(src[i]["image"]) for i in range(min(num, len(src)))])


def vq_step(config, workdir: str, data: dict):
  """Trains (or reloads) the VQ tokenizer; returns (params, report)."""
  from janus_jax.models.configs import VQConfig  # pylint: disable=import-outside-toplevel
  from janus_jax.train.vq_trainer import train_vq  # pylint: disable=import-outside-toplevel
  cfg = VQConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.vq.model.to_dict().items()})
  train_images = _images(data["tfds_name"], data["data_dir"], "train", config.vq.num_images)
  eval_images = _images(data["tfds_name"], data["data_dir"], "validation", 512)
  params, report = train_vq(cfg, train_images, eval_images, steps=config.vq.steps, batch_size=config.vq.batch_size,
                            lr=config.vq.lr, workdir=os.path.join(workdir, "vq"), checkpoint_every=config.vq.steps,
                            restart_every=int(config.vq.get("restart_every", 0)),
                            adversarial_weight=float(config.vq.get("adversarial_weight", 0.0)),
                            adversarial_start=int(config.vq.get("adversarial_start", 0)))
  with open(os.path.join(workdir, "vq", "report.json"), "w") as f:
    json.dump(report, f, indent=2, default=float)
  print(f"[vq] {report}", flush=True)
  return params, report


def vae_step(config, workdir: str, data: dict):
  """Flow mode: trains (or reloads) the KL autoencoder; sets model.vae.scaling_factor = 1 / latent std from the
  trained VAE (as SD VAEs are calibrated); returns (params, report)."""
  from janus_jax.models.configs import KLVAEConfig  # pylint: disable=import-outside-toplevel
  from janus_jax.train.vae_trainer import train_vae  # pylint: disable=import-outside-toplevel
  model_vae = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model.vae.to_dict().items()}
  cfg = KLVAEConfig(**model_vae)
  v = config.vae
  train_images = _images(data["tfds_name"], data["data_dir"], "train", v.num_images)
  eval_images = _images(data["tfds_name"], data["data_dir"], "validation", 512)
  params, report = train_vae(cfg, train_images, eval_images, steps=v.steps, batch_size=v.batch_size, lr=v.lr,
                             kl_weight=v.kl_weight, workdir=os.path.join(workdir, "vae"), checkpoint_every=v.steps)
  with config.unlocked():
    config.model.vae.scaling_factor = float(report["scaling_factor"])
  with open(os.path.join(workdir, "vae", "report.json"), "w") as f:
    json.dump(report, f, indent=2, default=float)
  print(f"[vae] psnr {report['psnr']:.2f} dB, latent std {1 / report['scaling_factor']:.3f} -> scaling_factor "
        f"{report['scaling_factor']:.4f}", flush=True)
  return params, report


def _initial_checkpoint(config, workdir: str, data: dict, image_tokenizer_params) -> str:
  """A janus_jax checkpoint of the randomly initialised model with the trained VQ (flow mode: VAE): `init_from`
  of training, and the 'untrained' model of the evaluation."""
  import jax  # pylint: disable=import-outside-toplevel
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  from janus_jax.train import loop, state  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, "init_model")
  if not store.is_checkpoint(path):
    cfg = loop.model_config(config)
    params = state.init_model_params(cfg, jax.random.PRNGKey(int(config.seed)))
    key = "vae" if cfg.is_flow else "gen_vision_model"
    params = dict(params, **{key: image_tokenizer_params})
    store.save_checkpoint(path, params, cfg, tokenizer_dir=data["tokenizer"], extra_info={"template": config.template})
  return path


def drill_config(config, init_from: str):
  """The config of the `drill` stage: `config` with the text-only letter drill as its only data
  (`sources._shapes_letter_drill`), `drill.trainable` trained at `drill.lr` for `drill.steps` steps from `init_from`.

  `drill` keys: steps, lr, warmup_steps, batch_size, seq_len, trainable (regexes, e.g. ["language_model/.*"])."""
  from janus_jax.configs.common import reject_unknown_keys  # pylint: disable=import-outside-toplevel
  d = config.drill
  reject_unknown_keys(d, ("steps", "lr", "warmup_steps", "batch_size", "seq_len", "trainable"), "drill")
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.init_from = init_from
    c.input.mixture = {"text": 1.0}
    c.input.sources = [dict(s, text_letter_drill=True, text_qa_turns=0) for s in config.input.sources]
    c.input.seq_len, c.input.batch_size = int(d.seq_len), int(d.batch_size)
    c.input.packing = dict(enabled=False)
    c.optim.lr, c.optim.warmup_steps, c.optim.total_steps = float(d.lr), int(d.warmup_steps), int(d.steps)
    c.optim.trainable = list(d.trainable)
    c.optim.ema_decay = 0.0
    c.train.num_steps = int(d.steps)
    c.train.sample_every = 0
    c.train.checkpoint_every = 0
  return c


def drill_step(config, workdir: str, data: dict, init_from: str) -> str:
  """Runs the `drill` stage (see `drill_config`) unless `<workdir>/drill_model` exists; returns that checkpoint."""
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  from janus_jax.train import loop  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, "drill_model")
  if not store.is_checkpoint(path):
    print(f"[drill] {config.drill.steps} steps of the text-only letter drill, trainable {list(config.drill.trainable)}"
          f", lr {config.drill.lr}", flush=True)
    drill = drill_config(config, init_from)
    _export(drill, path, data, loop.train(drill, os.path.join(workdir, "drill")))
  return path


def _export(config, path: str, data: dict, state) -> str:
  import jax  # pylint: disable=import-outside-toplevel
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  from janus_jax.train import loop  # pylint: disable=import-outside-toplevel
  # With an EMA (JanusFlow: 0.99) the exported model is the EMA weights, as the released checkpoints are.
  params = state.ema_params if state.ema_params is not None else state.params
  store.save_checkpoint(path, jax.device_get(params), loop.model_config(config),
                        tokenizer_dir=data["tokenizer"], extra_info={"template": config.template}, overwrite=True)
  return path


def image_size_note(config, data_image_size: int) -> str | None:
  """A message when the model generates images of another size than the data's (None when they agree): the
  text-to-image targets are then resized and the Shapes-GenEval detector sees resized scenes. In Janus the number of
  generated tokens is the understanding encoder's patch count, so e.g. `model.vision.patch_size` changes it too."""
  from janus_jax.train import loop  # pylint: disable=import-outside-toplevel
  cfg = loop.model_config(config)
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
                                seed=int(config.seed))
  print(f"[eval:{name}] generation overall {results['generation']['overall']:.3f}  understanding overall "
        f"{results['understanding']['overall']:.3f}", flush=True)
  return results


def run_all(config, workdir: str, mode: str = "all") -> dict:
  """The main job (see module docstring); returns the summary also written to `<workdir>/eval.json`."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from janus_jax.train import loop  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  print(f"workdir: {workdir}", flush=True)
  data = prepare_step(config, workdir)
  timings = {"prepare": round(time.time() - t0, 1)}
  if mode == "prepare":
    return {"data": {k: v for k, v in data.items() if k != "spec"}}
  from janus_jax.processing.tokenizer import load_tokenizer  # pylint: disable=import-outside-toplevel
  pad_id = load_tokenizer(data["tokenizer"]).pad_id
  with config.unlocked():
    config.input.sources = [dict(kind="shapes", tfds_name=data["tfds_name"], data_dir=data["data_dir"],
                                 caption_prob=config.data.get("und_caption_prob", 0.0),
                                 qa_turns=config.data.get("und_qa_turns", 1),
                                 mc_weight=config.data.get("und_mc_weight", 1.0),
                                 text_qa_turns=config.data.get("text_qa_turns", 0),
                                 mc_scaffold=config.data.get("und_mc_scaffold", 0.0),
                                 text_letter_drill=config.data.get("text_letter_drill", False))]
    config.input.tokenizer = data["tokenizer"]
    config.train.pad_id = pad_id
  note = image_size_note(config, data["spec"].image_size)
  if note:
    print(note, flush=True)
  t = time.time()
  flow = config.model.get("generation_mode", "ar_vq") == "flow"
  tok_name = "vae" if flow else "vq"
  tok_params, tok_report = (vae_step if flow else vq_step)(config, workdir, data)
  timings[tok_name] = round(time.time() - t, 1)
  if mode == "vq":
    return {tok_name: tok_report}
  init_ckpt = _initial_checkpoint(config, workdir, data, tok_params)
  summary = {"generation_mode": "flow" if flow else "ar_vq", tok_name: tok_report}
  if mode == "eval" and os.path.isdir(os.path.join(workdir, "model")):
    summary["trained"] = eval_step(config, os.path.join(workdir, "model"), data, "trained")
    return summary
  start_from = init_ckpt
  if config.get("drill") and int(config.drill.steps) > 0:
    t = time.time()
    start_from = drill_step(config, workdir, data, init_ckpt)
    timings["drill"] = round(time.time() - t, 1)
  with config.unlocked():
    config.init_from = start_from
  t = time.time()
  state = loop.train(config, os.path.join(workdir, "janus"))
  timings["train"] = round(time.time() - t, 1)
  model_ckpt = _export(config, os.path.join(workdir, "model"), data, state)
  t = time.time()
  summary["untrained"] = eval_step(config, init_ckpt, data, "untrained")
  summary["trained"] = eval_step(config, model_ckpt, data, "trained")
  timings["eval"] = round(time.time() - t, 1)
  import janus_jax  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from janus_jax.cli import image_grid  # pylint: disable=import-outside-toplevel
  pipe = janus_jax.load(model_ckpt)
  prompts = list(config.train.sample_prompts)
  out = pipe.generate(prompts, num_images=4, cfg_weight=config.eval.cfg_weight, seed=0)
  grid = image_grid(out.images, cols=4)
  Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(
      os.path.join(workdir, "samples.png"))
  timings["total"] = round(time.time() - t0, 1)
  summary.update(timings_seconds=timings, prompts=prompts, checkpoint=model_ckpt)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump(summary, f, indent=2, default=lambda x: float(x) if np.isscalar(x) else str(x))
  print(json.dumps({"timings_seconds": timings, "trained": {k: summary["trained"][k]["overall"] for k in
                    ("generation", "understanding")}}, indent=2))
  print(f"main job done: samples.png, eval.json, checkpoints and TensorBoard logs in {workdir}", flush=True)
  return summary


def quiet_logs() -> None:
  """Keeps the console to our own progress lines (orbax / TF / tfds log every file operation at INFO)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from absl import logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)


def main(argv) -> None:
  del argv
  quiet_logs()
  _maybe_initialize_distributed()
  config = _CONFIG.value
  if config is None or _WORKDIR.value is None:
    raise app.UsageError("--config and --workdir are required.")
  mode = _MODE.value or config.get("mode", "train")
  if mode == "train":
    from janus_jax.train import loop  # pylint: disable=import-outside-toplevel
    loop.train(config, _WORKDIR.value)
  else:
    run_all(config, _WORKDIR.value, mode)


if __name__ == "__main__":
  app.run(main)
