r"""The papers' central claims as Shapes ablations: one `get_hyper` per claim, 3 seeds per variant.

  python launch/sweep.py --config=experiments/ablations.py:decoupling --root=sweeps --name=decoupling --local
  janus-jax report sweeps/decoupling        # mean ± 95% CI per variant -> sweeps/decoupling/report/
  (the same for :repa, :cfg, :stages, :modes; add `,fast` for a seconds-long smoke sweep, e.g. :cfg,fast)

Claims (the config arg of the sweep picks one; variants x seeds 0, 1, 2):
  decoupling  model.und_encoder siglip vs vq: Janus decouples the understanding encoder from the generation
              tokenizer; a shared VQ encoder for both tasks loses understanding (Janus paper, ablation A vs C).
  repa        JanusFlow with REPA (train.flow.repa_weight 1) vs without (0): REPA improves generation.
  cfg         one Janus per seed, generation scored at guidance weights 1 (none), 2, 3, 5, 7 (eval.cfg_weights):
              classifier-free guidance improves prompt following.
  stages      the staged recipe (stage 1 -> 2 -> 3 trainable sets, `pre_stages`) vs one stage-3 run, same total steps.
  modes       generation mode ar_vq (VQ tokens) vs flow (JanusFlow rectified flow) at an equal budget.

A unit is the Shapes main job (experiments/shapes_demo.py: prepare, image tokenizer, Janus, Shapes-GenEval +
understanding) at a budget that keeps a claim near an hour on a 2-core CPU: `vq.steps` / `vae.steps` 200 on 4000
images, 600 training steps (the demo: 500 and 1800), the demo's evaluation size (100 prompts per GenEval category,
1000 questions). Every unit trains its own image tokenizer and model from its seed.
"""
from janus_jax.configs import common

CLAIMS = ("decoupling", "repa", "cfg", "stages", "modes")
SEEDS = (0, 1, 2)
STEPS = 600
CFG_WEIGHTS = (1.0, 2.0, 3.0, 5.0, 7.0)
# The staged variant: stage-1 and stage-2 trainable sets for these many of the STEPS, then stage 3 for the rest.
STAGE_STEPS = {1: 100, 2: 200}


def _demo():
  import os  # pylint: disable=import-outside-toplevel
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes_demo.py")


def get_config(arg=None):
  """One unit: arg gen=ar_vq|flow (generation mode), fast (a tiny smoke unit for tests)."""
  arg = common.parse_arg(arg, gen="ar_vq", fast=False)
  c = common.load_config(f"{_demo()}:gen={arg.gen}" + (",fast" if arg.fast else ""))
  tokenizer = c.vae if arg.gen == "flow" else c.vq
  if not arg.fast:
    tokenizer.steps, tokenizer.num_images = 200, 4000
    c.train.num_steps = STEPS  # one reference with optim.total_steps
    c.train.sample_every = 0
    c.train.checkpoint_every = 200
  return c


def _seeds(h, fast: bool):
  return h.sweep("config.seed", SEEDS[:2] if fast else SEEDS)


def get_hyper(h, arg=None):
  """The work units of one claim (`arg` = claim[,fast])."""
  names = [a.strip() for a in (arg or "").split(",") if a.strip()]
  fast = "fast" in names
  claims = [n for n in names if n != "fast"]
  if len(claims) != 1 or claims[0] not in CLAIMS:
    raise ValueError(f"experiments/ablations.py needs one claim as its argument, e.g. "
                     f"--config=experiments/ablations.py:decoupling; got {arg!r}. Valid claims: {', '.join(CLAIMS)}.")
  claim = claims[0]
  base = "fast" if fast else ""
  arg_of = lambda gen: ",".join(x for x in (f"gen={gen}", base) if x)  # pylint: disable=unnecessary-lambda-assignment
  seeds = _seeds(h, fast)
  if claim == "decoupling":
    variants = [[{"variant": "siglip (decoupled)"}], [{"variant": "vq (shared)", "config.model.und_encoder": "vq"}]]
    return h.product([h.chainit(variants), seeds, h.fixed("config_arg", arg_of("ar_vq"))])
  if claim == "repa":
    return h.product([h.chainit([[{"variant": "REPA", "config.train.flow.repa_weight": 1.0}],
                                 [{"variant": "no REPA", "config.train.flow.repa_weight": 0.0}]]),
                      seeds, h.fixed("config_arg", arg_of("flow"))])
  if claim == "cfg":
    return h.product([seeds, h.fixed("config.eval.cfg_weights", CFG_WEIGHTS),
                      h.fixed("config_arg", arg_of("ar_vq"))])
  if claim == "stages":
    total = 8 if fast else STEPS
    steps = {1: 2, 2: 2} if fast else STAGE_STEPS
    rest = total - sum(steps.values())
    one = {"variant": f"one stage ({total} steps)", "config.train.num_steps": total}
    staged = {"variant": f"staged 1->2->3 ({steps[1]}+{steps[2]}+{rest} steps)",
              "config.pre_stages": tuple(dict(stage=k, steps=v) for k, v in steps.items()),
              "config.train.num_steps": rest}
    return h.product([h.chainit([[one], [staged]]), seeds, h.fixed("config_arg", arg_of("ar_vq"))])
  return h.product([h.chainit([[{"variant": "ar_vq", "config_arg": arg_of("ar_vq")}],
                               [{"variant": "flow", "config_arg": arg_of("flow")}]]), seeds])
