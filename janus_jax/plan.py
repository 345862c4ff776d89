"""Fit-to-memory plans: the train step of a config compiled ahead of time for N devices, without any weights.

  janus-jax plan --config=experiments/janus_stages.py:stage=2,family=janus_pro,size=7b --devices=64 [--platform=gpu]

The step is lowered with abstract state and batch (`jax.ShapeDtypeStruct`s carrying their shardings on the
configured mesh) and compiled for N fake CPU devices. Printed per device: the compiled executable's memory
(`memory_analysis`: arguments, outputs, the donated part they share, temporaries) and the FLOPs of one step; and
whether the peak fits named accelerators with 10% headroom. "auto" dtypes and precisions resolve for the *target*
platform (`--platform`, default gpu: bfloat16), not for the CPU that compiles.

What the figures are: the CPU compiler's buffer assignment of the SPMD-partitioned program, so sharding, remat and
batch choices show exactly, while fusion (and so temporaries) can differ on the accelerator's compiler by some
percent; `bench/accelerator_suite.py` measures the peak on a real device. FLOPs come from the XLA cost analysis of
the program with its layer scans unrolled (cost analysis counts a loop body once), remat recomputation included.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping

# Accelerator memory as marketed (GB = 1e9 bytes).
DEVICE_MEMORY_GB = {"H100 80GB": 80, "H200 141GB": 141, "TPU v5p 95GB": 95, "TPU v5e 16GB": 16}
HEADROOM = 0.9  # a plan fits when its peak is at most this share of the device's memory (runtime, fragmentation)
PLATFORMS = ("gpu", "tpu", "cpu")


def use_fake_devices(num_devices: int) -> None:
  """Makes this process's JAX backend N CPU devices. Must run before anything touches the backend."""
  if num_devices < 1:
    raise ValueError(f"--devices={num_devices}: use a positive number of devices.")
  import jax  # pylint: disable=import-outside-toplevel
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  if xla_bridge.backends_are_initialized():
    have = jax.device_count()
    if have != num_devices or jax.default_backend() != "cpu":
      raise ValueError(f"The JAX backend is already up with {have} {jax.default_backend()} device(s); plan "
                       f"{num_devices} devices in a fresh process (the `janus-jax plan` command does).")
    return
  os.environ["JAX_PLATFORMS"] = "cpu"
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", int(num_devices))


