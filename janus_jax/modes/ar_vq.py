"""Generation mode `ar_vq` (Janus / Janus-Pro): the LLM predicts VQ-16 image tokens, sampled with CFG.

Modules (param subtrees, the DeepSeek checkpoint prefixes): gen_vision_model (the VQ tokenizer), gen_embed,
gen_aligner, gen_head; the Linen class is `janus_jax.models.janus.JanusModel`. Objective: text CE + image-token CE
over the global batch's supervised tokens, with the frozen VQ's codes as targets (`janus_jax.train.losses`).
"""
from __future__ import annotations

from janus_jax.modes.base import GenerationMode, Objective

# Janus stages (janus_models.md 5.1): which params train. Paths are the DeepSeek checkpoint prefixes.
ENCODERS = ("vision_model/.*", "gen_vision_model/.*")
STAGES = {
    # Stage I: understanding adaptor, generation adaptor and image head. `gen_embed` (the 16384 x 8 input table of
    # generated tokens, separate from the VQ codebook) is newly initialised like them and belongs to the generation
    # input path (gen_aligner(gen_embed(code))), so it trains too; the LLM and both encoders are frozen.
    1: dict(trainable=["aligner/.*", "gen_aligner/.*", "gen_head/.*", "gen_embed/.*"], frozen=[]),
    # Stage II: everything except the two encoders.
    2: dict(trainable=None, frozen=list(ENCODERS)),
    # Stage III (SFT): everything except the VQ tokenizer; SigLIP unfreezes.
    3: dict(trainable=None, frozen=["gen_vision_model/.*"]),
}


class ArVq(GenerationMode):
  name = "ar_vq"
  family = "Janus"
  tokenizer_module = "gen_vision_model"
  tokenizer_section = "vq"
  config_parts = ("vision", "aligner", "vq", "gen_aligner", "gen_head")
  und_boi_slot = False
  und_encoders = ("siglip", "vq")
  stages = STAGES
  # The official Janus / Janus-Pro sampling: guidance weight 5, temperature 1, full softmax, 16 images per prompt.
  sampling = dict(cfg_weight=5.0, temperature=1.0, top_k=0, top_p=1.0, parallel_size=16)
  sampler_options = ("temperature", "top_k", "top_p", "greedy")
  shown_metrics = ("loss", "loss_text", "loss_image", "lr")

  def model_class(self):
    from janus_jax.models.janus import JanusModel  # pylint: disable=import-outside-toplevel
    return JanusModel

  def generated_image_size(self, cfg):
    return cfg.gen_grid * cfg.vq.downsample

  def generate(self, model, params, cfg, tokenizer, template, prompts, *, num_images, cfg_weight, seed, progress,
               mesh, rules, preview_every=0, on_preview=None, **options):
    from janus_jax.sampling import previews  # pylint: disable=import-outside-toplevel
    from janus_jax.sampling import text_to_image as t2i  # pylint: disable=import-outside-toplevel
    tokens, rows = t2i.generate_tokens(model, params, cfg, tokenizer, template, prompts, num_images=num_images,
                                       cfg_weight=cfg_weight, seed=seed, progress=progress, mesh=mesh, rules=rules,
                                       preview_every=preview_every, on_preview=on_preview,
                                       **self._own_options(options))
    images = t2i.decode_tokens(model, params, cfg, tokens, mesh=mesh, rules=rules)
    if preview_every:
      previews.final_frame(on_preview, cfg.num_image_tokens, images)
    return t2i.GenerationResult(images=images, tokens=tokens, prompts=rows)

  def train_tokenizer(self, cfg, settings, train_images, eval_images, *, seed, workdir):
    from janus_jax.train.vq_trainer import train_vq  # pylint: disable=import-outside-toplevel
    v = settings
    return train_vq(cfg.vq, train_images, eval_images, steps=v.steps, batch_size=v.batch_size, lr=v.lr, seed=seed,
                    workdir=workdir, checkpoint_every=v.steps, restart_every=int(v.get("restart_every", 0)),
                    adversarial_weight=float(v.get("adversarial_weight", 0.0)),
                    adversarial_start=int(v.get("adversarial_start", 0)))

  reads_transformers_layout = True

  def consistency_problems(self, cfg):
    from janus_jax.checkpoint import config_json  # pylint: disable=import-outside-toplevel
    return config_json.janus_consistency_problems(cfg)

  def config_dict(self, cfg, language, vision, torch_dtype):
    from janus_jax.checkpoint import config_json  # pylint: disable=import-outside-toplevel
    return config_json.janus_config_dict(cfg, language, vision, torch_dtype)

  def conversion_inputs(self, cfg, src_dir, *, vae, vae_variant, dtype):
    del vae_variant, dtype
    if vae is not None:
      from janus_jax.checkpoint.config_json import ConfigError  # pylint: disable=import-outside-toplevel
      raise ConfigError(f"--vae / vae= applies to JanusFlow checkpoints only; {src_dir} is a Janus / Janus-Pro "
                        "checkpoint (its VQ tokenizer is inside the checkpoint). Drop the option.")
    return cfg, {}

  def conversion_target(self, abstract):
    from janus_jax.checkpoint import convert  # pylint: disable=import-outside-toplevel
    return dict(abstract), convert.IGNORED_PREFIXES

  def objective(self, cfg, train_cfg):
    from janus_jax.train import losses, step  # pylint: disable=import-outside-toplevel
    caps = (train_cfg["max_text_tokens"], train_cfg["max_image_tokens"])

    def normalizers(batch):
      return (step.supervised_count(batch["text_loss_mask"], caps[0])
              + step.supervised_count(batch["image_loss_mask"], caps[1]))

    def loss(model, params, micro, rng, normalizer):
      del rng
      sums = model.apply({"params": params}, micro, *caps, method=losses.loss_sums)
      return losses.total_loss(sums, normalizer), sums

    return Objective(mask_dropped_prompts=False, normalizers=normalizers, prepare=losses.encode_gen_pixels,
                     loss=loss, zero_sums=losses.LossSums.zeros, metrics=losses.metrics_from_sums,
                     check_trainable=lambda trainable: None)


__all__ = ["ArVq", "STAGES", "ENCODERS"]
