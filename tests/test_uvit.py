"""JanusFlow ShallowUViT encoder/decoder: fp32 parity with the hand-written torch reference (tests/flow_reference.py)
through the strict checkpoint mapping, NCHW <-> NHWC boundaries, pixel-shuffle order, and the shipped param count."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import flow_reference as ref
from janus_jax.checkpoint.mapping import state_dict_to_params
from janus_jax.models import uvit
from janus_jax.models.configs import UViTConfig

TINY = UViTConfig(latent_channels=4, patch_size=2, channels=16, layers_in_middle=2, hidden_size=32)
TOL = 1e-5


def _nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().permute(0, 2, 3, 1).numpy()


def _nchw(a: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


def _err(name, ours, want):
  ours = np.asarray(ours)
  assert ours.shape == want.shape, (name, ours.shape, want.shape)
  err = float(np.abs(ours - want).max())
  print(f"{name}: max abs err {err:.3g} (ref max |x| {np.abs(want).max():.3g})")
  return err


def _load(module: torch.nn.Module, abstract) -> dict:
  params = state_dict_to_params(ref.state_numpy(module), nn.unbox(abstract), what="torch reference")
  return {"params": jax.tree.map(jnp.asarray, params)}


@pytest.fixture(scope="module")
def tiny():
  enc, dec = ref.build_reference_uvit(TINY, seed=0)
  abstract = uvit.abstract_params(TINY)
  return (enc, _load(enc, abstract["vision_gen_enc_model"])), (dec, _load(dec, abstract["vision_gen_dec_model"]))


def test_timestep_embedding():
  from diffusers.models.embeddings import get_timestep_embedding
  # The sampler's bf16-rounded t * 1000 values (t = step / 30), endpoints, fractional values, a dense sweep.
  t = torch.tensor([s / 30 * 1000 for s in range(30)], dtype=torch.bfloat16).float()
  t = torch.cat([t, torch.tensor([0.0, 0.37, 999.0, 1000.0]), torch.linspace(0, 1000, 401)])
  ours = np.asarray(uvit.timestep_embedding(jnp.asarray(t.numpy()), 768))
  assert ours.dtype == np.float32 and ours.shape == (len(t), 768)
  want = ref.sinusoidal_timestep_embedding(t, 768).numpy()
  diffusers = get_timestep_embedding(t, 768, flip_sin_to_cos=True, downscale_freq_shift=0).numpy()
  np.testing.assert_array_equal(want, diffusers)  # The reference is diffusers' Timesteps.
  small = t.numpy() <= 100
  assert _err("timestep embedding (dim 768, t <= 100)", ours[small], want[small]) <= TOL
  # Over [0, 1000] the float32 argument t * f itself has an ulp of up to 6.1e-5; ours and torch may differ by one
  # rounding of it, and only on the few frequencies where torch's float32 exp is not correctly rounded.
  assert _err("timestep embedding (dim 768, t in [0, 1000])", ours, want) <= 3.1e-5
  half = 384
  freqs_torch = torch.exp((-np.log(10000.0) * torch.arange(half, dtype=torch.float32)) / half).numpy()
  same = np.tile(np.asarray(uvit._frequencies(768, 10000.0)) == freqs_torch, 2)
  print(f"frequencies bit-identical to torch: {same[:half].sum()}/{half}")
  assert same.sum() >= 0.98 * 768
  assert _err("timestep embedding (dim 768, t in [0, 1000], same-frequency columns)", ours[:, same],
              want[:, same]) <= 2e-7
  # Float64 truth of the official formula (float32 exponent, exact exp, sin, cos): we are as close as torch.
  exponent = (np.float32(-np.log(10000.0)) * np.arange(half, dtype=np.float32)) / np.float32(half)
  args = t.numpy().astype(np.float64)[:, None] * np.exp(exponent.astype(np.float64))[None]
  truth = np.concatenate([np.cos(args), np.sin(args)], -1)
  assert np.abs(ours - truth).max() <= np.abs(want - truth).max() + 1e-6
  np.testing.assert_allclose(ours[30, :half], 1.0)  # t = 0: cos first, then sin.
  np.testing.assert_allclose(ours[30, half:], 0.0)
  odd = np.asarray(uvit.timestep_embedding(jnp.asarray([3.5]), 7))
  odd_ref = ref.sinusoidal_timestep_embedding(torch.tensor([3.5]), 7).numpy()
  assert _err("timestep embedding (odd dim)", odd, odd_ref) <= TOL and odd[0, -1] == 0


def test_global_response_norm():
  torch.manual_seed(0)
  grn = ref.GlobalResponseNorm(24)
  ref.perturb_(grn, 1, grn_scale=1.0)
  x = torch.randn(2, 5, 6, 24)  # NHWC, as the official module sees it.
  model = uvit.GlobalResponseNorm()
  variables = _load(grn, jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 5, 6, 24)))["params"])
  assert variables["params"]["weight"].shape == (1, 1, 1, 24)
  out = np.asarray(model.apply(variables, jnp.asarray(x.numpy())))
  assert _err("GRN", out, grn(x).detach().numpy()) <= TOL
  assert np.abs(out - x.numpy()).max() > 0.5  # The perturbed GRN is far from the identity.
  # Fresh init is the identity (weight = bias = 0), and an all-zero channel has a finite gradient.
  fresh = model.init(jax.random.key(0), jnp.zeros((1, 5, 6, 24)))
  xj = jnp.asarray(x.numpy()).at[..., 3].set(0.0)
  np.testing.assert_array_equal(np.asarray(model.apply(fresh, xj)), np.asarray(xj))
  g = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, xj) ** 2))(variables["params"])
  assert all(np.isfinite(np.asarray(v)).all() for v in jax.tree.leaves(g))


def test_convnext_block():
  torch.manual_seed(0)
  blk = ref.perturb_(ref.ConvNextBlock(16, 1e-6, True, 32).eval(), 3)
  x, cond = torch.randn(2, 16, 6, 10), torch.randn(2, 32)
  model = uvit.ConvNextBlock(TINY, 16)
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 6, 10, 16)), jnp.zeros((1, 32)))["params"]
  variables = _load(blk, abstract)
  with torch.no_grad():
    want = _nhwc(blk(x, cond))
  ours = model.apply(variables, jnp.asarray(_nhwc(x)), jnp.asarray(cond.numpy()))
  assert _err("ConvNextBlock", ours, want) <= TOL
  # The modulation is applied after the residual: zeroing the FFN output leaves x * (1 + scale) + shift.
  p = jax.tree.map(lambda a: a, variables["params"])
  p["channelwise_linear_2"] = jax.tree.map(jnp.zeros_like, p["channelwise_linear_2"])
  mod = np.asarray(jax.nn.silu(cond.numpy()) @ p["cond_embeds_mapper"]["kernel"] + p["cond_embeds_mapper"]["bias"])
  scale, shift = mod[:, None, None, :16], mod[:, None, None, 16:]
  np.testing.assert_allclose(np.asarray(model.apply({"params": p}, jnp.asarray(_nhwc(x)), jnp.asarray(cond.numpy()))),
                             _nhwc(x) * (1 + scale) + shift, atol=1e-5)


def test_pixel_shuffle_matches_torch():
  for r, c in ((2, 3), (3, 2)):
    x = torch.randn(2, c * r * r, 4, 5)
    ours = np.asarray(uvit.pixel_shuffle(jnp.asarray(_nhwc(x)), r))
    np.testing.assert_array_equal(ours, _nhwc(torch.nn.functional.pixel_shuffle(x, r)))


def test_encoder_decoder_parity(tiny):
  (enc, enc_vars), (dec, dec_vars) = tiny
  rng = np.random.RandomState(0)
  z = torch.from_numpy(rng.randn(2, 4, 8, 12).astype(np.float32))  # NCHW latent, non-square.
  t = torch.tensor([33.25, 733.0])
  with torch.no_grad():
    x_ref, temb_ref, hs = enc(z, t)
    skip_ref = hs[0]
  x_emb, t_emb, skip = uvit.ShallowUViTEncoder(TINY).apply(enc_vars, jnp.asarray(_nhwc(z)), jnp.asarray(t.numpy()))
  assert x_emb.shape == (2, 4, 6, 16) and t_emb.shape == (2, 32)
  assert _err("encoder x_emb", x_emb, _nhwc(x_ref)) <= TOL
  assert _err("encoder t_emb", t_emb, temb_ref.numpy()) <= TOL
  assert _err("encoder skip", skip, _nhwc(skip_ref)) <= TOL
  # The LLM sees the official `view(B, C, h*w).permute(0, 2, 1)` raster order == our reshape(B, h*w, C).
  seq_ref = x_ref.reshape(2, 16, -1).permute(0, 2, 1).numpy()
  assert _err("encoder tokens (raster order)", np.asarray(x_emb).reshape(2, -1, 16), seq_ref) <= TOL

  llm_out = torch.from_numpy(rng.randn(2, 16, 4, 6).astype(np.float32))  # NCHW aligned LLM outputs.
  with torch.no_grad():
    v_ref = dec(llm_out, [skip_ref], temb_ref)
  v = uvit.ShallowUViTDecoder(TINY).apply(dec_vars, jnp.asarray(_nhwc(llm_out)), skip, t_emb)
  assert v.shape == (2, 8, 12, 4)
  assert _err("decoder velocity", v, _nhwc(v_ref)) <= TOL
  # The skip really enters (and in [x, skip] order): swapping the two changes the output.
  v_swapped = uvit.ShallowUViTDecoder(TINY).apply(dec_vars, skip, jnp.asarray(_nhwc(llm_out)), t_emb)
  assert np.abs(np.asarray(v_swapped) - np.asarray(v)).max() > 1e-2


def test_param_tree_names(tiny):
  abstract = uvit.abstract_params(TINY)
  leaves = jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in leaves)
  (enc, _), (dec, _) = tiny
  assert "mid_block.res_blocks.1.cond_embeds_mapper.weight" in enc.state_dict()
  assert "out_convs.0.unpatch_conv.weight" in dec.state_dict()
  dec_tree = abstract["vision_gen_dec_model"]
  assert set(dec_tree) == {"input_norm", "mid_block", "out_convs_0"}
  assert set(abstract["vision_gen_enc_model"]) == {"time_embed", "in_conv", "mid_block"}
  assert dec_tree["mid_block"]["res_blocks_0"]["channelwise_norm"]["weight"].value.shape == (1, 1, 1, 4 * 32)


def test_shipped_param_count_matches_torch():
  cfg = UViTConfig()
  ours = uvit.uvit_param_count(cfg)
  enc_kw, dec_kw = ref.uvit_kwargs(cfg)
  with torch.device("meta"):
    enc, dec = ref.ShallowUViTEncoder(**enc_kw), ref.ShallowUViTDecoder(**dec_kw)
  torch_count = sum(p.numel() for m in (enc, dec) for p in m.parameters())
  print(f"ShallowUViT enc+dec params (JanusFlow-1.3B): ours {ours:,}, torch {torch_count:,}")
  assert ours == torch_count == 72_175_632
  # Shipped shapes: a 4x48x48 latent <-> 24x24 = 576 LLM tokens of width 768.
  abstract = nn.unbox(uvit.abstract_params(cfg))
  sds = jax.ShapeDtypeStruct
  x_emb, t_emb, skip = jax.eval_shape(uvit.ShallowUViTEncoder(cfg).apply, {"params": abstract["vision_gen_enc_model"]},
                                      sds((2, 48, 48, 4), jnp.float32), sds((2,), jnp.float32))
  assert x_emb.shape == skip.shape == (2, 24, 24, 768) and t_emb.shape == (2, 2048)
  v = jax.eval_shape(uvit.ShallowUViTDecoder(cfg).apply, {"params": abstract["vision_gen_dec_model"]}, x_emb, skip,
                     t_emb)
  assert v.shape == (2, 48, 48, 4)


def test_bf16_compute_runs_close_to_fp32(tiny):
  (_, enc_vars), (_, dec_vars) = tiny
  cfg = dataclasses.replace(TINY, dtype="bfloat16")
  z = jnp.asarray(np.random.RandomState(1).randn(1, 8, 8, 4).astype(np.float32))
  t = jnp.asarray([500.0])

  @functools.partial(jax.jit, static_argnums=0)
  def run(c, z, t):
    x, te, s = uvit.ShallowUViTEncoder(c).apply(enc_vars, z, t)
    return uvit.ShallowUViTDecoder(c).apply(dec_vars, x, s, te)

  v32, v16 = run(TINY, z, t), run(cfg, z, t)
  assert v16.dtype == jnp.bfloat16
  rel = float(jnp.linalg.norm(v16.astype(jnp.float32) - v32) / jnp.linalg.norm(v32))
  print(f"bf16 vs fp32 velocity relative error: {rel:.3g}")
  assert rel < 5e-2


def test_errors(tiny):
  (_, enc_vars), (_, dec_vars) = tiny
  with pytest.raises(ValueError, match="NHWC"):
    uvit.ShallowUViTEncoder(TINY).apply(enc_vars, jnp.zeros((1, 4, 8, 8)), jnp.zeros((1,)))
  with pytest.raises(ValueError, match="patch_size"):
    uvit.ShallowUViTEncoder(TINY).apply(enc_vars, jnp.zeros((1, 7, 8, 4)), jnp.zeros((1,)))
  with pytest.raises(ValueError, match="timesteps"):
    uvit.ShallowUViTEncoder(TINY).apply(enc_vars, jnp.zeros((2, 8, 8, 4)), jnp.zeros((3,)))
  with pytest.raises(ValueError, match="equal shape"):
    uvit.ShallowUViTDecoder(TINY).apply(dec_vars, jnp.zeros((1, 4, 4, 16)), jnp.zeros((1, 4, 5, 16)),
                                        jnp.zeros((1, 32)))
