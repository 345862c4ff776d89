"""Tests of janus_jax.processing: tokenizers, prompts, batching and image preprocessing (offline, CPU)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from janus_jax import processing as P

# Ids of the official DeepSeek vocabulary; our tiny vocabularies must NOT produce them.
OFFICIAL_IDS = {"bos": 100000, "eos": 100001, "pad": (100002, 100015), "image_placeholder": (100581, 100594)}
CORPUS = [
    "A photo of a cat sitting on a mat.",
    "Describe the image in detail.",
    "The quick brown fox jumps over the lazy dog 12345.",
    "What is in the picture? hello world",
]
SYSTEM = P.DEFAULT_SYSTEM_PROMPT


# ------------------------------------------------------------------------------------------------
# Fixtures.
# ------------------------------------------------------------------------------------------------


def _build_hf_tokenizer(directory, with_bos_post_processor=True, with_pad=True, extra_specials=()):
  """Trains a tiny byte-level BPE with the Janus special tokens; saves `directory/tokenizer.json`."""
  import tokenizers
  from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers

  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tok.train_from_iterator(CORPUS * 5, trainer)
  names = [P.BOS_TOKEN, P.EOS_TOKEN] + ([P.PAD_TOKEN] if with_pad else []) + list(extra_specials)
  names += list(P.JANUS_SPECIAL_TOKENS)
  tok.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
  if with_bos_post_processor:
    bos = tok.token_to_id(P.BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{P.BOS_TOKEN} $A", special_tokens=[(P.BOS_TOKEN, bos)])
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "tokenizer.json")
  tok.save(path)
  return path


@pytest.fixture(scope="module", params=[True, False], ids=["bos_post_processor", "no_post_processor"])
def hf_tok(request, tmp_path_factory):
  directory = tmp_path_factory.mktemp("hf_tok")
  _build_hf_tokenizer(directory, with_bos_post_processor=request.param)
  return P.load_tokenizer(directory)


@pytest.fixture(scope="module")
def sp_tok(tmp_path_factory):
  directory = tmp_path_factory.mktemp("sp_tok")
  P.train_sentencepiece(CORPUS * 10, os.path.join(directory, "tiny"), vocab_size=320)
  return P.load_tokenizer(directory)


# ------------------------------------------------------------------------------------------------
# Tokenizers.
# ------------------------------------------------------------------------------------------------


def test_hf_bos_prepended_exactly_once(hf_tok):
  bos = hf_tok.bos_id
  ids = hf_tok.encode("hello world")
  assert ids[0] == bos and bos not in ids[1:]
  assert hf_tok.encode("hello world", add_bos=False) == ids[1:]
  assert hf_tok.encode(P.BOS_TOKEN + "hello world") == ids  # A BOS already in the text is not doubled.
  assert hf_tok.encode_batch(["hello world", "cat"]) == [ids, hf_tok.encode("cat")]


def test_hf_special_ids_looked_up_not_hard_coded(hf_tok):
  special = hf_tok.special_ids()
  assert special.bos == hf_tok.token_to_id(P.BOS_TOKEN) != OFFICIAL_IDS["bos"]
  assert special.eos == hf_tok.token_to_id(P.EOS_TOKEN) != OFFICIAL_IDS["eos"]
  assert special.pad == hf_tok.token_to_id(P.PAD_TOKEN) not in OFFICIAL_IDS["pad"]
  assert special.image_placeholder == hf_tok.token_to_id("<image_placeholder>")
  assert special.image_placeholder not in OFFICIAL_IDS["image_placeholder"]
  assert special.begin_of_image == hf_tok.token_to_id("<begin_of_image>")
  assert special.end_of_image == hf_tok.token_to_id("<end_of_image>")
  assert special.begin_of_generation == hf_tok.token_to_id(P.BEGIN_OF_GENERATION)
  assert len({special.bos, special.eos, special.pad, special.image_placeholder}) == 4
  # Full-width names (U+FF5C, U+2581) are single tokens in running text.
  for name in (P.BOS_TOKEN, P.EOS_TOKEN, P.PAD_TOKEN, P.BEGIN_OF_GENERATION):
    assert "\uff5c" in name and "\u2581" in name
    assert hf_tok.encode(f"a{name}b", add_bos=False)[1:-1] == [hf_tok.token_to_id(name)]


def test_hf_token_to_id_missing_names_token_and_file(hf_tok):
  with pytest.raises(KeyError, match="<not_a_token>") as info:
    hf_tok.token_to_id("<not_a_token>")
  assert hf_tok.path in str(info.value)


def test_hf_decode_skips_specials_and_roundtrips(hf_tok):
  text = "The quick brown fox jumps over the lazy dog 12345. Unseen: ü 日本"
  assert hf_tok.decode(hf_tok.encode(text)) == text
  ids = hf_tok.encode("hello <image_placeholder>\nworld" + P.EOS_TOKEN)
  assert hf_tok.decode(ids) == "hello \nworld"
  assert hf_tok.decode(np.asarray(ids), skip_special_tokens=False) == (
      P.BOS_TOKEN + "hello <image_placeholder>\nworld" + P.EOS_TOKEN)


def test_hf_pad_falls_back_to_eos(tmp_path):
  tok = P.load_tokenizer(_build_hf_tokenizer(tmp_path, with_pad=False))
  assert not tok.has_token(P.PAD_TOKEN)
  assert tok.pad_id == tok.eos_id == tok.special_ids().pad


def test_hf_reads_special_token_names_from_configs(tmp_path):
  _build_hf_tokenizer(tmp_path, extra_specials=("<my_pad>",))
  with open(tmp_path / "tokenizer_config.json", "w") as f:
    json.dump({"tokenizer_class": "LlamaTokenizer", "pad_token": None}, f)
  with open(tmp_path / "special_tokens_map.json", "w") as f:
    json.dump({"pad_token": {"content": "<my_pad>", "lstrip": False}}, f)
  tok = P.load_tokenizer(tmp_path)
  assert isinstance(tok, P.HFTokenizer)
  assert tok.pad_id == tok.token_to_id("<my_pad>") != tok.token_to_id(P.PAD_TOKEN)


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenizer.json") as info:
    P.load_tokenizer(tmp_path)
  assert str(tmp_path) in str(info.value)
  (tmp_path / "vocab.txt").write_text("x")
  with pytest.raises(ValueError, match="vocab.txt"):
    P.load_tokenizer(tmp_path / "vocab.txt")


def test_sentencepiece_training_helper(sp_tok):
  assert isinstance(sp_tok, P.SentencePieceTokenizer)
  assert (sp_tok.bos_id, sp_tok.eos_id, sp_tok.pad_id) == (1, 2, 3)
  assert sp_tok.bos_token == P.BOS_TOKEN and sp_tok.pad_token == P.PAD_TOKEN
  special = sp_tok.special_ids()
  for name in P.JANUS_SPECIAL_TOKENS:
    assert sp_tok.has_token(name)
  assert special.begin_of_generation == sp_tok.token_to_id(P.BEGIN_OF_GENERATION)
  text = "  The quick brown fox, ü 日本\n\n12345 "
  assert sp_tok.decode(sp_tok.encode(text)) == text
  prompt = P.understanding_prompt("What is this?", "deepseek") + P.EOS_TOKEN
  ids = sp_tok.encode(prompt)
  assert ids[0] == sp_tok.bos_id and ids.count(sp_tok.bos_id) == 1
  assert ids.count(special.image_placeholder) == 1 and ids[-1] == sp_tok.eos_id
  assert ids.count(sp_tok.token_to_id("<|User|>")) == 1
  assert sp_tok.decode(ids, skip_special_tokens=False) == P.BOS_TOKEN + prompt
  assert sp_tok.decode(ids) == prompt.replace("<|User|>", "").replace("<|Assistant|>", "").replace(
      "<image_placeholder>", "").replace(P.EOS_TOKEN, "")
  with pytest.raises(KeyError, match="tiny.model"):
    sp_tok.token_to_id("<absent>")


# ------------------------------------------------------------------------------------------------
# Prompt strings (the exact strings of janus_models.md 2.3 are the spec).
# ------------------------------------------------------------------------------------------------


def test_understanding_prompt_strings():
  assert SYSTEM == (
      "You are a helpful language and vision assistant. You are able to understand the visual content that the "
      "user provides, and assist the user with a variety of tasks using natural language.")
  # Like the official code, the whole message is stripped (the question's trailing whitespace goes).
  assert P.understanding_prompt("What is it?\n ", "deepseek") == (
      SYSTEM + "\n\n<|User|>: <image_placeholder>\nWhat is it?\n\n<|Assistant|>:")
  assert P.understanding_prompt("What is it?", "deepseek_old") == (
      SYSTEM + "\n\nUser: <image_placeholder>\nWhat is it?\n\nAssistant:")
  assert P.understanding_prompt("What is it?", "deepseek", system_prompt="") == (
      "<|User|>: <image_placeholder>\nWhat is it?\n\n<|Assistant|>:")
  assert P.understanding_prompt("Compare.", "deepseek", "", num_images=2) == (
      "<|User|>: <image_placeholder>\n<image_placeholder>\nCompare.\n\n<|Assistant|>:")


def test_generation_prompt_strings():
  assert P.generation_prompt(" A red cat. ", "deepseek") == (
      "<|User|>: A red cat.\n\n<|Assistant|>:<begin_of_image>")
  assert P.generation_prompt("A red cat.", "deepseek_old") == "User: A red cat.\n\nAssistant:<begin_of_image>"
  assert P.generation_prompt("A red cat.", "deepseek_old", P.BEGIN_OF_GENERATION) == (
      "User: A red cat.\n\nAssistant:" + P.BEGIN_OF_GENERATION)


def test_format_conversation_multi_turn():
  messages = [
      {"role": "user", "content": "Hi "},
      {"role": "assistant", "content": " Hello!"},
      {"role": "<|User|>", "content": "Bye"},
      {"role": "assistant", "content": ""},
  ]
  assert P.format_conversation(messages, "deepseek", "sys") == (
      "sys\n\n<|User|>: Hi\n\n<|Assistant|>: Hello!" + P.EOS_TOKEN + "<|User|>: Bye\n\n<|Assistant|>:")
  # A conversation ending with content is stripped (no trailing "\n\n").
  assert P.format_conversation(messages[:1], "deepseek_old") == "User: Hi"


def test_template_and_role_errors():
  with pytest.raises(ValueError, match=r"Unknown chat template 'llama'.*\['deepseek', 'deepseek_old'\]"):
    P.understanding_prompt("q", "llama")
  with pytest.raises(ValueError, match="Unknown role '<|User|>'"):
    P.format_conversation([{"role": "<|User|>", "content": "q"}], "deepseek_old")


# ------------------------------------------------------------------------------------------------
# Token-level batching.
# ------------------------------------------------------------------------------------------------

SPECIAL = P.SpecialTokens(bos=1, eos=2, pad=3, image_placeholder=9, begin_of_image=7, end_of_image=8)


@pytest.mark.parametrize("extra_boi_slot,slots", [(False, 576), (True, 577)])
def test_expand_image_placeholders(extra_boi_slot, slots):
  ids, mask = P.expand_image_placeholders([1, 5, 9, 6, 9, 4], SPECIAL, extra_boi_slot=extra_boi_slot)
  assert ids.dtype == np.int32 and mask.dtype == bool
  assert len(ids) == 6 + 2 * 577
  assert (ids == 9).sum() == 2 * 576 and (ids == 7).sum() == 2 and (ids == 8).sum() == 2
  assert mask.sum() == 2 * slots
  block = [7] + [9] * 576 + [8]
  assert ids.tolist() == [1, 5] + block + [6] + block + [4]
  assert mask[2] == extra_boi_slot and mask[3:579].all() and not mask[579]


def test_batch_left_pad_and_masks():
  batch = P.batch_left_pad([[1, 5, 6], [1, 4, 5, 6, 7], [1]], pad_id=3)
  np.testing.assert_array_equal(batch["input_ids"], [[3, 3, 1, 5, 6], [1, 4, 5, 6, 7], [3, 3, 3, 3, 1]])
  np.testing.assert_array_equal(batch["attention_mask"], batch["input_ids"] != 3)
  assert batch["input_ids"].dtype == np.int32 and batch["attention_mask"].dtype == bool
  assert P.batch_left_pad([[1, 2, 4]], 3, pad_to_multiple_of=4)["input_ids"].tolist() == [[3, 1, 2, 4]]
  np.testing.assert_array_equal(P.left_pad_masks([[True], [False, True]], 3), [[0, 0, 1], [0, 0, 1]])


def test_over_long_prompt_error():
  with pytest.raises(ValueError) as info:
    P.batch_left_pad([[1, 2], list(range(40))], pad_id=0, max_len=32)
  message = str(info.value)
  assert "Sequence 1 is 40 tokens long" in message and "max_len=32" in message
  assert "Shorten the prompt or use fewer images" in message


def test_prepare_understanding_batch(hf_tok):
  special = hf_tok.special_ids()
  batch = P.prepare_understanding_batch(hf_tok, ["What is it?", "Compare these two images, please."], [1, 2])
  ids, mask, img = batch["input_ids"], batch["attention_mask"], batch["image_seq_mask"]
  assert ids.shape == mask.shape == img.shape and ids.dtype == np.int32
  assert img.sum(axis=1).tolist() == [576, 1152] and batch["num_images"].tolist() == [1, 2]
  assert (ids[img] == special.image_placeholder).all() and not (img & ~mask).any()
  assert (ids[~mask] == special.pad).all() and mask[1].all() and not mask[0, 0]
  first_real = np.argmax(mask, axis=1)
  assert (ids[np.arange(2), first_real] == special.bos).all()
  row0 = ids[0, mask[0]].tolist()
  assert row0 == P.expand_image_placeholders(
      hf_tok.encode(P.understanding_prompt("What is it?", "deepseek")), special)[0].tolist()
  flow = P.prepare_understanding_batch(hf_tok, ["What?"], 1, "deepseek_old", extra_boi_slot=True)
  assert flow["image_seq_mask"].sum() == 577
  with pytest.raises(ValueError, match="max_len=100"):
    P.prepare_understanding_batch(hf_tok, ["What?"], 1, max_len=100)


def test_prepare_generation_batch(hf_tok):
  special = hf_tok.special_ids()
  prompts = ["A cat.", "A photo of a cat sitting on a mat, in detail."]
  batch = P.prepare_generation_batch(hf_tok, prompts, "deepseek")
  cond, cmask = batch["input_ids"], batch["attention_mask"]
  uncond, umask = batch["uncond_input_ids"], batch["uncond_attention_mask"]
  assert cond.shape == uncond.shape and (cmask == umask).all()
  for row, prompt in enumerate(prompts):
    real = hf_tok.encode(P.generation_prompt(prompt, "deepseek"))
    assert cond[row, cmask[row]].tolist() == real
    u = uncond[row, umask[row]].tolist()
    assert u == [special.bos] + [special.pad] * (len(real) - 2) + [special.begin_of_image]
  assert (cond[:, -1] == special.begin_of_image).all() and not cmask[0, 0]


def test_understanding_ids_match_transformers_janus_processor(tmp_path):
  """Our prompt -> ids (BOS, expansion, left padding) equals transformers' JanusProcessor on the same vocab."""
  transformers = pytest.importorskip("transformers")
  hf_tok = P.load_tokenizer(_build_hf_tokenizer(tmp_path))  # BOS post-processor, as DeepSeek's.
  hf = transformers.PreTrainedTokenizerFast(
      tokenizer_file=hf_tok.path, bos_token=P.BOS_TOKEN, eos_token=P.EOS_TOKEN, pad_token=P.PAD_TOKEN,
      extra_special_tokens={"image_token": P.IMAGE_PLACEHOLDER, "boi_token": P.BEGIN_OF_IMAGE,
                            "eoi_token": P.END_OF_IMAGE})
  assert hf.encode("x")[0] == hf_tok.bos_id
  image_processor = transformers.JanusImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3)
  processor = transformers.JanusProcessor(image_processor, hf, num_image_tokens=576)
  questions = ["What is it?", "Describe the image in detail, please."]
  texts = [P.understanding_prompt(q, "deepseek") for q in questions]
  image = np.zeros((8, 8, 3), np.uint8)
  ref = processor(text=texts, images=[image, image], return_tensors="np", padding=True)
  ours = P.prepare_understanding_batch(hf_tok, questions, 1, "deepseek")
  np.testing.assert_array_equal(ours["input_ids"], ref["input_ids"])
  np.testing.assert_array_equal(ours["attention_mask"], ref["attention_mask"].astype(bool))


