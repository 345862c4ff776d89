"""Parity of the SigLIP encoder, the aligners and the image head against the tiny transformers Janus."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from janus_jax.checkpoint.hf_layout import hf_to_deepseek  # noqa: E402
from janus_jax.checkpoint.mapping import state_dict_to_params  # noqa: E402
from janus_jax.models.aligners import Aligner, GenHead  # noqa: E402
from janus_jax.models.configs import AlignerConfig, JanusConfig  # noqa: E402
from janus_jax.models.siglip import SiglipVisionTower  # noqa: E402
from tests.torch_reference import TINY_JANUS, build_tiny_hf_janus, hf_state_numpy  # noqa: E402

CFG = JanusConfig.from_dict(TINY_JANUS)
TOL = 1e-5
ERRORS: dict[str, float] = {}


@pytest.fixture(scope="module")
def hf():
  return build_tiny_hf_janus(seed=0)


@pytest.fixture(scope="module")
def state(hf):
  return hf_to_deepseek(hf_state_numpy(hf))


@pytest.fixture(scope="module")
def images():
  """(torch NCHW, numpy NHWC) pair of images in [-1, 1]."""
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 3, CFG.vision.image_size, CFG.vision.image_size)).astype(np.float32)
  return torch.from_numpy(x), x.transpose(0, 2, 3, 1)


def _load(module, state, prefix, *inputs, ignore=()):
  """Params for `module` from the DeepSeek-named tensors under `prefix` (prefix stripped)."""
  sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
  abstract = jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"]
  return state_dict_to_params(sub, nn.unbox(abstract), ignore=ignore)


def _err(name, ours, ref):
  err = float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64))))
  ERRORS[name] = err
  print(f"{name}: max abs err {err:.3e}")
  return err


def _vision_features(cfg, state, x_nhwc):
  tower = SiglipVisionTower(cfg)
  params = _load(tower, state, "vision_model.", x_nhwc)
  return tower, params, jax.jit(tower.apply)({"params": params}, x_nhwc)


@pytest.mark.parametrize("scan", [True, False])
def test_vision_features_match_hf(hf, state, images, scan):
  x_t, x = images
  cfg = dataclasses.replace(CFG.vision, scan_layers=scan)
  _, params, ours = _vision_features(cfg, state, x)
  top = params["vision_tower"]
  blocks = {"blocks"} if scan else {"blocks_0", "blocks_1"}
  assert set(top) == {"patch_embed", "pos_embed", "norm"} | blocks
  with torch.no_grad():
    # `last_hidden_state` is after `post_layernorm` = DeepSeek's final `norm`, the features Janus feeds the aligner.
    ref = hf.model.vision_model(x_t).last_hidden_state.numpy()
  assert ours.shape == ref.shape == (2, cfg.num_patches, cfg.width)
  assert _err(f"vision scan={scan}", ours, ref) <= TOL


def test_understanding_aligner_matches_hf(hf, state, images):
  x_t, x = images
  with torch.no_grad():
    feats = hf.model.vision_model(x_t).last_hidden_state
    ref_aligned = hf.model.aligner(feats).numpy()
    ref_e2e = hf.model.get_image_features(x_t).pooler_output.numpy()
  aligner = Aligner(CFG.aligner)
  params = _load(aligner, state, "aligner.", feats.numpy())
  assert set(params) == {"layers_0", "layers_2"}
  ours = aligner.apply({"params": params}, feats.numpy())
  assert _err("aligner", ours, ref_aligned) <= TOL

  _, _, ours_feats = _vision_features(CFG.vision, state, x)
  assert _err("vision+aligner (get_image_features)", aligner.apply({"params": params}, ours_feats),
              ref_e2e) <= TOL


def test_gen_head_matches_hf(hf, state):
  h = np.random.default_rng(1).standard_normal((2, 5, CFG.gen_head.n_embed)).astype(np.float32)
  head = GenHead(CFG.gen_head)
  params = _load(head, state, "gen_head.", h)
  assert set(params) == {"output_mlp_projector", "vision_head"}
  with torch.no_grad():
    ref = hf.model.generation_head(torch.from_numpy(h)).numpy()
  ours = head.apply({"params": params}, h)
  assert ours.shape == (2, 5, CFG.gen_head.image_token_size)
  assert _err("gen_head", ours, ref) <= TOL
  # The last-position call used during sampling: float[B, D] -> float[B, V].
  assert _err("gen_head [B, D]", head.apply({"params": params}, h[:, -1]), ref[:, -1]) <= TOL


def test_gen_aligner_matches_hf(hf, state):
  ids = np.array([[0, 7, 255, 3], [9, 9, 100, 42]])
  with torch.no_grad():
    emb = hf.model.generation_embeddings(torch.from_numpy(ids))
    ref = hf.model.generation_aligner(emb).numpy()
  aligner = Aligner(CFG.gen_aligner)
  params = _load(aligner, state, "gen_aligner.", emb.numpy())
  assert params["layers_0"]["kernel"].shape == (8, 64)
  ours = aligner.apply({"params": params}, emb.numpy())
  assert ours.shape == (2, 4, 64)
  assert _err("gen_aligner", ours, ref) <= TOL


def test_linear_aligner_matches_torch_linear():
  cfg = AlignerConfig(kind="linear", input_dim=16, output_dim=24)
  torch.manual_seed(0)
  lin = torch.nn.Linear(16, 24)
  x = np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32)
  aligner = Aligner(cfg)
  params = _load(aligner, {k: v.detach().numpy() for k, v in lin.state_dict().items()}, "", x)
  assert set(params) == {"kernel", "bias"}
  with torch.no_grad():
    ref = lin(torch.from_numpy(x)).numpy()
  assert _err("linear aligner", aligner.apply({"params": params}, x), ref) <= TOL


def test_unknown_aligner_kind_raises():
  with pytest.raises(ValueError, match=r"Unknown aligner kind 'mlp_relu'.*mlp_gelu.*linear"):
    jax.eval_shape(Aligner(AlignerConfig(kind="mlp_relu", input_dim=4, output_dim=4)).init, jax.random.key(0),
                   jnp.zeros((1, 4)))


@pytest.mark.parametrize("select_layer, want", [(-1, 6), (-2, 5), (0, 6), (5, 5), (9, 6), (-6, 1)])
def test_select_layer_block_count(select_layer, want):
  cfg = dataclasses.replace(CFG.vision, depth=6, select_layer=select_layer)
  assert cfg.num_blocks == want
  x = jnp.zeros((1, cfg.image_size, cfg.image_size, 3))
  for scan in (True, False):
    tower = SiglipVisionTower(dataclasses.replace(cfg, scan_layers=scan))
    params = nn.unbox(jax.eval_shape(tower.init, jax.random.key(0), x)["params"])["vision_tower"]
    if scan:
      assert params["blocks"]["attn"]["qkv"]["kernel"].shape[0] == want
    else:
      assert sorted(k for k in params if k.startswith("blocks")) == sorted(f"blocks_{i}" for i in range(want))


def test_select_layer_truncation_matches_hf(state, images):
  x_t, x = images
  cfg = dataclasses.replace(CFG.vision, select_layer=-2)
  assert cfg.num_blocks == CFG.vision.depth - 1
  # Reference: the same HF model with its last encoder layer removed (the final norm still applies).
  hf_trunc = build_tiny_hf_janus(seed=0)
  hf_trunc.model.vision_model.encoder.layers = hf_trunc.model.vision_model.encoder.layers[:cfg.num_blocks]
  dropped = f"vision_model.vision_tower.blocks.{cfg.num_blocks}."
  kept = {k: v for k, v in state.items() if not k.startswith(dropped)}
  _, _, ours = _vision_features(cfg, kept, x)
  with torch.no_grad():
    ref = hf_trunc.model.vision_model(x_t).last_hidden_state.numpy()
  assert _err("vision select_layer=-2", ours, ref) <= TOL


def _modules_and_inputs():
  v = CFG.vision
  img = jnp.zeros((1, v.image_size, v.image_size, 3))
  return [
      (SiglipVisionTower(v), img),
      (SiglipVisionTower(dataclasses.replace(v, scan_layers=False)), img),
      (Aligner(CFG.aligner), jnp.zeros((1, 3, CFG.aligner.input_dim))),
      (Aligner(dataclasses.replace(CFG.aligner, depth=3)), jnp.zeros((1, 3, CFG.aligner.input_dim))),
      (Aligner(AlignerConfig(kind="linear", input_dim=16, output_dim=8)), jnp.zeros((1, 16))),
      (GenHead(CFG.gen_head), jnp.zeros((1, 3, CFG.gen_head.n_embed))),
  ]


def test_param_logical_names_rank():
  for module, x in _modules_and_inputs():
    boxed = jax.eval_shape(module.init, jax.random.key(0), x)["params"]
    specs = nn.get_partition_spec(boxed)
    shapes = nn.unbox(boxed)
    flat_specs = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
    flat_shapes = dict(jax.tree_util.tree_leaves_with_path(shapes))
    assert len(flat_specs) == len(flat_shapes)
    for path, spec in flat_specs:
      assert isinstance(spec, jax.sharding.PartitionSpec), (type(module).__name__, path)
      leaf = flat_shapes[path]
      assert len(spec) == leaf.ndim, (type(module).__name__, jax.tree_util.keystr(path), spec, leaf.shape)
      # Every param is boxed with names (an unboxed param would give an empty spec for a non-scalar).
      assert leaf.ndim == 0 or len(spec) > 0
  scanned = nn.get_partition_spec(jax.eval_shape(*_init_args(_modules_and_inputs()[0]))["params"])
  assert scanned["vision_tower"]["blocks"]["attn"]["qkv"]["kernel"] == jax.sharding.PartitionSpec(
      "layers", "embed", "qkv")
  assert scanned["vision_tower"]["pos_embed"] == jax.sharding.PartitionSpec(None, "pos", "embed")


def _init_args(pair):
  module, x = pair
  return module.init, jax.random.key(0), x


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (1, 16, 16, 3), (32, 32, 3), (1, 32, 32, 4)])
def test_wrong_image_shape_raises(shape):
  tower = SiglipVisionTower(CFG.vision)
  with pytest.raises(ValueError, match=r"expects NHWC images of shape \[B, 32, 32, 3\].*got shape"):
    jax.eval_shape(tower.init, jax.random.key(0), jnp.zeros(shape))


def test_select_layer_leaving_no_block_raises():
  cfg = dataclasses.replace(CFG.vision, select_layer=-(CFG.vision.depth + 1))
  with pytest.raises(ValueError, match="leaves no transformer block"):
    jax.eval_shape(SiglipVisionTower(cfg).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("scan", [True, False])
def test_remat_traces_under_grad(scan):
  cfg = dataclasses.replace(CFG.vision, scan_layers=scan, remat_policy="dots_with_no_batch_dims_saveable")
  tower = SiglipVisionTower(cfg)
  x = jnp.zeros((1, cfg.image_size, cfg.image_size, 3))
  params = nn.unbox(jax.eval_shape(tower.init, jax.random.key(0), x)["params"])
  grads = jax.eval_shape(jax.grad(lambda p: tower.apply({"params": p}, x).sum()), params)
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)


def test_bfloat16_compute_dtype_and_remat():
  cfg = dataclasses.replace(CFG.vision, dtype="bfloat16", remat_policy="full")
  tower = SiglipVisionTower(cfg)
  x = jnp.zeros((2, cfg.image_size, cfg.image_size, 3))
  variables = jax.eval_shape(tower.init, jax.random.key(0), x)
  out = jax.eval_shape(tower.apply, variables, x)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, cfg.num_patches, cfg.width)
  assert jax.tree_util.tree_leaves(nn.unbox(variables))[0].dtype == jnp.float32
  head_out = jax.eval_shape(lambda h: GenHead(dataclasses.replace(CFG.gen_head, dtype="bfloat16")).init_with_output(
      jax.random.key(0), h)[0], jnp.zeros((2, CFG.gen_head.n_embed)))
  # Image-token logits stay float32 whatever the compute dtype (janus_jax.precision).
  assert head_out.dtype == jnp.float32 and head_out.shape == (2, CFG.gen_head.image_token_size)


def test_sincos2d_pos_embed_init_encodes_row_and_column():
  cfg = dataclasses.replace(CFG.vision, pos_embed_init="sincos2d")
  grid, width = cfg.image_size // cfg.patch_size, cfg.width
  params = nn.unbox(SiglipVisionTower(cfg).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"])
  pos = np.asarray(params["vision_tower"]["pos_embed"])[0]
  assert pos.shape == (grid * grid, width)
  q = width // 4
  rows, cols = np.divmod(np.arange(grid * grid), grid)  # raster order, as the patchify reshape
  np.testing.assert_allclose(pos[:, 0], np.cos(cols), atol=1e-6)       # first x frequency is 1
  np.testing.assert_allclose(pos[:, q], np.sin(cols), atol=1e-6)
  np.testing.assert_allclose(pos[:, 2 * q], np.cos(rows), atol=1e-6)   # first y frequency is 1
  np.testing.assert_allclose(pos[:, 3 * q], np.sin(rows), atol=1e-6)
  np.testing.assert_allclose(pos[:, q - 1], np.cos(cols * 1e4 ** (-(q - 1) / q)), atol=1e-6)  # lowest x frequency
  assert len({tuple(np.round(p, 5)) for p in pos}) == grid * grid     # every patch gets its own code
  default = nn.unbox(SiglipVisionTower(CFG.vision).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"])
  assert float(np.abs(default["vision_tower"]["pos_embed"]).max()) < 0.2  # "normal" keeps timm's std 0.02


@pytest.mark.parametrize("kind, width, match", [("sin", 32, "Unknown vision pos_embed_init='sin'"),
                                                 ("sincos2d", 30, "width divisible by 4, got 30")])
def test_bad_pos_embed_init_raises(kind, width, match):
  cfg = dataclasses.replace(CFG.vision, pos_embed_init=kind, width=width, num_heads=2)
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(SiglipVisionTower(cfg).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
