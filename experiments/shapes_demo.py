r"""The main job on the embedded default (`make demo`): Shapes -> VQ tokenizer -> small Janus -> Shapes-GenEval.

  python -m janus_jax.main --config=experiments/shapes_demo.py --workdir=workdir/demo --mode=all
  python -m janus_jax.main --config=experiments/shapes_demo.py:gen=flow --workdir=workdir/demo_flow   (JanusFlow)
  arg: fast (a tiny smoke run for tests/CI), data_config (janus_shapes builder config, default "default"),
       gen=ar_vq|flow|ar_continuous (the generation mode; flow and ar_continuous train a KL-VAE instead of the VQ,
       then a JanusFlow model / a continuous-token Janus with the same LLM, SigLIP, data, steps and batch, so the
       modes are compared at an equal training budget).

Budget: <= 15 minutes on 2 CPU cores after installation. Everything trains from scratch: the VQ tokenizer first
(reconstruction + codebook + commitment losses), then every Janus part except the VQ (stage-III-style trainable
set) on a mixture of understanding, text-to-image and text rows with CFG dropout 0.1.
"""
import ml_collections

from janus_jax import sharding
from janus_jax.configs import common
from janus_jax.train.optim import stage_trainable

# The guidance weight the demo samples and evaluates at, every mode (None: the mode's default, janus_jax.modes).
# 2, not ar_vq's released default 5: on this small model 5 is fragile (README, Quick start; the `cfg` claim).
DEMO_CFG_WEIGHT = 2.0
SAMPLE_PROMPTS = ["a red circle", "two blue squares", "a green triangle left of a yellow circle",
                  "a purple square above a cyan triangle"]