# ------------------------------------------------------------------------------------------------
# Images.
# ------------------------------------------------------------------------------------------------


def _random_image(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("hw", [(200, 300), (300, 200), (1000, 500), (50, 1000), (1, 1), (384, 384)])
def test_preprocess_matches_transformers_pil(hw):
  """Sizes where int() and round() agree: equal to JanusImageProcessorPil (measured: max abs error 0.0)."""
  transformers = pytest.importorskip("transformers")
  image = _random_image(*hw)
  processor = transformers.JanusImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3)
  assert processor.background_color == P.BACKGROUND == (127, 127, 127)
  ref = processor(images=Image.fromarray(image), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
  ours = P.preprocess_understanding(image)
  assert ours.shape == (1, 384, 384, 3) and ours.dtype == np.float32
  assert np.abs(ours - ref).max() <= 1e-6


def test_resize_uses_int_truncation_not_round():
  # 999 / 1000 * 384 = 383.6: DeepSeek gives 383 rows (HF's round() would give 384, no padding).
  assert P.long_side_size(1000, 999) == (383, 384)
  assert P.long_side_size(1, 1) == (384, 384) and P.long_side_size(1000, 10) == (14, 384)
  image = np.full((999, 1000, 3), 255, np.uint8)
  out = P.preprocess_understanding(image)[0]
  content_rows = (out == 1.0).all(axis=(1, 2))
  assert content_rows.sum() == 383 and not content_rows[383]  # Offset (384 - 383) // 2 = 0: pad at bottom.
  np.testing.assert_allclose(out[383], 127 / 255 * 2 - 1, atol=1e-6)
  tall = P.preprocess_understanding(np.full((1000, 10, 3), 255, np.uint8))[0]
  content_cols = (tall == 1.0).all(axis=(0, 2))
  assert content_cols.sum() == 14 and content_cols[185] and content_cols[198] and not content_cols[184]


def test_expand_to_square_centres():
  img = Image.new("RGB", (4, 2), (255, 0, 0))
  out = np.asarray(P.expand_to_square(img, (1, 2, 3)))
  assert out.shape == (4, 4, 3)
  assert (out[1:3] == (255, 0, 0)).all() and (out[0] == (1, 2, 3)).all() and (out[3] == (1, 2, 3)).all()


def test_colour_mode_conversions(tmp_path):
  grey = np.asarray(P.load_image(Image.fromarray(np.full((3, 5), 77, np.uint8))))
  assert grey.shape == (3, 5, 3) and (grey == 77).all()
  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[..., :3], rgba[..., 3] = (10, 20, 30), 0
  assert (np.asarray(P.load_image(rgba)) == (10, 20, 30)).all()  # Alpha dropped, as `.convert("RGB")`.
  pal = Image.new("P", (2, 2), 1)
  pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
  assert (np.asarray(P.load_image(pal)) == (0, 255, 0)).all()
  cmyk = Image.new("CMYK", (2, 2), (0, 255, 0, 0))
  assert (np.asarray(P.load_image(cmyk)) == (255, 0, 255)).all()
  la = Image.new("LA", (2, 2), (100, 0))
  assert (np.asarray(P.load_image(la)) == 100).all()


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
  values = np.array([[0, 257, 32768], [40000, 65000, 65535]], np.uint16)
  expected = np.round(values / 257).astype(np.uint8)
  path = str(tmp_path / "grey16.png")
  Image.fromarray(values).save(path)
  with Image.open(path) as img:
    assert img.mode.startswith("I")
  for source in (path, values, Image.fromarray(values.astype(np.int32))):
    out = np.asarray(P.load_image(source))
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))


