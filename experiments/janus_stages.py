r"""Janus / Janus-Pro three-stage training: model, optimizer, step, data mixture and mesh per stage.

  --config=experiments/janus_stages.py:stage=2,family=janus_pro,size=1b
  --config=experiments/janus_stages.py:stage=1,family=janusflow,size=1_3b
  arg: stage=1|2|3, family=janus|janus_pro|janusflow, size=shapes|1_3b|1b|7b (janus: shapes, 1_3b; janus_pro:
       shapes, 1b, 7b; janusflow: shapes, 1_3b), dtype and precision (compute dtype and matmul
       precision; default "auto": the platform's, CPU float32 / highest, GPU and TPU bfloat16 / default), scan, remat.

Released sizes carry the papers' hyper-parameters (janus_models.md 5.1 / 5.2; AdamW(0.9, 0.95), clip 1.0):
  Janus       stage   lr     schedule  wd   warm-up  steps  batch  und:text:gen
              1       1e-3   cosine    0    300      10k    256    1:0:1
              2       1e-4   constant  0    5000     180k   512    2:3:5   (ImageNet-only for the first 120k steps)
              3       2e-5   constant  0.1  0        24k    256    7:3:10
  Janus-Pro   1       1e-3   constant  0    600      20k    256    1:0:3
              2       1e-4   constant  0    5000     360k   512    2:3:5   (early-stopped at 270k)
              3       4e-5   constant  0    0        80k/40k (1B/7B)  128  5:1:4
  JanusFlow   1       1e-4   constant  0    2000     10k    512    und:gen:text 50:50:0
  (flow)      2       1e-4   constant  0    2000     390k   512    14:80:6 (30:50:20 for the first 10k steps)
              3       2e-5   constant  0    1000     26k    256    21:70:9
  JanusFlow also: EMA 0.99 (optim.ema_decay), REPA after LLM block 6 (weight 1), logit-normal t (0, 1), trainable
  sets 1 = new modules (linear aligners, BOI embed, g_enc, g_dec, REPA head), 2 = all but SigLIP, 3 = all; the VAE
  is always frozen. Note the papers' ratio order: JanusFlow reports und:gen:text, our mixture keys are named.
Trainable sets (`janus_jax.train.optim.stage_trainable`): 1 = both aligners + gen_head + gen_embed;
2 = all but SigLIP and the VQ; 3 = all but the VQ. CFG dropout 0.1 (prompt -> pad), sequences of 4096 tokens.

`size=shapes` is the CPU / single-GPU variant: the tiny model (`configs.models.janus_tiny`), batch 32 of 96
tokens, 300 steps, short warm-up and learning rates raised for a small model trained from scratch, same
schedules, weight decay and trainable sets. `train.num_steps` and `optim.total_steps` are one reference:
overriding either changes both.

What a run reads (overridable from the command line):
  init_from        a janus_jax checkpoint to start from (`janus-jax convert` output or an earlier stage's
                   <workdir>/model). Released sizes need it; at size=shapes, without it the job first trains the
                   image tokenizer (section `vq`, JanusFlow: `vae`) on Shapes and starts from random weights.
  input.tokenizer  tokenizer folder or file; default: <init_from>/tokenizer, else (size=shapes) the Shapes one.
  input.sources    a tuple of dicts (janus_jax.data.sources.adapter_from_config), e.g.
                   --config.input.sources="({'kind': 'pairs', 'paths': '/data/train.arrayrecord'},)".
                   Empty at size=shapes: the job prepares Shapes (section `data`) in data.data_dir or <workdir>/data.
`python -m janus_jax.main --config=... --workdir=DIR` trains and exports DIR/model (the EMA for JanusFlow);
`launch/stages.py` runs stages 1 -> 2 -> 3, each starting from the previous export.
"""
import ml_collections

from janus_jax import sharding
from janus_jax.configs import common, hyper, models
from janus_jax.train.optim import stage_trainable

