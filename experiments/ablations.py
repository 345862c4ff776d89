r"""The papers' central claims as Shapes ablations: one `get_hyper` per claim, 3 seeds per variant.

  python launch/sweep.py --config=experiments/ablations.py:tokenizers --root=sweeps --name=tokenizers --local
  python launch/sweep.py --config=experiments/ablations.py:decoupling,tokenizers=sweeps/tokenizers \
      --root=sweeps --name=decoupling --local
  janus-jax report sweeps/decoupling        # mean ± 95% CI per variant -> sweeps/decoupling/report/
  (the same for :repa, :cfg, :stages, :modes; `,fast` makes a seconds-long smoke sweep, e.g. :cfg,fast)

Claims (the config arg of the sweep picks one; variants x seeds 0, 1, 2):
  decoupling  model.und_encoder siglip vs vq: Janus decouples the understanding encoder from the generation
              tokenizer; one shared VQ encoder for both tasks loses understanding (Janus paper, ablation A vs C).
  repa        JanusFlow with REPA (train.flow.repa_weight 1) vs without (0): REPA improves generation.
  cfg         one Janus per seed, generation scored at guidance weights 1 (none), 2, 3, 5, 7 (eval.cfg_weights):
              classifier-free guidance improves prompt following.
  stages      the staged recipe (stage 1 -> 2 -> 3 trainable sets, `pre_stages`) vs one stage-3 run, same total steps.
  modes       generation mode ar_vq (VQ tokens) vs flow (JanusFlow rectified flow) vs ar_continuous (continuous
              KL-VAE tokens with a per-token flow head) at an equal budget.
`tokenizers` is the preparatory sweep: the demo's VQ and KL-VAE (500 steps on 8000 images each) for seeds 0, 1, 2
(`--mode=vq` units). With `tokenizers=<that sweep's folder>` every claim unit takes the image tokenizer of its seed
and mode from it (`image_tokenizer_from`) and initialises the rest of the model from its own seed; without it each
unit trains its own, which adds ~6 minutes per unit.

A claim unit is the Shapes main job (experiments/shapes_demo.py) at a budget that keeps a claim near an hour on a
2-core CPU: 600 Janus training steps (the demo: 1800), the demo's evaluation (100 prompts per GenEval category, the
1000 test questions), the untrained and the trained model.
"""
import os

from janus_jax.configs import common

CLAIMS = ("decoupling", "repa", "cfg", "stages", "modes")
GENS = ("ar_vq", "flow")  # the image tokenizers: the VQ, and the KL-VAE (shared by flow and ar_continuous)
# The generation modes of the `modes` claim, and the `tokenizers` unit (GENS entry) each takes its tokenizer from.
MODES = {"ar_vq": "ar_vq", "flow": "flow", "ar_continuous": "flow"}
SEEDS = (0, 1, 2)
STEPS = 600
CFG_WEIGHTS = (1.0, 2.0, 3.0, 5.0, 7.0)
# The staged variant: stage-1 and stage-2 trainable sets for these many of the STEPS, then stage 3 for the rest.
STAGE_STEPS = {1: 100, 2: 200}
_DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes_demo.py")


def get_config(arg=None):
  """One unit: arg gen=ar_vq|flow (generation mode), fast (a tiny smoke unit for tests)."""
  arg = common.parse_arg(arg, gen="ar_vq", fast=False)
  c = common.load_config(f"{_DEMO}:gen={arg.gen}" + (",fast" if arg.fast else ""))
  # The claims were measured at each mode's default guidance weight (ar_vq 5, flow 2), not the demo's 2: kept so.
  c.eval.cfg_weight = None
  c.train.sample_cfg_weight = None
  if not arg.fast:
    c.train.num_steps = STEPS  # one reference with optim.total_steps
    c.train.sample_every = 0
    c.train.checkpoint_every = 200
  return c


def _parse(arg):
  parsed = {"claim": None, "fast": False, "tokenizers": ""}
  for item in (a.strip() for a in (arg or "").split(",")):
    key, eq, value = item.partition("=")
    if item == "fast":
      parsed["fast"] = True
    elif key == "tokenizers" and eq:
      parsed["tokenizers"] = value
    elif item in CLAIMS + ("tokenizers",) and parsed["claim"] is None:
      parsed["claim"] = item
    elif item:
      parsed["claim"] = "?" + item
  if parsed["claim"] not in CLAIMS + ("tokenizers",):
    raise ValueError(f"experiments/ablations.py needs one claim as its argument, e.g. "
                     f"--config=experiments/ablations.py:decoupling; got {arg!r}. Valid claims: {', '.join(CLAIMS)} "
                     "(and `tokenizers`, the shared image tokenizers), optionally with `,tokenizers=<folder>`, `,fast`.")
  return parsed


def tokenizer_unit(gen: str, seed: int) -> int:
  """The index of the `tokenizers` unit holding the image tokenizer of (generation mode, seed)."""
  return GENS.index(MODES[gen]) * len(SEEDS) + SEEDS.index(seed)


def get_hyper(h, arg=None):
  """The work units of one claim (`arg` = claim[,tokenizers=<folder>][,fast])."""
  p = _parse(arg)
  claim, fast = p["claim"], p["fast"]
  seeds = SEEDS[:2] if fast else SEEDS
  arg_of = lambda gen: f"gen={gen}" + (",fast" if fast else "")  # pylint: disable=unnecessary-lambda-assignment
  if claim == "tokenizers":
    return [{"variant": gen, "config_arg": arg_of(gen), "config.seed": s, "config.mode": "vq"}
            for gen in GENS for s in SEEDS]
  if claim == "decoupling":
    variants = [("siglip (decoupled)", "ar_vq", {}), ("vq (shared)", "ar_vq", {"config.model.und_encoder": "vq"})]
  elif claim == "repa":
    variants = [("REPA", "flow", {"config.train.flow.repa_weight": 1.0}),
                ("no REPA", "flow", {"config.train.flow.repa_weight": 0.0})]
  elif claim == "cfg":
    variants = [("", "ar_vq", {"config.eval.cfg_weights": CFG_WEIGHTS})]
  elif claim == "stages":
    total = 8 if fast else STEPS
    steps = {1: 2, 2: 2} if fast else STAGE_STEPS
    rest = total - sum(steps.values())
    variants = [(f"one stage ({total} steps)", "ar_vq", {"config.train.num_steps": total}),
                (f"staged 1->2->3 ({steps[1]}+{steps[2]}+{rest} steps)", "ar_vq",
                 {"config.pre_stages": tuple(dict(stage=k, steps=v) for k, v in steps.items()),
                  "config.train.num_steps": rest})]
  else:  # modes
    variants = [(gen, gen, {}) for gen in MODES]
  units = []
  for label, gen, overrides in variants:
    for s in seeds:
      unit = {"variant": label, "config_arg": arg_of(gen), "config.seed": s, **overrides}
      if p["tokenizers"]:
        unit["config.image_tokenizer_from"] = os.path.join(p["tokenizers"], str(tokenizer_unit(gen, s)), "init_model")
      units.append(unit)
  return units