def test_one_pixel_image():
  out = P.preprocess_understanding(Image.new("RGB", (1, 1), (255, 0, 0)))
  assert out.shape == (1, 384, 384, 3)
  np.testing.assert_array_equal(out[0, 200, 5], [1.0, -1.0, -1.0])


def test_batch_of_mixed_inputs(tmp_path):
  path = str(tmp_path / "a.png")
  Image.fromarray(_random_image(30, 40)).save(path)
  out = P.preprocess_understanding([path, Image.open(path), _random_image(30, 40)])
  assert out.shape == (3, 384, 384, 3)
  np.testing.assert_array_equal(out[0], out[1])
  np.testing.assert_array_equal(out[0], out[2])


def test_image_errors(tmp_path):
  bad = tmp_path / "corrupt.png"
  bad.write_bytes(b"\x89PNG garbage bytes, not an image")
  with pytest.raises(ValueError, match="corrupt.png"):
    P.load_image(str(bad))
  with pytest.raises(ValueError, match=r"\(5, 5, 2\).*accepted"):
    P.load_image(np.zeros((5, 5, 2), np.uint8))
  with pytest.raises(ValueError, match=r"\(0, 5, 3\)"):
    P.preprocess_understanding(np.zeros((0, 5, 3), np.uint8))
  with pytest.raises(ValueError, match=r"\(2, 3, 4, 5, 3\)"):
    P.load_image(np.zeros((2, 3, 4, 5, 3), np.uint8))
  with pytest.raises(ValueError, match="float32"):
    P.load_image(np.zeros((5, 5, 3), np.float32))
  with pytest.raises(ValueError, match="0x5"):
    P.load_image(Image.new("RGB", (0, 5)))
  with pytest.raises(FileNotFoundError, match="missing.png"):
    P.load_image(str(tmp_path / "missing.png"))