# family -> stage -> (lr, schedule, weight_decay, warmup_steps, steps, batch, (und, text, gen)).
PAPER = {
    "janus": {
        1: (1e-3, "cosine", 0.0, 300, 10_000, 256, (1, 0, 1)),
        2: (1e-4, "constant", 0.0, 5000, 180_000, 512, (2, 3, 5)),
        3: (2e-5, "constant", 0.1, 0, 24_000, 256, (7, 3, 10)),
    },
    "janus_pro": {
        1: (1e-3, "constant", 0.0, 600, 20_000, 256, (1, 0, 3)),
        2: (1e-4, "constant", 0.0, 5000, 360_000, 512, (2, 3, 5)),
        3: (4e-5, "constant", 0.0, 0, 80_000, 128, (5, 1, 4)),  # 40k steps for the 7B.
    },
    # (und, text, gen) here, converted from the paper's und:gen:text.
    "janusflow": {
        1: (1e-4, "constant", 0.0, 2000, 10_000, 512, (50, 0, 50)),
        2: (1e-4, "constant", 0.0, 2000, 390_000, 512, (14, 6, 80)),
        3: (2e-5, "constant", 0.0, 1000, 26_000, 256, (21, 9, 70)),
    },
}
SHAPES_LR = {1: 2e-3, 2: 1e-3, 3: 5e-4}
# Rows of seq_len tokens one device trains at once at the released sizes (measured with bench/plan_table.py).
ROWS_PER_DEVICE = {"1_3b": 4, "1b": 4, "7b": 1}
SIZES = {"janus": ("shapes", "1_3b"), "janus_pro": ("shapes", "1b", "7b"), "janusflow": ("shapes", "1_3b")}
MODELS = {"shapes": models.janus_tiny, "1_3b": models.janus_1_3b, "1b": models.janus_pro_1b, "7b": models.janus_pro_7b}
FLOW_MODELS = {"shapes": models.janusflow_tiny, "1_3b": models.janusflow_1_3b}
# The tokenizer's pad id (resolve it from the tokenizer when in doubt): tiny test tokenizer 0; janus_models.md 1.9.
TEMPLATES = {"janus": "deepseek_old", "janus_pro": "deepseek", "janusflow": "deepseek_old"}
SAMPLE_PROMPTS = ["a red circle", "two blue squares", "a green triangle left of a yellow circle",
                  "a purple square above a cyan triangle"]


