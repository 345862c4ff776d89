"""The image tokenizer of the modes that generate KL-VAE latents (flow, ar_continuous): training on the main job's
images, the latent-scale calibration it measures, and reuse from another checkpoint."""
from __future__ import annotations

from janus_jax.modes.base import GenerationMode


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

  def tokenizer_summary(self, report):
    return (f"psnr {report['psnr']:.2f} dB, latent std {1 / report['scaling_factor']:.3f} -> scaling_factor "
            f"{report['scaling_factor']:.4f}")


__all__ = ["KLVAETokenizer"]