@dataclasses.dataclass(frozen=True)
class Plan:
  """One config's train step on `num_devices` devices: per-device bytes and FLOPs per step."""
  num_devices: int
  mesh: dict[str, int]
  platform: str
  compute: str                 # e.g. "bfloat16 / default" (the LLM's dtype and matmul precision)
  global_batch: int
  seq_len: int
  grad_accum_steps: int
  remat_policy: str
  scan_layers: bool
  num_params: int
  num_trainable: int
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  flops_per_step: float        # whole step, all devices

  @property
  def peak_bytes(self) -> int:
    """Live at once on one device: inputs, non-donated outputs and temporaries."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  @property
  def flops_per_device(self) -> float:
    return self.flops_per_step / self.num_devices

  def fits(self, device: str) -> bool:
    return self.peak_bytes <= HEADROOM * DEVICE_MEMORY_GB[device] * 1e9

  def to_dict(self) -> dict[str, Any]:
    return dict(dataclasses.asdict(self), peak_bytes=self.peak_bytes, flops_per_device=self.flops_per_device,
                fits={d: self.fits(d) for d in DEVICE_MEMORY_GB})


def _gib(n: float) -> str:
  return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


def _count_str(n: int) -> str:
  return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def format_plan(p: Plan, name: str = "") -> str:
  mesh = " ".join(f"{k}={v}" for k, v in p.mesh.items())
  fits = ", ".join(f"{d} {'yes' if p.fits(d) else 'no'}" for d in DEVICE_MEMORY_GB)
  return "\n".join([
      f"plan: {name or 'config'} on {p.num_devices} devices (mesh {mesh}), compute {p.compute} for {p.platform}",
      f"  global batch {p.global_batch} x {p.seq_len} tokens, grad_accum_steps {p.grad_accum_steps}, remat "
      f"{p.remat_policy}, {'scanned' if p.scan_layers else 'unrolled'} layers",
      f"  params {_count_str(p.num_params)}, trainable {_count_str(p.num_trainable)}",
      f"  per device: arguments {_gib(p.argument_bytes)}, outputs {_gib(p.output_bytes)} (donated into the "
      f"arguments: {_gib(p.alias_bytes)}), temporaries {_gib(p.temp_bytes)} -> peak {_gib(p.peak_bytes)}",
      f"  FLOPs per step {p.flops_per_step:.3g} ({p.flops_per_device:.3g} per device)",
      f"  fits (peak <= {HEADROOM:.0%} of memory): {fits}",
  ])


def _resolved_model(config, for_platform: str):
  """`config.model` as a JanusConfig, "auto" dtypes / precisions resolved for `for_platform`."""
  from janus_jax import precision  # pylint: disable=import-outside-toplevel
  from janus_jax.models.configs import COMPONENTS, JanusConfig  # pylint: disable=import-outside-toplevel
  model = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
  for part in COMPONENTS:
    if part in model:
      section = dict(model[part])
      section["dtype"], section["matmul_precision"] = precision.resolve(
          section.get("dtype", "float32"), section.get("matmul_precision", "highest"), for_platform=for_platform,
          where=f"--config.model.{part}.{{field}}")
      model[part] = section
  return JanusConfig.from_dict(model)


def _train_settings(config) -> dict:
  train = config.train.to_dict() if hasattr(config.train, "to_dict") else dict(config.train)
  if train.get("pad_id") is None:
    train["pad_id"] = 0  # the tokenizer's; its value changes no shape
  return train


def _abstract_batch(config, cfg, batch_size: int, sharding) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  from janus_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from janus_jax.train.loop import packing_settings, row_spec  # pylint: disable=import-outside-toplevel
  shapes = pipeline.batch_spec(row_spec(config, cfg), dict(config.input.mixture), batch_size=batch_size,
                               packing=packing_settings(config.input))
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for k, (shape, dtype) in shapes.items()}


def _count(tree) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def plan(config, num_devices: int | None = None, for_platform: str = "gpu") -> Plan:
  """Compiles `config`'s train step for this process's devices (see `use_fake_devices`) and returns its plan.

  `num_devices` (optional) checks that the backend has that many devices."""
  import jax  # pylint: disable=import-outside-toplevel
  from janus_jax import compile_options, sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  from janus_jax.train import state as state_lib, step as step_lib  # pylint: disable=import-outside-toplevel
  if for_platform not in PLATFORMS:
    raise ValueError(f"Unknown --platform {for_platform!r}: use one of {', '.join(PLATFORMS)}.")
  if num_devices is not None and jax.device_count() != num_devices:
    raise ValueError(f"The backend has {jax.device_count()} devices, not {num_devices}: call "
                     "janus_jax.plan.use_fake_devices first (before any JAX computation).")
  with compile_options.compiling_for(for_platform):  # trace and compile as on that platform, not on this CPU
    cfg = _resolved_model(config, for_platform)
    mesh = sharding_lib.make_mesh([tuple(x) for x in config.mesh])
    rules = [tuple(r) for r in config.sharding_rules]
    train = _train_settings(config)
    batch_size = int(config.input.batch_size)
    batch_sharding = step_lib.batch_sharding(mesh)
    accum = step_lib.resolved_grad_accum(train, batch_size, mesh)
    train["grad_accum_steps"] = accum
    step_lib.check_batch_divisible({"input_ids": jax.ShapeDtypeStruct((batch_size, 1), "int32")}, mesh, accum)

    shardings = state_lib.state_shardings(cfg, config.optim, mesh, rules)
    abstract = state_lib.abstract_state(cfg, config.optim)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    batch = _abstract_batch(config, cfg, batch_size, batch_sharding)
    rng = jax.ShapeDtypeStruct((2,), "uint32", sharding=sharding_lib.replicated(mesh))
    run = step_lib.compile_train_step(step_lib.make_train_step(cfg, train), shardings, batch_sharding, mesh, rules)
    with run.context():
      compiled = run.jitted.lower(state, batch, rng).compile()
    memory = compiled.memory_analysis()
    llm = cfg.llm
    return Plan(num_devices=jax.device_count(), mesh=dict(mesh.shape), platform=for_platform,
                compute=f"{llm.dtype} / {llm.matmul_precision}", global_batch=batch_size,
                seq_len=int(config.input.seq_len), grad_accum_steps=accum, remat_policy=llm.remat_policy,
                scan_layers=bool(llm.scan_layers), num_params=_count(abstract.params),
                num_trainable=_count([x for x, f in zip(jax.tree.leaves(abstract.params), abstract.trainable_flags())
                                      if f]),
                argument_bytes=int(memory.argument_size_in_bytes), output_bytes=int(memory.output_size_in_bytes),
                alias_bytes=int(memory.alias_size_in_bytes), temp_bytes=int(memory.temp_size_in_bytes),
                flops_per_step=step_flops(cfg, config.optim, train, state, batch, rng, mesh, rules))


def step_flops(cfg, optim_cfg, train: Mapping, state, batch, rng, mesh, rules) -> float:
  """FLOPs of one train step from XLA's cost analysis of the lowered (unpartitioned) program with the layer scans
  unrolled and no microbatch loop: the same arithmetic, counted once per layer and row."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from janus_jax.train import state as state_lib, step as step_lib  # pylint: disable=import-outside-toplevel
  unrolled = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, scan_layers=False),
                                 vision=dataclasses.replace(cfg.vision, scan_layers=False))
  flat = state_lib.abstract_state(unrolled, optim_cfg)
  strip = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
  step_fn = step_lib.make_train_step(unrolled, dict(train, grad_accum_steps=1))
  with jax.set_mesh(mesh), nn.logical_axis_rules(state_lib.normalize_rules(rules)):
    lowered = jax.jit(step_fn).lower(jax.tree.map(strip, flat), jax.tree.map(strip, batch), strip(rng))
  return float(lowered.cost_analysis().get("flops", float("nan")))


def parse_config(argv: list[str]):
  """The ConfigDict of `--config=experiments/<x>.py[:arg]` and its `--config.a.b=v` overrides in `argv` (as the
  main job reads them; ml_collections finds the override flags in the argv it is given)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  argv = ["plan"] + list(argv)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "experiments/<name>.py[:arg]", flag_values=values, sys_argv=argv)
  values(argv)
  return values.config


def run(argv: list[str], num_devices: int, for_platform: str = "gpu", json_out: str | None = None) -> Plan:
  """The `janus-jax plan` command: `argv` holds `--config=...` and its `--config.a.b=v` overrides."""
  import json  # pylint: disable=import-outside-toplevel
  use_fake_devices(num_devices)
  config = parse_config(argv)
  if config is None:
    raise ValueError("janus-jax plan needs --config=experiments/<name>.py[:arg] (e.g. "
                     "--config=experiments/janus_stages.py:stage=2,family=janus_pro,size=7b).")
  p = plan(config, num_devices, for_platform)
  name = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
  print(format_plan(p, name), flush=True)
  if json_out:
    from janus_jax import paths  # pylint: disable=import-outside-toplevel
    out = paths.resolve(json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(p.to_dict(), config=name), indent=1))
  return p