def get_config(arg=None):
  arg = common.parse_arg(arg, stage=1, family="janus_pro", size="shapes", dtype="auto", precision="auto", scan=True,
                         remat="auto")
  if arg.family not in SIZES:
    raise ValueError(f"Unknown family {arg.family!r}; valid families: {sorted(SIZES)}.")
  if arg.size not in SIZES[arg.family]:
    raise ValueError(f"Size {arg.size!r} does not exist for family {arg.family!r}; valid sizes: "
                     f"{list(SIZES[arg.family])}.")
  if arg.stage not in PAPER[arg.family]:
    raise ValueError(f"Unknown stage {arg.stage!r}; valid stages: 1, 2, 3.")
  shapes = arg.size == "shapes"
  lr, schedule, wd, warmup, steps, batch, (und, text, gen) = PAPER[arg.family][arg.stage]
  if arg.family == "janus_pro" and arg.stage == 3 and arg.size == "7b":
    steps = 40_000
  if shapes:
    lr, warmup, steps, batch = SHAPES_LR[arg.stage], min(warmup, 20), 300, 32
  remat = arg.remat if arg.remat != "auto" else ("none" if shapes else "dots_with_no_batch_dims_saveable")

  flow = arg.family == "janusflow"
  c = ml_collections.ConfigDict()
  c.mode = "train"
  c.seed = 0
  c.template = TEMPLATES[arg.family]
  c.init_from = ""
  # Fields the job refuses to run without (released sizes start from pretrained weights).
  c.required = () if shapes else ("init_from",)
  c.model = (FLOW_MODELS if flow else MODELS)[arg.size]()
  models.set_compute(c.model, arg.dtype, arg.precision)
  for part in ("llm", "vision"):
    c.model[part].scan_layers = arg.scan
    c.model[part].remat_policy = remat

  num_steps = ml_collections.FieldReference(steps)
  c.optim = ml_collections.ConfigDict(dict(
      lr=lr, schedule=schedule, warmup_steps=warmup, end_lr_factor=0.0, b1=0.9, b2=0.95, eps=1e-8,
      weight_decay=wd, grad_clip_norm=1.0, ema_decay=0.99 if flow else 0.0,
      **stage_trainable(arg.stage, "flow" if flow else "ar_vq")))
  c.optim.total_steps = num_steps

  c.train = ml_collections.ConfigDict(dict(
      grad_accum_steps=1,
      # At most this many rows per device in one forward/backward: grad_accum_steps is raised to fit the mesh
      # (README "Fit to memory"; janus-jax plan). None: the whole per-device batch at once.
      max_rows_per_device=ml_collections.config_dict.placeholder(int) if shapes else ROWS_PER_DEVICE[arg.size],
      cfg_dropout=0.1,
      pad_id=ml_collections.config_dict.placeholder(int),  # None: the tokenizer's pad id
      log_every=50 if shapes else 100, checkpoint_every=100 if shapes else 1000, keep_checkpoints=3,
      sample_every=0 if shapes else 5000, sample_prompts=SAMPLE_PROMPTS,
      sample_cfg_weight=ml_collections.config_dict.placeholder(float)))  # None: the mode's default (5 AR, 2 flow)
  if flow:
    c.train.flow = dict(t_location=0.0, t_scale=1.0, rf_weight=1.0, repa_weight=1.0, sample_posterior=False)
  c.train.num_steps = num_steps

  c.input = ml_collections.ConfigDict(dict(
      batch_size=batch,  # Global.
      seq_len=96 if shapes else 4096,
      mixture=dict(und=und, text=text, t2i=gen),  # Kinds of janus_jax.data.sources.KINDS.
      # First-fit packing of rows into seq_len-token sequences (--config.input.packing.enabled=True).
      packing=dict(enabled=False, max_und_images=2 if shapes else 6),
      system_prompt="",
      tokenizer="",  # default: <init_from>/tokenizer, else the Shapes tokenizer (size=shapes)
      # Entries for janus_jax.data.sources.adapter_from_config; empty at size=shapes = Shapes prepared by the job.
      sources=(),
      # grain worker processes making the rows (decode, resize, tokenize), batches a thread assembles ahead, and
      # threads per process reading rows ahead (worth it for remote files, not for local or in-memory data);
      # the batches are the same for any values. Resuming needs the workers count of the run that saved.
      workers=0 if shapes else 8, prefetch=2, read_threads=0 if shapes else 16))
  if shapes:  # the data and image tokenizer a from-scratch Shapes run prepares and trains first (janus_jax.main)
    c.data = dict(data_dir="", config_name="default", vocab_size=512)
    if flow:
      c.vae = dict(steps=500, batch_size=32, lr=2e-3, num_images=8000, kl_weight=1e-6)
    else:
      c.vq = dict(steps=500, batch_size=32, lr=2e-3, num_images=8000, restart_every=0, adversarial_weight=0.0,
                  adversarial_start=0)

  # A tuple, so that --config.mesh="(('data', 2), ('fsdp', 4), ('tensor', 1))" overrides it from the command line.
  c.mesh = tuple(sharding.DEFAULT_MESH) if shapes else (("data", 1), ("fsdp", -1), ("tensor", 1))
  c.sharding_rules = list(sharding.DEFAULT_RULES)
  return c


def get_hyper(h=hyper):
  """A small learning-rate sweep of the Shapes stage-1 run."""
  return h.product([h.fixed("config_arg", "stage=1,size=shapes"),
                    h.sweep("config.optim.lr", [1e-3, 2e-3, 4e-3])])
