"""End-to-end parity with transformers' Janus (tiny, random, offline), through our converter, in float32.

The reference is saved with `save_pretrained`, converted with `janus_jax.checkpoint.convert` and loaded with
`janus_jax.load` — the same path a user takes with a released checkpoint. The same checkpoint is also written
in the original DeepSeek layout (tensors renamed as the official conversion mapping does) and must convert to
identical params.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import janus_jax
from janus_jax import cli
from janus_jax.checkpoint import config_json, convert as convert_lib
from janus_jax.checkpoint.hf_layout import hf_to_deepseek
from janus_jax.models.janus import JanusModel
from janus_jax.models.llama import causal_mask, positions_from_mask
from janus_jax.sampling import ar_image
from janus_jax.sampling.sample import cfg_combine
from tiny_assets import make_tiny_tokenizer
from torch_reference import build_tiny_hf_janus, hf_state_numpy

ATOL = 1e-4
PAD, BOS, EOS, IMG, BOI = 0, 1, 2, 5, 7


def _max_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.fixture(scope="module")
def hf_model():
  model = build_tiny_hf_janus(seed=0)
  model.generation_config.pad_token_id = PAD
  model.generation_config.bos_token_id = BOS
  model.generation_config.eos_token_id = EOS
  model.generation_config.generation_kwargs = {"boi_token_id": BOI}
  return model


@pytest.fixture(scope="module")
def pipe(hf_model, tmp_path_factory):
  root = tmp_path_factory.mktemp("parity")
  src = root / "hf"
  hf_model.save_pretrained(src)
  make_tiny_tokenizer(str(src))
  dst = root / "converted"
  assert cli.main(["convert", "--from", str(src), "--to", str(dst), "--quiet"]) == 0  # the user's path
  return janus_jax.load(str(dst), template="deepseek")


def _apply(pipe, method, *args):
  return pipe.model.apply({"params": pipe.params}, *args, method=method)


def test_deepseek_layout_converts_to_identical_params(hf_model, pipe, tmp_path):
  from safetensors.numpy import save_file
  src = tmp_path / "deepseek"
  src.mkdir()
  state = hf_to_deepseek(hf_state_numpy(hf_model))
  save_file(state, str(src / "model.safetensors"))
  config_json.write_deepseek_config(pipe.cfg, src / "config.json")
  make_tiny_tokenizer(str(src))
  dst = convert_lib.convert(str(src), str(tmp_path / "out"), progress=False)
  other = janus_jax.load(str(dst))
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), pipe.params, other.params)
  assert max(jax.tree.leaves(diffs)) == 0.0


def test_vision_features_and_aligner(hf_model, pipe):
  rng = np.random.default_rng(0)
  pixels = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    pt = torch.from_numpy(pixels.transpose(0, 3, 1, 2))
    ref_vis = hf_model.model.vision_model(pt).last_hidden_state.numpy()
    ref_aligned = hf_model.model.aligner(torch.from_numpy(ref_vis)).numpy()
  ours_vis = _apply(pipe, lambda m, x: m.vision_model(x), pixels)
  ours_aligned = _apply(pipe, JanusModel.image_features, pixels)
  assert _max_err(ours_vis, ref_vis) <= ATOL
  assert _max_err(ours_aligned, ref_aligned) <= ATOL


def _understanding_batch():
  """Two left-padded rows, 16 image placeholders each (tiny model: 4x4 patches)."""
  rows = [[BOS, 10, 11, BOI] + [IMG] * 16 + [6, 12, 13, 14],
          [BOS, 20, BOI] + [IMG] * 16 + [6, 21]]
  t = max(map(len, rows))
  ids = np.full((2, t), PAD, np.int32)
  valid = np.zeros((2, t), bool)
  for i, r in enumerate(rows):
    ids[i, t - len(r):] = r
    valid[i, t - len(r):] = True
  return ids, valid


def test_multimodal_llm_logits(hf_model, pipe):
  ids, valid = _understanding_batch()
  pixels = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    ref = hf_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(valid).long(),
                   pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2))).logits.numpy()
  text_logits, _ = pipe.model.apply({"params": pipe.params}, ids, ids == IMG, pixels[:, None],
                                    positions_from_mask(valid), causal_mask(valid, ids.shape[1]))
  err = max(_max_err(np.asarray(text_logits)[i][valid[i]], ref[i][valid[i]]) for i in range(2))
  assert err <= ATOL, err


def _generation_prompts():
  cond = np.array([[BOS, 20, 21, 22, BOI], [BOS, 30, 31, 32, BOI]], np.int32)
  uncond = np.where((cond == BOS) | (cond == BOI), cond, PAD)
  return cond, uncond


def test_image_head_and_cfg_logits(hf_model, pipe):
  cond, uncond = _generation_prompts()
  ids = np.concatenate([cond, uncond])
  with torch.no_grad():
    out = hf_model.model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.ones(ids.shape).long())
    ref = hf_model.model.generation_head(out.last_hidden_state[:, -1]).numpy()
  valid = np.ones(ids.shape, bool)
  hidden, _ = _apply(pipe, JanusModel.llm, _apply(pipe, JanusModel.embed_text, ids), positions_from_mask(valid),
                     causal_mask(valid, ids.shape[1]))
  ours = np.asarray(_apply(pipe, JanusModel.image_logits, hidden[:, -1]))
  assert _max_err(ours, ref) <= ATOL
  assert _max_err(cfg_combine(ours[:2], ours[2:], 5.0), ref[2:] + 5.0 * (ref[:2] - ref[2:])) <= 5 * ATOL


def test_greedy_cfg_image_tokens_identical(hf_model, pipe):
  cond, _ = _generation_prompts()
  with torch.no_grad():
    ref = hf_model.generate(input_ids=torch.from_numpy(cond).long(), attention_mask=torch.ones(cond.shape).long(),
                            generation_mode="image", do_sample=False, guidance_scale=5.0).numpy()
  _, uncond = _generation_prompts()
  run = ar_image.compiled_generate(pipe.model, greedy=True)
  ours = run(pipe.params, np.concatenate([cond, uncond]), np.ones((4, cond.shape[1]), bool),
             jax.random.PRNGKey(0), jnp.float32(5.0), jnp.float32(1.0), jnp.float32(1.0))
  np.testing.assert_array_equal(np.asarray(ours), ref)
  assert ref.shape == (2, pipe.cfg.num_image_tokens)


def test_vq_decoded_pixels(hf_model, pipe):
  codes = np.random.default_rng(2).integers(0, 256, (2, 16))
  with torch.no_grad():
    ref = hf_model.decode_image_tokens(torch.from_numpy(codes).long()).numpy()  # (B, H, W, C)
  ours = _apply(pipe, JanusModel.decode_image_tokens, codes)
  assert ours.shape == ref.shape
  assert _max_err(ours, ref) <= ATOL


def test_greedy_understanding_answers_identical(hf_model, pipe):
  ids, valid = _understanding_batch()
  pixels = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    ref = hf_model.generate(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(valid).long(),
                            pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)), max_new_tokens=12,
                            do_sample=False, generation_mode="text", eos_token_id=-1).numpy()[:, ids.shape[1]:]
  from janus_jax.sampling.understand import compiled_understand
  run = compiled_understand(pipe.model, greedy=True, max_new_tokens=12)
  tokens, lengths = run(pipe.params, ids, valid, ids == IMG, pixels[:, None], jax.random.PRNGKey(0),
                        jnp.float32(1.0), jnp.float32(1.0), jnp.int32(-1))
  np.testing.assert_array_equal(np.asarray(tokens), ref)
  np.testing.assert_array_equal(np.asarray(lengths), [12, 12])


def test_understanding_stops_at_eos(pipe):
  """Declaring the 4th greedy token of row 0 as EOS ends row 0 there (EOS-filled after); other rows run on."""
  from janus_jax.sampling.understand import compiled_understand
  ids, valid = _understanding_batch()
  pixels = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  run = compiled_understand(pipe.model, greedy=True, max_new_tokens=12)
  args = (pipe.params, ids, valid, ids == IMG, pixels[:, None], jax.random.PRNGKey(0), jnp.float32(1.0),
          jnp.float32(1.0))
  free, _ = map(np.asarray, run(*args, jnp.int32(-1)))
  eos = int(free[0, 3])
  stop = int(np.argmax(free[0] == eos))  # first occurrence (<= 3)
  tokens, lengths = map(np.asarray, run(*args, jnp.int32(eos)))
  assert lengths[0] == stop and np.all(tokens[0, stop:] == eos)
  np.testing.assert_array_equal(tokens[0, :stop], free[0, :stop])
  row1_stop = int(np.argmax(free[1] == eos)) if np.any(free[1] == eos) else 12
  assert lengths[1] == row1_stop
  np.testing.assert_array_equal(tokens[1, :row1_stop], free[1, :row1_stop])


def test_kv_cache_decode_equals_teacher_forcing(pipe):
  """Cached prefill + one-token steps give the teacher-forced logits; the compiled greedy loop picks their argmax."""
  from janus_jax.models.llama import KVCache
  cond, uncond = _generation_prompts()
  ids = np.concatenate([cond, uncond])
  t, n = ids.shape[1], pipe.cfg.num_image_tokens
  valid = np.ones(ids.shape, bool)
  codes = np.asarray(ar_image.compiled_generate(pipe.model, greedy=True)(
      pipe.params, ids, valid, jax.random.PRNGKey(0), jnp.float32(5.0), jnp.float32(1.0), jnp.float32(1.0)))
  prev = np.concatenate([codes, codes])[:, :-1]
  embeds = jnp.concatenate([_apply(pipe, JanusModel.embed_text, ids),
                            _apply(pipe, JanusModel.embed_image_tokens, prev)], axis=1)
  full_valid = np.ones(embeds.shape[:2], bool)
  hidden, _ = _apply(pipe, JanusModel.llm, embeds, positions_from_mask(full_valid),
                     causal_mask(full_valid, embeds.shape[1]))
  teacher = np.asarray(_apply(pipe, JanusModel.image_logits, hidden[:, t - 1:]))
  np.testing.assert_array_equal(np.argmax(cfg_combine(teacher[:2], teacher[2:], 5.0), -1), codes)

  cache = KVCache.zeros(pipe.cfg.llm, 4, t + n)
  key_valid = np.ones((4, t + n), bool)
  positions = positions_from_mask(key_valid)
  h, cache = _apply(pipe, JanusModel.llm, embeds[:, :t], positions[:, :t], causal_mask(key_valid, t, 0), cache, 0)
  stepped = [h[:, -1]]
  for i in range(t, t + n - 1):
    h, cache = _apply(pipe, JanusModel.llm, embeds[:, i:i + 1], positions[:, i:i + 1],
                      causal_mask(key_valid, 1, i), cache, i)
    stepped.append(h[:, 0])
  cached = np.asarray(_apply(pipe, JanusModel.image_logits, jnp.stack(stepped, axis=1)))
  assert _max_err(cached, teacher) <= 1e-5


def test_batched_generation_equals_one_by_one(pipe):
  batched = pipe.generate_tokens(["a red circle", "two green triangles"], greedy=True)[0]
  single = np.concatenate([pipe.generate_tokens([p], greedy=True)[0]
                           for p in ["a red circle", "two green triangles"]])
  np.testing.assert_array_equal(batched, single)


def test_generate_is_deterministic_and_does_not_recompile(pipe):
  run = ar_image.compiled_generate(pipe.model, greedy=False, top_k=0).for_params(pipe.params)
  a = pipe.generate(["a red circle"], num_images=2, seed=3)
  size_after_first = run._cache_size()
  b = pipe.generate(["a red circle"], num_images=2, seed=3, cfg_weight=4.0, temperature=0.9)
  c = pipe.generate(["a red circle"], num_images=2, seed=3)
  assert run._cache_size() == size_after_first == 1
  np.testing.assert_array_equal(a.tokens, c.tokens)
  assert a.images.dtype == np.uint8 and a.images.shape == (2, 16, 16, 3)
  assert not np.array_equal(a.tokens[0], a.tokens[1])  # two samples of one prompt differ
  assert b.tokens.shape == a.tokens.shape


def test_vq_encode_matches_l2_nearest_code(pipe):
  img = np.random.default_rng(5).integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
  codes = pipe.encode_images(list(img))
  pixels = (img.astype(np.float32) / 255.0 - 0.5) / 0.5
  feats = np.asarray(_apply(pipe, lambda m, x: m.gen_vision_model.encode_features(x), pixels)).reshape(-1, 8)
  book = np.asarray(pipe.params["gen_vision_model"]["quantize"]["embedding"]["embedding"])
  z = feats / np.linalg.norm(feats, axis=-1, keepdims=True)
  e = book / np.linalg.norm(book, axis=-1, keepdims=True)
  ref = np.argmin(((z[:, None, :] - e[None]) ** 2).sum(-1), axis=1).reshape(2, -1)
  np.testing.assert_array_equal(codes, ref)
