"""The image tokenizer of the modes that generate KL-VAE latents (flow, ar_continuous): training on the main job's
images, the latent-scale calibration it measures, and reuse from another checkpoint."""
from __future__ import annotations

from janus_jax.modes.base import GenerationMode, Objective


class KLVAETokenizer(GenerationMode):
  """A GenerationMode whose image tokenizer is the KL autoencoder `vae` (config section `vae`)."""
  tokenizer_module = "vae"
  tokenizer_section = "vae"
  pixel_rounding = "round"

  def generated_image_size(self, cfg):
    return cfg.latent_size * cfg.vae.downsample

  def train_tokenizer(self, cfg, settings, train_images, eval_images, *, seed, workdir):
    """The KL autoencoder; `report["scaling_factor"]` = 1 / latent std of the trained VAE (as SD VAEs are
    calibrated), which the model then uses (`with_tokenizer_report`)."""
    from janus_jax.train.vae_trainer import train_vae  # pylint: disable=import-outside-toplevel
    v = settings
    return train_vae(cfg.vae, train_images, eval_images, steps=v.steps, batch_size=v.batch_size, lr=v.lr,
                     kl_weight=v.kl_weight, seed=seed, workdir=workdir, checkpoint_every=v.steps)

  def with_tokenizer_report(self, cfg, report):
    return self._with_scale(cfg, float(report["scaling_factor"]))

  def with_tokenizer_of(self, cfg, stored):
    return self._with_scale(cfg, stored.vae.scaling_factor)

  @staticmethod
  def _with_scale(cfg, scale: float):
    import dataclasses  # pylint: disable=import-outside-toplevel
    return dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, scaling_factor=scale))

  def latent_objective(self, *, loss_sums, total_loss, zero_sums, metrics, settings, max_text, latent_count,
                       mask_dropped_prompts, vae_role):
    """The Objective of a mode whose loss regresses the frozen VAE's latents.

    loss_sums: the model method (batch, rng, settings, max_text) -> sums; total_loss(sums, text_count, latent_count,
    settings) -> scalar; metrics(sums, settings) -> {name: scalar}; latent_count(batch) -> the global count the
    latent term is divided by (the text term: the supervised text tokens, capped at max_text); vae_role: why the VAE
    must stay frozen, for the message.
    """
    from janus_jax.train import step  # pylint: disable=import-outside-toplevel

    def normalizers(batch):
      return step.supervised_count(batch["text_loss_mask"], max_text), latent_count(batch)

    def loss(model, params, micro, rng, norms):
      sums = model.apply({"params": params}, micro, rng, settings, max_text, method=loss_sums)
      return total_loss(sums, *norms, settings), sums

    def check_trainable(trainable):
      if any(p.startswith(f"{self.tokenizer_module}/") for p in trainable):
        return (f"{self.family} ({self.name}): the VAE must stay frozen ({vae_role}). Fix: add "
                f"'{self.tokenizer_module}/.*' to optim.frozen (the stage sets do).")
      return None

    return Objective(mask_dropped_prompts=mask_dropped_prompts, normalizers=normalizers,
                     prepare=lambda model, params, micro: micro, loss=loss, zero_sums=zero_sums,
                     metrics=lambda sums: metrics(sums, settings), check_trainable=check_trainable)

  def tokenizer_summary(self, report):
    return (f"psnr {report['psnr']:.2f} dB, latent std {1 / report['scaling_factor']:.3f} -> scaling_factor "
            f"{report['scaling_factor']:.4f}")


__all__ = ["KLVAETokenizer"]
