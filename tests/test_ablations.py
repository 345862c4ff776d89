"""experiments/ablations.py: each claim's work units (variants x 3 seeds), every override valid, clear errors."""
import subprocess
import sys

import pytest

from janus_jax import main
from janus_jax.configs.common import load_config
from janus_jax.train.inputs import ConfigError
from launch import sweep

CLAIMS = {  # claim -> the variants it compares
    "decoupling": ["siglip (decoupled)", "vq (shared)"],
    "repa": ["REPA", "no REPA"],
    "cfg": [""],  # one trained model per seed; the report splits it by guidance weight
    "tokenizers": ["ar_vq", "flow"],
    "stages": ["one stage (600 steps)", "staged 1->2->3 (100+200+300 steps)"],
    "modes": ["ar_vq", "flow", "ar_continuous"],
}


@pytest.mark.parametrize("claim", sorted(CLAIMS))
def test_claim_units_are_variants_times_three_seeds(claim):
  spec = f"experiments/ablations.py:{claim}"
  units = sweep.work_units(spec)
  sweep.check_units(spec, units)  # every override exists in the unit's config and has the right type
  labels = sweep.variant_labels(units)
  assert list(dict.fromkeys(labels)) == CLAIMS[claim]
  for variant in CLAIMS[claim]:
    assert sorted(u["config.seed"] for u, l in zip(units, labels) if l == variant) == [0, 1, 2]


def test_claim_units_change_what_they_name():
  """Each variant's config differs from its partner only in what the claim is about (seed aside)."""
  def configs(claim):
    spec = f"experiments/ablations.py:{claim}"
    out = []
    for unit in sweep.work_units(spec):
      if unit["config.seed"] == 0:
        config = load_config(f"experiments/ablations.py:{sweep._config_arg(spec, unit)}")  # pylint: disable=protected-access
        sweep.hyper.apply_overrides(config, unit)
        out.append(config)
    return out

  siglip, vq = configs("decoupling")
  assert (siglip.model.und_encoder, vq.model.und_encoder) == ("siglip", "vq")
  repa, no_repa = configs("repa")
  assert (repa.train.flow.repa_weight, no_repa.train.flow.repa_weight) == (1.0, 0.0)
  assert repa.model.generation_mode == no_repa.model.generation_mode == "flow"
  one, staged = configs("stages")
  assert one.train.num_steps == staged.train.num_steps + sum(s["steps"] for s in staged.pre_stages) == 600
  ar, flow, cont = configs("modes")
  assert (ar.model.generation_mode, flow.model.generation_mode, cont.model.generation_mode) == (
      "ar_vq", "flow", "ar_continuous")
  assert (ar.train.num_steps, ar.input.batch_size) == (flow.train.num_steps, flow.input.batch_size) == (
      cont.train.num_steps, cont.input.batch_size)
  (cfg,) = configs("cfg")
  assert tuple(cfg.eval.cfg_weights) == (1.0, 2.0, 3.0, 5.0, 7.0)


def test_unknown_claim_names_the_valid_ones():
  assert sweep.work_units("experiments/ablations.py:repa,tokenizers=/t")[4]["config.image_tokenizer_from"] == \
      "/t/4/init_model"  # flow, seed 1: the tokenizers sweep's unit 3 + 1
  out = subprocess.run([sys.executable, "launch/sweep.py", "--config=experiments/ablations.py:decouple",
                        "--root=/tmp/never", "--dry_run"], capture_output=True, text=True, check=False)
  assert out.returncode == 2 and "Valid claims: decoupling, repa, cfg, stages, modes" in out.stderr, out.stderr


def test_pre_stage_config_takes_the_stage_trainable_set():
  config = load_config("experiments/shapes_demo.py")
  c = main.pre_stage_config(config, {"stage": 2, "steps": 30}, "ar_vq")
  assert c.optim.trainable is None and list(c.optim.frozen) == ["vision_model/.*", "gen_vision_model/.*"]
  assert (c.train.num_steps, c.optim.total_steps, c.optim.warmup_steps) == (30, 30, 29)
  assert config.train.num_steps == 1800 and config.optim.trainable is None  # the run's own config is untouched
  with pytest.raises(ConfigError, match=r"Unknown Janus training stage 4.*e.g. --config.pre_stages"):
    main.pre_stage_config(config, {"stage": 4, "steps": 3}, "ar_vq")
  with pytest.raises(ConfigError, match=r"Unknown pre_stages entry key\(s\) \['step'\]"):
    main.pre_stage_config(config, {"stage": 1, "step": 3}, "ar_vq")