def test_preprocess_generation_short_side_and_centre_crop():
  image = np.zeros((384, 768, 3), np.uint8)
  image[:, 384:] = 255
  out = P.preprocess_generation(image, 384)
  assert out.shape == (384, 384, 3) and out.dtype == np.float32
  assert (out[:, :192] == -1).all() and (out[:, 192:] == 1).all()
  assert P.preprocess_generation(_random_image(100, 50), 64).shape == (64, 64, 3)


def test_to_uint8_and_normalize():
  x = np.array([-1.0, 0.0, 1.0, 2.0, -3.0, 0.999, np.nan], np.float32)
  np.testing.assert_array_equal(P.to_uint8(x), [0, 127, 255, 255, 0, 254, 0])
  np.testing.assert_allclose(P.normalize(np.array([0, 127, 255], np.uint8)), [-1.0, -1 / 255, 1.0], atol=1e-7)
  # Truncation (official) can lose one level on a normalize -> to_uint8 round trip, never more.
  image = _random_image(16, 16)
  diff = image.astype(int) - P.to_uint8(P.normalize(image))
  assert diff.min() >= 0 and diff.max() <= 1


def test_decode_drops_ids_beyond_the_tokenizer(tmp_path):
  """Model vocabularies can be padded past the tokenizer (Janus: 102400 rows); such ids decode to nothing."""
  from janus_jax.data.prepare import train_shapes_tokenizer
  from janus_jax.data.shapes import ShapesSpec
  from janus_jax.processing.tokenizer import load_tokenizer
  sp = load_tokenizer(train_shapes_tokenizer(str(tmp_path), ShapesSpec(), num_scenes=50))
  ids = sp.encode("a red circle", add_bos=False)
  assert sp.decode(ids + [sp.vocab_size + 7, -1]) == sp.decode(ids) == "a red circle"
