"""VQ-16 tokenizer: parity with transformers' JanusVQVAE (decode, encoder features), the L2-normalised quantizer,
straight-through gradients, the full-size parameter count and input validation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from janus_jax.checkpoint.hf_layout import hf_to_deepseek
from janus_jax.checkpoint.mapping import state_dict_to_params
from janus_jax.models import vq
from janus_jax.models.configs import JanusConfig, VQConfig
from torch_reference import TINY_JANUS, build_tiny_hf_janus, hf_state_numpy

PREFIX = "gen_vision_model."


@pytest.fixture(scope="module")
def setup():
  cfg = JanusConfig.from_dict(TINY_JANUS).vq
  hf = build_tiny_hf_janus(seed=0)
  state = hf_to_deepseek(hf_state_numpy(hf))
  sub = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
  model = vq.VQModel(cfg)
  params = state_dict_to_params(sub, nn.unbox(vq.abstract_params(cfg)), ignore=("quantize.codebook_used",),
                                what="tiny HF VQ")
  params = jax.tree.map(jnp.asarray, params)
  return cfg, hf, model, {"params": params}


def _images(seed, b, h, w):
  return np.random.RandomState(seed).uniform(-1, 1, (b, h, w, 3)).astype(np.float32)


def test_decode_code_matches_hf(setup):
  cfg, hf, model, variables = setup
  codes = np.random.RandomState(0).randint(0, cfg.codebook_size, (2, 16))
  ours = np.asarray(model.apply(variables, jnp.asarray(codes, jnp.int32), method=vq.VQModel.decode_code))
  with torch.no_grad():
    ref = hf.decode_image_tokens(torch.from_numpy(codes)).numpy()  # (B, H, W, C)
  assert ours.shape == ref.shape == (2, 16, 16, 3)
  err = np.abs(ours - ref).max()
  print(f"decode_code max abs error vs HF: {err:.3g}")
  assert err <= 1e-4
  # [B, h, w] codes and an explicit grid give the same image.
  grid_form = model.apply(variables, jnp.asarray(codes.reshape(2, 4, 4)), 4, method=vq.VQModel.decode_code)
  np.testing.assert_array_equal(np.asarray(grid_form), ours)


def test_encoder_and_quantizer(setup):
  cfg, hf, model, variables = setup
  images = _images(1, 2, 16, 24)  # Non-square: a 4x6 token grid.
  feats = np.asarray(model.apply(variables, jnp.asarray(images), method=vq.VQModel.encode_features))
  x = torch.from_numpy(images).permute(0, 3, 1, 2)
  with torch.no_grad():
    vqm = hf.model.vqmodel
    ref = vqm.quant_conv(vqm.encoder(x)).permute(0, 2, 3, 1).numpy()
    hf_codes = vqm.encode(x).image_tokens.numpy().reshape(2, 4, 6)  # Un-normalised argmin (quirk 4).
  assert feats.shape == ref.shape == (2, 4, 6, cfg.codebook_dim)
  err = np.abs(feats - ref).max()
  print(f"encoder+quant_conv max abs error vs HF: {err:.3g}")
  assert err <= 1e-4

  # NumPy reference of the official quantizer on the HF features (float64).
  emb = hf_state_numpy(hf)["model.vqmodel.quantize.embedding.weight"].astype(np.float64)
  norm = lambda a: a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  zn, en = norm(ref.astype(np.float64)), norm(emb)
  dist = lambda z, e: (z ** 2).sum(-1)[..., None] + (e ** 2).sum(-1) - 2 * z @ e.T
  want = dist(zn, en).argmin(-1)
  z_q, codes, aux = model.apply(variables, jnp.asarray(images), method=vq.VQModel.encode)
  np.testing.assert_array_equal(np.asarray(codes), want)
  np.testing.assert_allclose(np.asarray(z_q), en[want], atol=1e-6)  # Forward value of the STE is z_q.
  # Losses on the normalised tensors, as the official quantizer computes them.
  mse = np.mean((en[want] - zn) ** 2)
  np.testing.assert_allclose(float(aux["codebook_loss"]), mse, rtol=1e-4)
  np.testing.assert_allclose(float(aux["commit_loss"]), cfg.commit_beta * mse, rtol=1e-4)
  assert 1.0 <= float(aux["perplexity"]) <= want.size
  assert float(aux["codebook_usage"]) == len(np.unique(want)) / cfg.codebook_size

  # Quirk 4: HF's encode takes the argmin without normalising, so its codes differ from the official ones.
  np.testing.assert_array_equal(hf_codes, dist(ref.astype(np.float64), emb).argmin(-1))
  agree = float(np.mean(hf_codes == want))
  print(f"HF un-normalised encode agrees with the official codes on {agree:.0%} of tokens")
  assert agree < 1.0


def test_full_size_param_count_matches_torch():
  from transformers import JanusVQVAE, JanusVQVAEConfig
  ours = vq.num_params(VQConfig())
  with torch.device("meta"):
    ref = JanusVQVAE(JanusVQVAEConfig())  # Only encoder, quantize, quant_conv, post_quant_conv, decoder.
  assert {n for n, _ in ref.named_children()} == {"encoder", "quantize", "quant_conv", "post_quant_conv", "decoder"}
  torch_count = sum(p.numel() for p in ref.parameters())
  print(f"VQ-16 params: ours {ours:,}, torch {torch_count:,}")
  assert ours == torch_count == 71_883_403


def test_param_logical_names(setup):
  cfg = setup[0]
  boxed = vq.abstract_params(cfg)
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in leaves)
  assert boxed["quantize"]["embedding"]["embedding"].names == ("codebook", "codebook_dim")


def test_straight_through_gradients(setup):
  cfg, _, model, variables = setup
  images = jnp.asarray(_images(2, 1, 16, 16))

  def losses(params):
    recon, _, aux = model.apply({"params": params}, images)
    return jnp.stack([jnp.mean(jnp.square(recon - images)), aux["codebook_loss"], aux["commit_loss"]])

  @jax.jit
  def all_grads(params):  # One forward pass, one backward pass per loss.
    _, pullback = jax.vjp(losses, params)
    return jax.vmap(pullback)(jnp.eye(3))[0]

  g = all_grads(variables["params"])
  grads = lambda i: jax.tree.map(lambda x: x[i], g)
  g_recon = grads(0)
  assert np.abs(np.asarray(g_recon["encoder"]["conv_in"]["kernel"])).max() > 0  # Through the STE.
  assert np.abs(np.asarray(g_recon["quantize"]["embedding"]["embedding"])).max() == 0  # STE blocks the codebook.
  g_cb = grads(1)
  assert np.abs(np.asarray(g_cb["quantize"]["embedding"]["embedding"])).max() > 0
  assert np.abs(np.asarray(g_cb["encoder"]["conv_in"]["kernel"])).max() == 0  # sg(z) in the codebook loss.
  g_commit = grads(2)
  assert np.abs(np.asarray(g_commit["encoder"]["conv_in"]["kernel"])).max() > 0


def test_errors(setup):
  cfg, _, model, variables = setup
  dc = vq.VQModel.decode_code
  with pytest.raises(ValueError, match=r"\[0, 256\)"):
    model.apply(variables, jnp.full((1, 16), cfg.codebook_size, jnp.int32), method=dc)
  with pytest.raises(ValueError, match=r"\[0, 256\)"):
    model.apply(variables, jnp.full((1, 16), -1, jnp.int32), method=dc)
  with pytest.raises(ValueError, match="not a square grid"):
    model.apply(variables, jnp.zeros((1, 15), jnp.int32), method=dc)
  with pytest.raises(ValueError, match="not divisible by the VQ downsample factor 4"):
    model.apply(variables, jnp.zeros((1, 18, 16, 3)), method=vq.VQModel.encode)
  with pytest.raises(ValueError, match="RGB"):
    model.apply(variables, jnp.zeros((1, 16, 16, 4)), method=vq.VQModel.encode)
  with pytest.raises(ValueError, match="decode_code"):
    model.apply(variables, jnp.zeros((1, 4, 4, 3)), method=vq.VQModel.decode)
  # Under jit no error can be raised: out-of-range codes decode to NaN instead of a silently clamped image.
  out = jax.jit(lambda v, c: model.apply(v, c, method=dc))(variables, jnp.full((1, 16), -3, jnp.int32))
  assert np.isnan(np.asarray(out)).all()


def _blocks(n: int, size: int, seed: int) -> np.ndarray:
  """Flat-coloured rectangles on a flat background, uint8[n, size, size, 3]."""
  rs = np.random.RandomState(seed)
  out = np.empty((n, size, size, 3), np.uint8)
  for i in range(n):
    out[i] = rs.randint(0, 256, 3)
    y0, x0 = rs.randint(0, size // 2, 2)
    out[i, y0:y0 + size // 2, x0:x0 + size // 2] = rs.randint(0, 256, 3)
  return out


def test_vq_trainer_learns_reports_and_resumes_exactly(tmp_path):
  """PSNR rises and codebook usage is reported; a run resumed from its mid-way checkpoint ends bit-identical
  (dead-code restarts included)."""
  import shutil
  from janus_jax.train import vq_trainer
  from janus_jax.train.metrics import read_metrics
  cfg = VQConfig(codebook_size=64, codebook_dim=8, base_channels=16, channel_mult=(1, 2), z_channels=16,
                 num_res_blocks=1, num_groups=8)
  train, evals = _blocks(64, 16, 0), _blocks(16, 16, 1)
  with pytest.raises(ValueError, match="uint8"):
    vq_trainer.train_vq(cfg, train.astype(np.float32), evals, steps=1, batch_size=8)
  kw = dict(steps=40, batch_size=16, lr=3e-3, warmup=5, log_every=10, restart_every=10, quiet=True)
  straight, report = vq_trainer.train_vq(cfg, train, evals, **kw)
  params0 = nn.unbox(vq.VQModel(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"])
  before = vq_trainer.evaluate_vq(cfg, params0, evals)
  print(f"VQ trainer: eval PSNR {before['psnr']:.2f} -> {report['psnr']:.2f} dB, codes used {report['codes_used']}")
  assert report["psnr"] > before["psnr"] + 3.0
  assert 0 < report["codebook_usage"] <= 1 and report["codes_used"] == round(report["codebook_usage"] * 64)
  work = tmp_path / "vq"
  vq_trainer.train_vq(cfg, train, evals, workdir=str(work), checkpoint_every=20, **kw)
  losses = [m["vq/loss"] for m in read_metrics(str(work)) if "vq/loss" in m]
  assert len(losses) == 4 and losses[-1] < losses[0]
  shutil.rmtree(work / "checkpoints" / "40")  # As if preempted after the step-20 checkpoint.
  resumed, report2 = vq_trainer.train_vq(cfg, train, evals, workdir=str(work), checkpoint_every=20, **kw)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert report2["psnr"] == report["psnr"]


def test_dead_code_restart_moves_exactly_the_unused_codes():
  from janus_jax.train import vq_trainer
  cfg = VQConfig(codebook_size=64, codebook_dim=8, base_channels=16, channel_mult=(1, 2), z_channels=16,
                 num_res_blocks=1, num_groups=8)
  model = vq.VQModel(cfg)
  x = jnp.asarray(vq_trainer.to_model_range(_blocks(8, 16, 2)))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), x[:1])["params"])
  emb = params["quantize"]["embedding"]["embedding"]
  emb = emb.at[1:].set(-emb[0])  # a collapsed codebook: two directions, only one of them can be nearest
  params = {**params, "quantize": {"embedding": {"embedding": emb}}}
  codes = lambda p: np.unique(np.asarray(model.apply({"params": p}, x, method=vq.VQModel.encode)[1]))
  used = codes(params)
  assert len(used) <= 2
  new, restarted = vq_trainer._restart_fn(cfg)(params, x, jax.random.PRNGKey(3))
  assert int(restarted) == 64 - len(used)
  new_emb = np.asarray(new["quantize"]["embedding"]["embedding"])
  np.testing.assert_array_equal(new_emb[used], np.asarray(emb)[used])
  z = np.asarray(vq.l2_normalize(model.apply({"params": params}, x, method=vq.VQModel.encode_features)))
  z = z.reshape(-1, 8)
  dead = np.setdiff1d(np.arange(64), used)
  nearest = np.min(np.linalg.norm(new_emb[dead][:, None] - z[None], axis=-1), axis=1)
  assert nearest.max() < 1e-5  # every restarted code sits on a latent of the batch
  assert len(codes(new)) > 4 * len(used)


def test_encoder_without_attention_drops_only_the_encoder_attention_blocks():
  kw = dict(codebook_size=64, codebook_dim=8, base_channels=16, channel_mult=(1, 2), z_channels=16,
            num_res_blocks=1, num_groups=8)
  x = jnp.zeros((2, 16, 16, 3))
  trees = {}
  for flag in (True, False):
    model = vq.VQModel(VQConfig(encoder_attention=flag, **kw))
    params = nn.unbox(model.init(jax.random.PRNGKey(0), x)["params"])
    recon, codes, _ = model.apply({"params": params}, x)
    assert recon.shape == x.shape and codes.size == 2 * 8 * 8  # 16 px / 2 per code side
    trees[flag] = params
  on, off = trees[True]["encoder"], trees[False]["encoder"]
  assert "mid_1" in on and "attn_0" in on["conv_blocks_1"]
  assert "mid_1" not in off and "attn_0" not in off["conv_blocks_1"] and "mid_2" in off
  assert jax.tree.structure(trees[True]["decoder"]) == jax.tree.structure(trees[False]["decoder"])


def test_adversarial_term_trains_a_discriminator_and_resumes_exactly(tmp_path):
  """Before `adversarial_start` the VQ trains bit-identically to the plain objective; from it on the generator term
  changes the VQ's updates and the PatchGAN discriminator is trained (hinge loss logged); resume from a mid-way
  checkpoint is exact, so the discriminator's params and optimizer state are checkpointed too."""
  import shutil
  from janus_jax.train import vq_trainer
  from janus_jax.train.metrics import read_metrics
  cfg = VQConfig(codebook_size=64, codebook_dim=8, base_channels=16, channel_mult=(1, 2), z_channels=16,
                 num_res_blocks=1, num_groups=8)
  train, evals = _blocks(64, 16, 0), _blocks(16, 16, 1)
  kw = dict(steps=12, batch_size=16, lr=3e-3, warmup=2, log_every=1, quiet=True)
  plain, _ = vq_trainer.train_vq(cfg, train, evals, **kw)
  late, _ = vq_trainer.train_vq(cfg, train, evals, adversarial_weight=0.5, adversarial_start=12, **kw)
  jax.tree.map(np.testing.assert_array_equal, plain, late)
  work = tmp_path / "adv"
  adv, _ = vq_trainer.train_vq(cfg, train, evals, adversarial_weight=0.5, adversarial_start=2, workdir=str(work),
                               checkpoint_every=6, **kw)
  assert jax.tree.structure(adv) == jax.tree.structure(plain)
  assert not np.array_equal(np.asarray(adv["decoder"]["conv_out"]["kernel"]),
                            np.asarray(plain["decoder"]["conv_out"]["kernel"]))
  disc = [m["vq/disc_loss"] for m in read_metrics(str(work)) if "vq/disc_loss" in m]
  assert len(disc) == 12 and all(np.isfinite(disc)) and len(set(disc)) == 12
  shutil.rmtree(work / "checkpoints" / "12")  # as if preempted after the step-6 checkpoint
  resumed, _ = vq_trainer.train_vq(cfg, train, evals, adversarial_weight=0.5, adversarial_start=2,
                                   workdir=str(work), checkpoint_every=6, **kw)
  jax.tree.map(np.testing.assert_array_equal, adv, resumed)
  with pytest.raises(ValueError, match="adversarial_weight"):
    vq_trainer.train_vq(cfg, train, evals, adversarial_weight=-1.0, **kw)