def test_image_tokenizer_from_reuses_the_tokenizer_and_inits_the_rest_from_the_seed(tmp_path):
  """What the claims' units do with `tokenizers=`: the VQ of another run, everything else from the unit's seed."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from janus_jax.checkpoint import store  # pylint: disable=import-outside-toplevel
  first = load_config("experiments/shapes_demo.py:fast")
  main.run_all(first, str(tmp_path / "tok"), mode="vq")
  second = load_config("experiments/shapes_demo.py:fast")
  second.seed, second.image_tokenizer_from = 1, str(tmp_path / "tok" / "init_model")
  summary = main.run_all(second, str(tmp_path / "unit"), mode="vq")
  assert summary["vq"]["from"] == second.image_tokenizer_from and "psnr" in summary["vq"]
  a, _ = store.load_checkpoint(tmp_path / "tok" / "init_model")
  b, _ = store.load_checkpoint(tmp_path / "unit" / "init_model")
  for x, y in zip(jax.tree.leaves(a["gen_vision_model"]), jax.tree.leaves(b["gen_vision_model"])):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a["gen_head"]["output_mlp_projector"]["kernel"],
                            b["gen_head"]["output_mlp_projector"]["kernel"])  # seed 1's own init
  assert not (tmp_path / "unit" / "vq").exists()  # nothing trained
  own = load_config("experiments/shapes_demo.py:fast")
  own.seed = 1
  main.run_all(own, str(tmp_path / "own"), mode="vq")  # a tokenizer trained from seed 1 is another one
  c, _ = store.load_checkpoint(tmp_path / "own" / "init_model")
  assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a["gen_vision_model"]),
                                                      jax.tree.leaves(c["gen_vision_model"])))
  flow = load_config("experiments/shapes_demo.py:fast,gen=flow")
  flow.image_tokenizer_from = second.image_tokenizer_from
  with pytest.raises(ConfigError,
                     match=r"is a 'ar_vq' model \(image tokenizer 'vq'\); this run generates with 'flow'"):
    main.run_all(flow, str(tmp_path / "flow"), mode="vq")


def test_readme_sweep_commands_expand(tmp_path):
  """The README's ablation commands, as subprocesses (--dry_run: what each unit runs)."""
  run = lambda arg: subprocess.run([sys.executable, "launch/sweep.py", f"--config=experiments/ablations.py:{arg}",  # pylint: disable=unnecessary-lambda-assignment
                                    f"--root={tmp_path}", "--name=x", "--dry_run"], capture_output=True, text=True,
                                   check=True).stdout.strip().splitlines()
  tokenizers = run("tokenizers")
  assert len(tokenizers) == 6 and all("--config.mode=vq" in c for c in tokenizers)
  units = run(f"decoupling,tokenizers={tmp_path}/tokenizers")
  assert len(units) == 6 and f"--config.image_tokenizer_from={tmp_path}/tokenizers/2/init_model" in units[2]
  assert "--config.model.und_encoder=vq" in units[3] and units[3].endswith(f"--workdir={tmp_path}/x/3")


def test_demo_guidance_is_2_and_the_claims_keep_each_modes_default():
  """The demo samples and evaluates at CFG weight 2 in every mode (README: weight 5 is fragile at this size); the
  claims' units keep the weight they were measured at, the mode's default (None)."""
  for gen in ("ar_vq", "flow", "ar_continuous"):
    demo = load_config(f"experiments/shapes_demo.py:gen={gen}")
    assert demo.eval.cfg_weight == 2.0 and demo.train.sample_cfg_weight == 2.0
    unit = load_config(f"experiments/ablations.py:gen={gen}")
    assert unit.eval.cfg_weight is None and unit.train.sample_cfg_weight is None