def get_config(arg=None):
  arg = common.parse_arg(arg, fast=False, data_config="default", gen="ar_vq", pack=True)
  if arg.gen not in ("ar_vq", "flow", "ar_continuous"):
    raise ValueError(f"shapes_demo: gen={arg.gen!r}; valid: ar_vq, flow, ar_continuous.")
  fast = arg.fast
  flow = arg.gen == "flow"
  continuous = arg.gen == "ar_continuous"
  c = ml_collections.ConfigDict()
  c.mode = "all"
  c.seed = 0
  c.template = "deepseek"
  c.init_from = ""
  c.image_tokenizer_from = ""  # a checkpoint whose VQ / VAE this run uses instead of training one (e.g. <w>/init_model)
  # und_mc_scaffold: the share of multiple-choice turns asked open first (a curriculum for picking the option letter).
  # What was measured with these settings and left off: README, "The demo: what was tried".
  c.data = dict(data_dir="", config_name="tiny" if fast else arg.data_config, vocab_size=512,  # "": <workdir>/data
                und_caption_prob=0.5, und_qa_turns=3, und_mc_weight=1.0, und_mc_scaffold=0.5,
                text_qa_turns=0, text_letter_drill=False)

  vq = dict(codebook_size=256, codebook_dim=8, base_channels=32, channel_mult=(1, 2, 2, 2), z_channels=32,
            num_res_blocks=1, num_groups=8, encoder_attention=False)
  # The VQ trained is model.vq; this section holds its training settings. restart_every > 0 restarts dead codes.
  # adversarial_weight > 0 adds the PatchGAN hinge term from step adversarial_start on (off in the demo).
  c.vq = dict(steps=4 if fast else 500, batch_size=32, lr=2e-3, num_images=64 if fast else 8000,
              restart_every=0, adversarial_weight=0.0, adversarial_start=0)

  hidden = 64 if fast else 192
  c.model = dict(
      llm=dict(vocab_size=512, hidden_size=hidden, intermediate_size=2 * hidden if fast else 512,
               num_layers=2 if fast else 3, num_heads=4, num_kv_heads=4, max_position_embeddings=256,
               scan_layers=False),  # unrolled layers: 7% faster fwd+bwd than lax.scan on 2 CPU cores
      vision=dict(image_size=32, patch_size=8, width=64 if fast else 128, depth=1 if fast else 2, num_heads=4,
                  mlp_dim=128 if fast else 256, pos_embed_init="normal"),
      # input_dim 0: the understanding encoder's width (vision.width; vq.codebook_dim with und_encoder=vq).
      aligner=dict(kind="mlp_gelu", input_dim=0, output_dim=hidden, depth=2),
      vq=vq,
      gen_aligner=dict(kind="mlp_gelu", input_dim=8, output_dim=hidden, depth=2),
      gen_head=dict(n_embed=hidden, image_token_embed=hidden, image_token_size=256),
      gen_embed_dim=8,
      generation_mode="ar_vq",
      # --config.model.und_encoder=vq: the ablation of Janus's decoupling, understanding reads the (frozen,
      # pretrained) VQ's quantized latents instead of SigLIP (32 px -> 4x4 = 16 codes, as many as the 16 patches).
      und_encoder="siglip")

  if flow:
    width = 64 if fast else 128
    c.model = dict(
        llm=c.model.llm.to_dict(), vision=c.model.vision.to_dict(),
        aligner=dict(kind="linear", input_dim=c.model.vision.width, output_dim=hidden, depth=1),
        # 32 px -> 8x8x4 latents (4x down) -> 2x2 patches -> 16 tokens = the 16 SigLIP patches.
        vae=dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                 scaling_factor=1.0),  # the main job sets it to 1 / latent std after training the VAE
        uvit=dict(channels=width, hidden_size=hidden, layers_in_middle=2),
        repa=dict(layer=2 if not fast else 1, hidden_dim=hidden, output_dim=c.model.vision.width, depth=3),
        generation_mode="flow", und_encoder="siglip")
  if flow or continuous:
    c.vae = dict(steps=4 if fast else 500, batch_size=32, lr=2e-3, num_images=64 if fast else 8000, kl_weight=1e-6)
  if continuous:
    # 32 px -> 8x8x4 latents (the flow demo's VAE) -> 2x2 patches -> 16 continuous tokens of width 16.
    c.model = dict(
        llm=c.model.llm.to_dict(), vision=c.model.vision.to_dict(), aligner=c.model.aligner.to_dict(),
        vae=dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                 scaling_factor=1.0),
        cont=dict(patch_size=2, head_width=64 if fast else 128, head_depth=2 if fast else 3),
        generation_mode="ar_continuous", und_encoder="siglip")

  # The drill stage, before the mixture (main.drill_step; off when steps=0): the LLM alone learns on text rows to
  # pick the option letter of an answer it is given (the multiple-choice lookup), at a rate low enough for that
  # circuit to form (bench/probe_mc_matcher.py). Used with --config.data.text_letter_drill=True.
  c.drill = dict(steps=0, lr=2.5e-4, warmup_steps=2 if fast else 60, batch_size=8 if fast else 32, seq_len=72,
                 trainable=["language_model/.*"])

  # Earlier stages of the paper recipe before this one (main.pre_stage_config), e.g. ({'stage': 1, 'steps': 100},).
  c.pre_stages = ()
  steps = ml_collections.FieldReference(4 if fast else 1800)
  c.optim = ml_collections.ConfigDict(dict(lr=2e-3, schedule="cosine", warmup_steps=2 if fast else 60,
                                           end_lr_factor=0.05, weight_decay=0.0, grad_clip_norm=1.0,
                                           ema_decay=0.99 if flow else 0.0,
                                           **stage_trainable(3, arg.gen)))
  c.optim.total_steps = steps
  c.train = ml_collections.ConfigDict(dict(
      grad_accum_steps=1, cfg_dropout=0.1,
      max_rows_per_device=ml_collections.config_dict.placeholder(int),  # None: the whole batch at once
      pad_id=ml_collections.config_dict.placeholder(int),  # None: the tokenizer's pad id
      log_every=1 if fast else 100, checkpoint_every=0 if fast else 600, keep_checkpoints=2,
      sample_every=0 if fast else 600, sample_prompts=SAMPLE_PROMPTS,
      sample_cfg_weight=DEMO_CFG_WEIGHT))
  if flow:
    c.train.flow = dict(t_location=0.0, t_scale=1.0, rf_weight=1.0, repa_weight=1.0, sample_posterior=False)
  if continuous:
    c.train.continuous = dict(t_location=0.0, t_scale=1.0, rf_weight=1.0, t_samples=4, sample_posterior=False)
  c.train.num_steps = steps
  c.input = ml_collections.ConfigDict(dict(
      batch_size=8 if fast else 32, seq_len=96, mixture=dict(und=1.5, text=0.1, t2i=1.0), system_prompt="",
      # Rows average ~45 of the 96 tokens: first-fit packing puts ~1.9 rows in each sequence at the same step cost.
      packing=dict(enabled=arg.pack, max_und_images=2),
      sources=(), tokenizer="",  # empty: the main job prepares Shapes (section `data`) and uses its tokenizer
      # Rows made by grain worker processes / batches assembled ahead by a thread / rows read ahead by threads of
      # each process (same batches for any values).
      workers=0, prefetch=2, read_threads=0))
  # 600 GenEval prompts and the whole 1000-question test split (seconds each; smaller evaluations are noisy: README).
  # cfg_weights: generation is also scored at these guidance weights.
  c.eval = dict(n_per_category=2 if fast else 100, num_questions=8 if fast else 1000,
                cfg_weight=DEMO_CFG_WEIGHT, temperature=1.0, cfg_weights=())
  c.mesh = tuple(sharding.DEFAULT_MESH)
  c.sharding_rules = list(sharding.DEFAULT_RULES)
  return c


def get_hyper(h):
  """The demo over seeds 0, 1, 2 (`python launch/sweep.py --config=experiments/shapes_demo.py --root=R --name=seeds
  --local`, then `janus-jax report R/seeds`): the figures the README quotes."""
  return h.sweep("config.seed", [0, 1, 2])
