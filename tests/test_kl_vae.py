"""KL autoencoder (SDXL-VAE layout): parity with diffusers AutoencoderKL through `load_diffusers_vae` (encode moments,
decode, scaled latents; current and legacy tensor names, safetensors and .bin), the SDXL-VAE param tree and count,
strict import errors, and the VAE trainer."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from safetensors.numpy import load_file, save_file

from janus_jax.checkpoint import diffusers_vae as dv
from janus_jax.checkpoint.config_json import ConfigError
from janus_jax.checkpoint.mapping import CheckpointMismatchError, flatten
from janus_jax.models import kl_vae
from janus_jax.models.configs import KLVAEConfig
from janus_jax.train import vae_trainer

TOL = 1e-4
WEIGHTS = "diffusion_pytorch_model.safetensors"
# Two levels (f = 2), 2 resnets per encoder level, so both the encoder and the decoder have a 1x1 conv_shortcut.
TINY = dict(block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8, latent_channels=4,
            scaling_factor=0.5, shift_factor=0.1)
# Three levels (f = 4), no mid attention, no quant convs.
TINY_PLAIN = dict(block_out_channels=(16, 16, 32), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                  mid_block_attention=False, use_quant_conv=False, use_post_quant_conv=False)


def _torch_vae(seed: int, **kw) -> TorchAutoencoderKL:
  torch.manual_seed(seed)
  m = TorchAutoencoderKL(**dv.config_to_diffusers(KLVAEConfig(**kw))).eval()
  with torch.no_grad():  # Non-trivial norms and biases (torch initialises them to 1 / 0).
    for name, p in m.named_parameters():
      if "norm" in name:
        p.add_(0.2 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.add_(0.1 * torch.randn_like(p))
  return m


def _nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(x).permute(0, 3, 1, 2)


def _nhwc(t: torch.Tensor) -> np.ndarray:
  return t.permute(0, 2, 3, 1).numpy()


def _err(a, b) -> float:
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b).max())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_vae")
  ref = _torch_vae(0, **TINY)
  ref.save_pretrained(path)
  cfg, params = dv.load_diffusers_vae(path)
  return path, ref, cfg, {"params": jax.tree.map(jnp.asarray, params)}


def _parity(ref, cfg, variables, h, w, seed):
  """Returns max abs errors of (mean, logvar, decode, scaled latent) vs diffusers on one random batch."""
  model = kl_vae.AutoencoderKL(cfg)
  rs = np.random.RandomState(seed)
  x = rs.uniform(-1, 1, (2, h, w, 3)).astype(np.float32)
  f = cfg.downsample
  z = rs.randn(2, h // f, w // f, cfg.latent_channels).astype(np.float32)
  mean, logvar = model.apply(variables, jnp.asarray(x), method=kl_vae.AutoencoderKL.encode)
  image = model.apply(variables, jnp.asarray(z), method=kl_vae.AutoencoderKL.decode)
  scaled = model.apply(variables, jnp.asarray(x), method=kl_vae.AutoencoderKL.encode_latent)
  with torch.no_grad():
    post = ref.encode(_nchw(x)).latent_dist
    ref_image = _nhwc(ref.decode(_nchw(z)).sample)
  ref_mean, ref_logvar = _nhwc(post.mean), _nhwc(post.logvar)
  ref_scaled = (ref_mean - (ref.config.shift_factor or 0.0)) * ref.config.scaling_factor
  assert np.abs(ref_image).max() > 0.1 and np.abs(ref_mean).max() > 0.1  # Not a degenerate comparison.
  return _err(mean, ref_mean), _err(logvar, ref_logvar), _err(image, ref_image), _err(scaled, ref_scaled)


def test_parity_with_diffusers(tiny):
  _, ref, cfg, variables = tiny
  assert cfg == KLVAEConfig(**TINY)
  errs = _parity(ref, cfg, variables, 16, 24, seed=1)  # Non-square: 8x12 latent.
  print(f"tiny VAE (f=2, attention, quant convs) max abs err: mean {errs[0]:.2e}  logvar {errs[1]:.2e}  "
        f"decode {errs[2]:.2e}  scaled latent {errs[3]:.2e}")
  assert max(errs) <= TOL


def test_parity_plain_variant_and_bin_weights(tmp_path):
  ref = _torch_vae(1, **TINY_PLAIN)
  ref.save_pretrained(tmp_path, safe_serialization=False)  # diffusion_pytorch_model.bin
  assert (tmp_path / "diffusion_pytorch_model.bin").is_file()
  cfg, params = dv.load_diffusers_vae(tmp_path)
  assert cfg == KLVAEConfig(**TINY_PLAIN, scaling_factor=0.13025)
  assert "quant_conv" not in params and "attentions_0" not in params["decoder"]["mid_block"]
  errs = _parity(ref, cfg, {"params": params}, 16, 16, seed=2)
  print(f"tiny VAE (f=4, no attention, no quant convs, .bin) max abs err: mean {errs[0]:.2e}  logvar {errs[1]:.2e}"
        f"  decode {errs[2]:.2e}")
  assert max(errs) <= TOL


def test_legacy_attention_names(tiny, tmp_path):
  path, _, cfg, variables = tiny
  state = load_file(path / WEIGHTS)
  legacy = {}
  for k, v in state.items():
    for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
      k = k.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
    if k.endswith("attentions.0.query.weight"):
      v = v[:, :, None, None]  # 1x1-conv layout, as in LDM-style checkpoints.
    legacy[k] = v
  assert "encoder.mid_block.attentions.0.proj_attn.weight" in legacy
  save_file(legacy, tmp_path / WEIGHTS)
  (tmp_path / "config.json").write_text((path / "config.json").read_text())
  cfg2, params = dv.load_diffusers_vae(tmp_path)
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(variables["params"]))
  # A tensor under both names is an error, not a silent pick.
  both = dict(legacy, **{"encoder.mid_block.attentions.0.to_k.bias": state["encoder.mid_block.attentions.0.to_k.bias"]})
  with pytest.raises(CheckpointMismatchError, match=r"attentions\.0\.key\.bias"):
    dv.vae_state_to_params(both, cfg)


def test_call_sampling_and_latent_helpers(tiny):
  _, _, cfg, variables = tiny
  model = kl_vae.AutoencoderKL(cfg)
  x = jnp.asarray(np.random.RandomState(3).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32))
  mean, logvar = model.apply(variables, x, method=kl_vae.AutoencoderKL.encode)
  recon, m2, _ = model.apply(variables, x)
  np.testing.assert_array_equal(m2, mean)
  np.testing.assert_allclose(recon, model.apply(variables, mean, method=kl_vae.AutoencoderKL.decode), atol=1e-6)
  rng = jax.random.PRNGKey(0)
  sampled, _, _ = model.apply(variables, x, rng, True)
  assert _err(sampled, recon) > 1e-3  # The sample differs from the mean ...
  z = kl_vae.posterior_sample(mean, logvar, rng)
  np.testing.assert_allclose((z - mean) / jnp.exp(0.5 * logvar), jax.random.normal(rng, mean.shape), atol=1e-4)
  scaled = kl_vae.to_latent(cfg, mean, logvar)
  np.testing.assert_allclose(scaled, (mean - 0.1) * 0.5, atol=1e-6)
  np.testing.assert_allclose(kl_vae.from_latent(cfg, scaled), mean, atol=1e-6)
  back = model.apply(variables, scaled, method=kl_vae.AutoencoderKL.decode_latent)
  np.testing.assert_allclose(back, recon, atol=1e-5)
  with pytest.raises(ValueError, match="needs an `rng`"):
    model.apply(variables, x, None, True)
  with pytest.raises(ValueError, match="not divisible by 2"):
    model.apply(variables, jnp.zeros((1, 9, 8, 3)), method=kl_vae.AutoencoderKL.encode)
  with pytest.raises(ValueError, match="NHWC"):
    model.apply(variables, jnp.zeros((1, 8, 8, 3)), method=kl_vae.AutoencoderKL.decode)


def test_sdxl_vae_param_tree_matches_diffusers():
  cfg = KLVAEConfig()
  with torch.device("meta"):
    ref = TorchAutoencoderKL(**dv.config_to_diffusers(cfg))
  torch_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
  ours = {}
  for path, leaf in flatten(kl_vae.abstract_vae_params(cfg)).items():
    shape = tuple(leaf.shape)
    if path[-1] == "kernel":
      shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
    ours[dv.diffusers_key(path)] = shape
  assert ours == torch_shapes
  count, torch_count = kl_vae.vae_param_count(cfg), sum(p.numel() for p in ref.parameters())
  print(f"SDXL-VAE params: ours {count:,}, diffusers {torch_count:,}")
  assert count == torch_count == 83_653_863
  boxed = kl_vae.abstract_vae_params(KLVAEConfig(**TINY), boxed=True)
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in leaves)


def test_strict_import_errors(tiny, tmp_path):
  path, _, cfg, _ = tiny
  state = load_file(path / WEIGHTS)
  missing = dict(state)
  del missing["encoder.mid_block.resnets.0.conv1.bias"]
  with pytest.raises(CheckpointMismatchError, match=r"encoder\.mid_block\.resnets\.0\.conv1\.bias"):
    dv.vae_state_to_params(missing, cfg)
  with pytest.raises(CheckpointMismatchError, match=r"1 unexpected[\s\S]*decoder\.up_blocks\.0\.resnets\.9\.conv1"):
    dv.vae_state_to_params(dict(state, **{"decoder.up_blocks.0.resnets.9.conv1.weight": np.zeros((64, 64, 3, 3))}),
                           cfg)
  bad = dict(state, **{"decoder.conv_out.weight": np.zeros((3, 16, 3, 3), np.float32)})
  with pytest.raises(CheckpointMismatchError, match=r"mis-shaped[\s\S]*decoder\.conv_out\.weight"):
    dv.vae_state_to_params(bad, cfg)
  # Weights from another architecture (3 levels) into this config: one error lists all problems.
  with pytest.raises(CheckpointMismatchError, match="missing"):
    dv.vae_state_to_params(state, KLVAEConfig(**dict(TINY, block_out_channels=(32, 64, 64))))

  config = json.loads((path / "config.json").read_text())
  (tmp_path / WEIGHTS).write_bytes((path / WEIGHTS).read_bytes())
  for override, pattern in ((dict(down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
                             "AttnDownEncoderBlock2D"),
                            (dict(up_block_types=["UpDecoderBlock2D", "AttnUpDecoderBlock2D"]), "AttnUpDecoderBlock2D"),
                            (dict(_class_name="AutoencoderTiny"), "AutoencoderTiny"),
                            (dict(act_fn="gelu"), "gelu")):
    (tmp_path / "config.json").write_text(json.dumps(dict(config, **override)))
    with pytest.raises(ConfigError, match=pattern):
      dv.load_diffusers_vae(tmp_path)
  assert dv.vae_config_from_diffusers({"block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"] * 2,
                                       "up_block_types": ["UpDecoderBlock2D"] * 2, "shift_factor": None}) == \
      KLVAEConfig(block_out_channels=(32, 64), layers_per_block=1, scaling_factor=0.18215, shift_factor=0.0)


def _synthetic_images(n: int, size: int, seed: int) -> np.ndarray:
  """Flat-coloured rectangles on a flat background, uint8[n, size, size, 3]."""
  rs = np.random.RandomState(seed)
  out = np.empty((n, size, size, 3), np.uint8)
  for i in range(n):
    out[i] = rs.randint(0, 256, 3)
    y0, x0, h, w = (int(v) for v in np.r_[rs.randint(0, size // 2, 2), rs.randint(3, size // 2 + 1, 2)])
    y1, x1 = y0 + h, x0 + w
    out[i, y0:y1, x0:x1] = rs.randint(0, 256, 3)
  return out


def test_vae_trainer(tmp_path):
  from janus_jax.train.metrics import read_metrics
  cfg = KLVAEConfig(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                    mid_block_attention=False)  # Small graph: compiling the train step dominates the test time.
  train, evals = _synthetic_images(64, 16, 0), _synthetic_images(16, 16, 1)
  with pytest.raises(NotImplementedError, match="perceptual_weight"):
    vae_trainer.train_vae(cfg, train, evals, steps=1, batch_size=8, perceptual_weight=0.1)
  with pytest.raises(NotImplementedError, match="adversarial_weight"):
    vae_trainer.train_vae(cfg, train, evals, steps=1, batch_size=8, adversarial_weight=0.1)
  before = vae_trainer.evaluate_vae(cfg, kl_vae.init_vae_params(cfg, jax.random.PRNGKey(0)), evals)
  params, report = vae_trainer.train_vae(cfg, train, evals, steps=80, batch_size=16, lr=3e-3, warmup=5,
                                         log_every=10, workdir=str(tmp_path), quiet=True)
  losses = [m["vae/loss"] for m in read_metrics(str(tmp_path)) if "vae/loss" in m]
  print(f"VAE trainer: loss {losses[0]:.4f} -> {losses[-1]:.4f}; eval PSNR {before['psnr']:.2f} -> "
        f"{report['psnr']:.2f} dB; latent std {report['latent_std']:.3f} -> scaling_factor "
        f"{report['scaling_factor']:.3f}")
  assert len(losses) == 8 and losses[-1] < 0.75 * losses[0]
  assert report["psnr"] > before["psnr"] + 2.0
  # The reported statistics are those of the posterior means.
  model = kl_vae.AutoencoderKL(cfg)
  mean, _ = model.apply({"params": params}, jnp.asarray(vae_trainer.to_model_range(evals)),
                        method=kl_vae.AutoencoderKL.encode)
  np.testing.assert_allclose(report["latent_std"], np.std(np.asarray(mean, np.float64)), rtol=1e-4)
  np.testing.assert_allclose(report["scaling_factor"], 1.0 / report["latent_std"], rtol=1e-9)
  calibrated = vae_trainer.calibrated_config(cfg, report)
  assert calibrated.scaling_factor == report["scaling_factor"] and calibrated.shift_factor == 0.0
  scaled = kl_vae.to_latent(calibrated, mean, None)
  assert abs(float(jnp.std(scaled)) - 1.0) < 1e-3
  # A finished run resumes from its checkpoint and does no more steps.
  params2, report2 = vae_trainer.train_vae(cfg, train, evals, steps=80, batch_size=16, lr=3e-3, warmup=5,
                                           workdir=str(tmp_path), quiet=True)
  assert report2["psnr"] == report["psnr"]
