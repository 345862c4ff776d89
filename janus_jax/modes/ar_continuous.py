"""Generation mode `ar_continuous`: the LLM reads and predicts continuous KL-VAE latent tokens; a small per-token
flow head samples each token (MAR's diffusion loss, Fluid / UniFluid; NextStep-1 with a flow-matching head).

Modules: `janus_jax.models.janus_continuous.JanusContinuousModel` (vision_model + aligner for understanding, vae,
gen_in, gen_boi, gen_out, flow_head, language_model). Objective: `janus_jax.train.continuous_losses` (text CE +
per-token rectified flow, several t per token). Sampler: `janus_jax.sampling.continuous_image` (the AR loop with
the KV cache, the head's Euler ODE inside it, CFG on the head's velocity, temperature scaling the initial noise).
The image tokenizer is the KL-VAE, trained as in the flow mode.
"""
from __future__ import annotations

from janus_jax.modes.kl_vae_tokenizer import KLVAETokenizer

STAGES = {
    # Stage I: the new modules only: the aligner, the generation in/out Linears, the BOI embedding, the flow head.
    1: dict(trainable=["aligner/.*", "gen_in/.*", "gen_out/.*", "gen_boi", "flow_head/.*"], frozen=[]),
    # Stage II: everything except the two encoders.
    2: dict(trainable=None, frozen=["vision_model/.*", "vae/.*"]),
    # Stage III: everything except the VAE.
    3: dict(trainable=None, frozen=["vae/.*"]),
}


class ArContinuous(KLVAETokenizer):
  """The KL-VAE image tokenizer of the flow mode (`KLVAETokenizer`); the rest is its own."""
  name = "ar_continuous"
  family = "Janus (continuous tokens)"
  config_parts = ("vision", "aligner", "vae", "cont")
  und_boi_slot = False
  und_encoders = ("siglip",)
  stages = STAGES
  # Guidance weight 2 on the head's velocity (as JanusFlow's), 10 Euler steps per token, unscaled initial noise.
  sampling = dict(cfg_weight=2.0, num_steps=10, temperature=1.0, parallel_size=4)
  sampler_options = ("num_steps", "temperature")
  shown_metrics = ("loss", "loss_text", "loss_rf", "lr")
  train_section = "continuous"

  def model_class(self):
    from janus_jax.models.janus_continuous import JanusContinuousModel  # pylint: disable=import-outside-toplevel
    return JanusContinuousModel

  def latent_size(self, cfg):
    return cfg.gen_grid * cfg.cont.patch_size

  def problems(self, cfg):
    out = super().problems(cfg)
    if cfg.aligner.output_dim != cfg.llm.hidden_size:
      out.append(f"model.aligner.output_dim={cfg.aligner.output_dim} must equal model.llm.hidden_size="
                 f"{cfg.llm.hidden_size}. Fix: --config.model.aligner.output_dim={cfg.llm.hidden_size}.")
    return out

  def objective(self, cfg, train_cfg):
    from janus_jax.train import continuous_losses as cl  # pylint: disable=import-outside-toplevel
    return self.latent_objective(
        loss_sums=cl.continuous_loss_sums, total_loss=cl.total_continuous_loss, zero_sums=cl.ContinuousSums.zeros,
        metrics=cl.continuous_metrics, settings=cl.resolve_continuous_config(train_cfg.get("continuous")),
        max_text=train_cfg["max_text_tokens"], latent_count=cl.generated_token_count, mask_dropped_prompts=False,
        vae_role="its latents are the tokens the model predicts")

  def generate(self, model, params, cfg, tokenizer, template, prompts, *, num_images, cfg_weight, seed, progress,
               mesh, rules, preview_every=0, on_preview=None, **options):
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    from janus_jax.sampling import continuous_image as ci  # pylint: disable=import-outside-toplevel
    from janus_jax.sampling import previews  # pylint: disable=import-outside-toplevel
    from janus_jax.sampling import text_to_image as t2i  # pylint: disable=import-outside-toplevel
    own = self._own_options(options)
    cfg_weight = self.sampling_default("cfg_weight", cfg_weight)
    num_steps = int(self.sampling_default("num_steps", own.get("num_steps")))
    temperature = self.sampling_default("temperature", own.get("temperature"))
    t2i.check_cfg_weight(cfg_weight)
    if not (num_steps >= 1 and float(temperature) > 0):
      raise ValueError(f"ar_continuous needs num_steps >= 1 and temperature > 0, got {num_steps}, {temperature}.")
    ids, valid, rows = t2i.generation_inputs(cfg, tokenizer, template, prompts, num_images)
    n = cfg.num_image_tokens
    preview_every = previews.check_preview_args(preview_every, on_preview, n)
    run = ci.compiled_continuous_generate(model, num_steps=num_steps, progress_every=max(n // 16, 1) if progress
                                          else 0, preview_every=preview_every)
    args = (params, jnp.asarray(ids), jnp.asarray(valid), jax.random.PRNGKey(seed), jnp.float32(cfg_weight),
            jnp.float32(temperature))
    with t2i.context(mesh, rules):
      with t2i.sampling_hooks(progress, n, len(rows), on_preview if preview_every else None):
        tokens = run(*args)
      images = np.asarray(ci.compiled_decode_tokens(model)(params, tokens))
    if preview_every:
      previews.final_frame(on_preview, n, images)
    return t2i.GenerationResult(images=images, tokens=None, prompts=rows, latents=np.asarray(tokens))

  # The official layouts have no continuous-token model: its checkpoints are janus_jax's own.
  def consistency_problems(self, cfg):
    d = cfg.llm.hidden_size
    return [] if cfg.aligner.output_dim == d else [f"aligner output_dim={cfg.aligner.output_dim} != LLM hidden_size={d}"]

  def config_dict(self, cfg, language, vision, torch_dtype):
    raise ValueError("generation_mode 'ar_continuous' has no official config.json layout; its checkpoints are "
                     "janus_jax checkpoints (janus_config.json).")

  def conversion_inputs(self, cfg, src_dir, *, vae, vae_variant, dtype):
    raise ValueError(f"{src_dir}: there are no released ar_continuous checkpoints to convert.")

  def conversion_target(self, abstract):
    raise ValueError("there are no released ar_continuous checkpoints to convert.")


__all__ = ["ArContinuous", "STAGES"]
