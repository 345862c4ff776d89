"""Generation mode `flow` (JanusFlow): rectified flow in KL-VAE latents around the LLM, trained with REPA.

Modules (param subtrees, the JanusFlow checkpoint prefixes): vae (the KL autoencoder, always frozen),
vision_gen_enc_model / _aligner, vision_gen_dec_aligner_norm / _aligner / _model (the ShallowUViT), beg_of_und_embed,
repa_projector (training only); the Linen class is `janus_jax.models.janus_flow.JanusFlowModel`. Objective: text CE
+ rectified-flow MSE + REPA (`janus_jax.train.flow_losses`).
"""
from __future__ import annotations

from janus_jax.modes.kl_vae_tokenizer import KLVAETokenizer

# JanusFlow stages (janus_models.md 5.3); the VAE (`vae/`) is always frozen.
STAGES = {
    # Stage I: only the new modules: the linear aligners, the learned BOI embedding, g_enc, g_dec, the REPA head.
    1: dict(trainable=["vision_und_enc_aligner/.*", "beg_of_und_embed", "vision_gen_enc_model/.*",
                       "vision_gen_enc_aligner/.*", "vision_gen_dec_model/.*", "vision_gen_dec_aligner/.*",
                       "vision_gen_dec_aligner_norm/.*", "repa_projector/.*"], frozen=[]),
    # Stage II: everything except SigLIP.
    2: dict(trainable=None, frozen=["vision_und_enc_model/.*", "vae/.*"]),
    # Stage III (SFT): everything, SigLIP included.
    3: dict(trainable=None, frozen=["vae/.*"]),
}


class Flow(KLVAETokenizer):
  name = "flow"
  family = "JanusFlow"
  config_parts = ("vision", "aligner", "uvit", "vae", "repa")
  und_boi_slot = True  # an understanding image fills 577 slots: the learned BOI embedding + 576 features
  und_encoders = ("siglip",)
  stages = STAGES
  # JanusFlow README: guidance weight 2, 30 Euler steps, 5 images per prompt.
  sampling = dict(cfg_weight=2.0, num_steps=30, solver="euler", time_shift=1.0, parallel_size=5)
  sampler_options = ("num_steps", "solver", "time_shift", "prompt_cache", "noise")
  shown_metrics = ("loss", "loss_text", "loss_rf", "loss_repa", "lr")
  train_section = "flow"
  # The REPA head (training only) and the VAE (a separate diffusers directory) are not in the released checkpoint.
  not_in_checkpoint = ("repa_projector", "vae")

  def model_class(self):
    from janus_jax.models.janus_flow import JanusFlowModel  # pylint: disable=import-outside-toplevel
    return JanusFlowModel

  def sampling_steps(self, cfg):
    return int(self.sampling_default("num_steps"))

  def latent_size(self, cfg):
    return cfg.gen_grid * cfg.uvit.patch_size

  def generate(self, model, params, cfg, tokenizer, template, prompts, *, num_images, cfg_weight, seed, progress,
               mesh, rules, preview_every=0, on_preview=None, **options):
    from janus_jax.sampling import text_to_image as t2i  # pylint: disable=import-outside-toplevel
    return t2i.generate_flow(model, params, cfg, tokenizer, template, prompts, num_images=num_images,
                             cfg_weight=cfg_weight, seed=seed, progress=progress, mesh=mesh, rules=rules,
                             preview_every=preview_every, on_preview=on_preview, **self._own_options(options))

  def consistency_problems(self, cfg):
    from janus_jax.checkpoint import janusflow_layout  # pylint: disable=import-outside-toplevel
    return janusflow_layout.check_consistency(cfg)

  def config_dict(self, cfg, language, vision, torch_dtype):
    from janus_jax.checkpoint import janusflow_layout  # pylint: disable=import-outside-toplevel
    return janusflow_layout.config_dict(cfg, language, vision, torch_dtype)

  def conversion_inputs(self, cfg, src_dir, *, vae, vae_variant, dtype):
    """The VAE is not in the JanusFlow checkpoint: it comes from the diffusers directory `vae` (required)."""
    from janus_jax.checkpoint import convert, janusflow_layout  # pylint: disable=import-outside-toplevel
    from janus_jax.checkpoint.diffusers_vae import load_diffusers_vae  # pylint: disable=import-outside-toplevel
    if vae is None:
      raise convert.MissingVAEError(f"{src_dir} is a JanusFlow checkpoint. {convert.VAE_HINT}")
    vae_cfg, vae_params = load_diffusers_vae(vae, param_dtype=dtype, variant=vae_variant)
    return janusflow_layout.with_vae(cfg, vae_cfg), {"vae": vae_params}

  def conversion_target(self, abstract):
    from janus_jax.checkpoint import janusflow_layout  # pylint: disable=import-outside-toplevel
    return janusflow_layout.checkpoint_target(abstract), janusflow_layout.IGNORED_PREFIXES

  def conversion_note(self, cfg, vae):
    return (f"JanusFlow: UViT {cfg.uvit.channels} ch, latents {cfg.latent_size}x{cfg.latent_size}x"
            f"{cfg.uvit.latent_channels}, VAE {vae} ({cfg.vae.downsample}x, scaling {cfg.vae.scaling_factor}) -> "
            f"{cfg.generated_image_size} px images; REPA head not stored (training initialises it)")

  def objective(self, cfg, train_cfg):
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from janus_jax.train import flow_losses  # pylint: disable=import-outside-toplevel

    def image_rows(batch):  # the rows with a generated image, after CFG dropout
      return jnp.sum(batch.get("has_gen_image", batch["gen_image_mask"].any(axis=1))).astype(jnp.float32)

    return self.latent_objective(
        loss_sums=flow_losses.flow_loss_sums, total_loss=flow_losses.total_flow_loss,
        zero_sums=flow_losses.FlowSums.zeros, metrics=flow_losses.flow_metrics,
        settings=flow_losses.resolve_flow_config(train_cfg["flow"]), max_text=train_cfg["max_text_tokens"],
        latent_count=image_rows, mask_dropped_prompts=True, vae_role="its latents are the regression targets")


__all__ = ["Flow", "STAGES"]
