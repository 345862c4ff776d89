"""Input pipeline: row formatting, mixture ratios, determinism, iterator-state resume, real-data adapters."""
import collections
import json

import numpy as np
import pytest
from PIL import Image

from janus_jax.data import pipeline, sources
from janus_jax.data.examples import RowBuilder, RowSpec
from janus_jax.data.shapes import ShapesSpec, make_example
from janus_jax.processing.tokenizer import load_tokenizer
from janus_jax.train.batch import check_batch
from tiny_assets import make_tiny_tokenizer

SEQ = 200


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return load_tokenizer(make_tiny_tokenizer(str(tmp_path_factory.mktemp("tok"))))


@pytest.fixture(scope="module")
def builder(tok):
  return RowBuilder(tok, RowSpec(seq_len=SEQ, num_image_tokens=16, und_image_size=32, gen_image_size=16))


@pytest.fixture(scope="module")
def records():
  return [make_example(i, ShapesSpec()) for i in range(40)]


def test_understanding_row_supervises_only_the_answer(tok, builder, records):
  rec = records[0]
  row = builder.understanding(rec["image"], rec["qa"]["question"][0], rec["qa"]["answer"][0])
  answer = tok.decode(row["targets"][row["text_loss_mask"]].tolist(), skip_special_tokens=False)
  assert answer == " " + rec["qa"]["answer"][0] + tok.eos_token
  assert row["und_image_mask"].sum() == 16
  assert np.all(row["input_ids"][row["und_image_mask"]] == tok.special_ids().image_placeholder)
  assert not row["image_loss_mask"].any() and not row["has_gen_image"]


def test_multi_turn_row_is_the_official_format_and_supervises_every_answer(tok, builder, records):
  from janus_jax.processing import chat  # pylint: disable=import-outside-toplevel
  rec = records[0]
  turns = [(rec["qa"]["question"][i], rec["qa"]["answer"][i]) for i in (0, 2, 5)]
  row = builder.conversation(rec["image"], turns)
  answers = tok.decode(row["targets"][row["text_loss_mask"]].tolist(), skip_special_tokens=False)
  assert answers == "".join(" " + a + tok.eos_token for _, a in turns)
  messages = [{"role": r, "content": c} for q, a in turns for r, c in (("user", q), ("assistant", a))]
  messages[0]["content"] = chat.image_placeholders(1) + messages[0]["content"]
  ids = row["input_ids"][row["valid"]]
  ids = np.concatenate([[ids[0]], ids[1:][~row["und_image_mask"][1:len(ids)]]])  # one placeholder per image
  text = tok.decode(ids.tolist(), skip_special_tokens=False)
  expected = chat.format_conversation(messages, "deepseek").replace(chat.IMAGE_PLACEHOLDER, "")
  assert text.replace(tok.bos_token, "").replace("<begin_of_image><end_of_image>", "") == expected
  assert row["und_image_mask"].sum() == 16 and not row["image_loss_mask"].any()


def test_multi_turn_row_drops_whole_turns_that_do_not_fit(tok, records):
  rec = records[0]
  one = RowBuilder(tok, RowSpec(seq_len=SEQ, num_image_tokens=16, und_image_size=32, gen_image_size=16))
  first = int(one.understanding(rec["image"], rec["qa"]["question"][0], rec["qa"]["answer"][0])["valid"].sum())
  tight = RowBuilder(tok, RowSpec(seq_len=first + 3, num_image_tokens=16, und_image_size=32, gen_image_size=16))
  turns = [(rec["qa"]["question"][i], rec["qa"]["answer"][i]) for i in range(4)]
  row = tight.conversation(rec["image"], turns)
  assert row["valid"].sum() == first  # the later turns are left out whole, not cut
  answers = tok.decode(row["targets"][row["text_loss_mask"]].tolist(), skip_special_tokens=False)
  assert answers == " " + turns[0][1] + tok.eos_token
  with pytest.raises(ValueError, match="seq_len is"):
    RowBuilder(tok, RowSpec(seq_len=first - 1, num_image_tokens=16, und_image_size=32,
                            gen_image_size=16)).conversation(rec["image"], turns)


def test_shapes_adapter_asks_distinct_questions_per_conversation(records):
  und = sources.shapes(records, qa_turns=3).makers["und"]
  for k in range(10):
    rec = records[k]
    image, turns = und(rec, np.random.default_rng(k))
    assert len(turns) == 3 and len({q for q, _ in turns}) == 3
    pairs = set(zip(rec["qa"]["question"], rec["qa"]["answer"]))
    assert all(t in pairs for t in turns) and image.shape == (32, 32, 3)
  with pytest.raises(ValueError, match="qa_turns"):
    sources.shapes(records, qa_turns=0)


def test_text_only_conversation_has_no_image_and_supervises_the_answers(tok, builder, records):
  from janus_jax.processing import chat  # pylint: disable=import-outside-toplevel
  rec = records[1]
  turns = [(rec["qa"]["question"][i], rec["qa"]["answer"][i]) for i in (1, 4)]
  row = builder.conversation(None, turns)
  assert not row["und_image_mask"].any() and not np.any(row["und_pixels"]) and not row["image_loss_mask"].any()
  answers = tok.decode(row["targets"][row["text_loss_mask"]].tolist(), skip_special_tokens=False)
  assert answers == "".join(" " + a + tok.eos_token for _, a in turns)
  messages = [{"role": r, "content": c} for q, a in turns for r, c in (("user", q), ("assistant", a))]
  text = tok.decode(row["input_ids"][row["valid"]].tolist(), skip_special_tokens=False)
  assert text.replace(tok.bos_token, "") == chat.format_conversation(messages, "deepseek")


def test_shapes_adapter_multiple_choice_weight(records):
  def mc_share(weight):
    und = sources.shapes(records, qa_turns=2, mc_weight=weight).makers["und"]
    rng = np.random.default_rng(0)
    picked = [q for rec in records for q, _ in und(rec, rng)[1]]
    return np.mean(["option" in q for q in picked])
  assert mc_share(1.0) == pytest.approx(0.5, abs=0.15)
  assert mc_share(50.0) > 0.9 and mc_share(0.02) < 0.1
  # The default keeps the uniform draw of earlier versions (the same data order for older runs).
  und = sources.shapes(records, qa_turns=3).makers["und"]
  want = np.random.default_rng(7).choice(8, size=3, replace=False)
  assert [q for q, _ in und(records[0], np.random.default_rng(7))[1]] == [records[0]["qa"]["question"][i] for i in want]
  with pytest.raises(ValueError, match="mc_weight"):
    sources.shapes(records, mc_weight=0.0)


def test_shapes_adapter_scaffolds_multiple_choice_with_the_open_question(records):
  und = sources.shapes(records, qa_turns=3, mc_scaffold=1.0).makers["und"]
  rng, seen = np.random.default_rng(0), 0
  for rec in records[:10]:
    turns = und(rec, rng)[1]
    for k, (q, a) in enumerate(turns):
      if "\n" in q:  # a multiple-choice turn: its open form, answered with the right option's text, comes first
        options = [line[3:] for line in q.split("\n")[1:-1]]
        assert turns[k - 1] == (q.split("\n")[0], options[ord(a) - ord("A")])
        seen += 1
  assert seen >= 5
  with pytest.raises(ValueError, match="mc_scaffold"):
    sources.shapes(records, mc_scaffold=1.5)


def test_shapes_text_rows_ask_about_the_scene_in_words(builder, records):
  adapter = sources.shapes(records, text_qa_turns=2)
  rec = records[2]
  (turns,) = adapter.makers["text"](rec, np.random.default_rng(0))
  layout = rec["captions"][-1]
  assert len(turns) == 2 and turns[0][0].startswith(layout + ".\n")
  pairs = set(zip(rec["qa"]["question"], rec["qa"]["answer"]))
  assert (turns[0][0][len(layout) + 2:], turns[0][1]) in pairs and turns[1] in pairs
  row = pipeline._MakeRow(adapter, builder, "text").random_map(rec, np.random.default_rng(0))  # pylint: disable=protected-access
  assert row["kind"] == sources.KINDS.index("text") and not row["und_image_mask"].any()
  assert row["text_loss_mask"].sum() < row["valid"].sum() // 2  # only the answers, not the scene and questions
  with pytest.raises(ValueError, match="text_qa_turns"):
    sources.shapes(records, text_qa_turns=-1)


def test_context_turns_are_in_the_row_but_not_supervised(tok, builder, records):
  rec = records[0]
  q, a = rec["qa"]["question"][0], rec["qa"]["answer"][0]
  row = builder.conversation(None, [(q, "circle", False), (q, a)])
  supervised = tok.decode(row["targets"][row["text_loss_mask"]].tolist(), skip_special_tokens=False)
  assert supervised == " " + a + tok.eos_token
  assert "circle" in tok.decode(row["input_ids"][row["valid"]].tolist())  # the context answer is still there


def test_letter_drill_rows_ask_for_the_letter_of_a_given_answer(tok, builder, records):
  """Text rows of `text_letter_drill`: a multiple-choice question of the record asked open and answered with the
  right option (context), then asked with its options in a fresh order; the only loss is the letter and EOS."""
  adapter = sources.shapes(records, text_letter_drill=True)
  rng, letters = np.random.default_rng(0), collections.Counter()
  for rec in records[:20]:
    ((open_q, answer, supervised), (lettered, letter)), = adapter.makers["text"](rec, rng)
    assert supervised is False and lettered.startswith(open_q + "\n")
    mc = [i for i, c in enumerate(rec["qa"]["choices"]) if c]
    originals = {rec["qa"]["question"][i].split("\n")[0]: i for i in mc}
    i = originals[open_q]
    options = rec["qa"]["choices"][i].split("\n")
    assert answer == options[ord(rec["qa"]["answer"][i]) - ord("A")]  # the record's right option
    shown = [line[3:] for line in lettered.split("\n")[1:-1]]
    assert sorted(shown) == sorted(options) and shown[ord(letter) - ord("A")] == answer
    letters[letter] += 1
  assert len(letters) >= 3  # options are re-shuffled, so the right letter varies
  row = pipeline._MakeRow(adapter, builder, "text").random_map(records[0], np.random.default_rng(1))  # pylint: disable=protected-access
  targets = tok.decode(row["targets"][row["text_loss_mask"]].tolist(), skip_special_tokens=False)
  assert len(targets.strip()) == 1 + len(tok.eos_token) and targets.strip()[0] in "ABCD"
  with pytest.raises(ValueError, match="text_letter_drill and text_qa_turns"):
    sources.shapes(records, text_letter_drill=True, text_qa_turns=1)
  no_choices = dict(records[0], qa={k: v for k, v in records[0]["qa"].items() if k != "choices"})
  with pytest.raises(ValueError, match="needs Shapes records with multiple-choice questions"):
    adapter.makers["text"](no_choices, rng)


def test_mixture_without_text_to_image_carries_no_generation_images(builder, records):
  adapter = sources.shapes(records, text_letter_drill=True)
  for packing in (None, PACK):
    batch = next(pipeline.build_train_iterator([adapter], builder, {"text": 1, "und": 1}, batch_size=4,
                                               packing=packing))
    assert "gen_pixels" not in batch and "has_gen_image" not in batch
    check_batch(batch)


def test_text_to_image_row_layout(tok, builder, records):
  row = builder.text_to_image(records[1]["image"], records[1]["caption"])
  sp = tok.special_ids()
  p = int(np.argmax(row["input_ids"] == sp.begin_of_image)) + 1  # prompt length incl. <begin_of_image>
  assert row["gen_image_mask"].sum() == row["image_loss_mask"].sum() == 16
  assert np.flatnonzero(row["image_loss_mask"])[0] == p - 1          # <begin_of_image> predicts code 0
  assert np.flatnonzero(row["gen_image_mask"])[0] == p
  assert not row["text_loss_mask"].any()
  drop = np.flatnonzero(row["cfg_drop_mask"])
  assert drop[0] == 1 and drop[-1] == p - 2                            # BOS and <begin_of_image> kept
  assert row["has_gen_image"] and row["gen_pixels"].shape == (16, 16, 3)
  assert row["gen_pixels"].min() >= -1 and row["gen_pixels"].max() <= 1


def test_too_long_row_is_explained(tok, records):
  short = RowBuilder(tok, RowSpec(seq_len=20, num_image_tokens=16, und_image_size=32, gen_image_size=16))
  with pytest.raises(ValueError, match="seq_len is 20"):
    short.understanding(records[0]["image"], "what colour is the circle?", "red")


def test_mixture_ratios_and_batch_format(builder, records):
  it = pipeline.build_train_iterator([sources.shapes(records)], builder, {"und": 5, "text": 1, "t2i": 4},
                                     batch_size=10, seed=0)
  counts = collections.Counter()
  for _ in range(30):
    batch = next(it)
    counts.update(batch["kind"].tolist())
  total = sum(counts.values())
  assert abs(counts[0] / total - 0.5) < 0.03 and abs(counts[1] / total - 0.4) < 0.03
  assert abs(counts[2] / total - 0.1) < 0.03
  check_batch({k: v for k, v in batch.items() if k != "kind"}, 10, SEQ)


def test_deterministic_and_resumable(builder, records):
  make = lambda: pipeline.build_train_iterator([sources.shapes(records)], builder, {"und": 1, "t2i": 1},
                                               batch_size=4, seed=3)
  a, b = make(), make()
  first = [next(a) for _ in range(3)]
  for x in first:
    np.testing.assert_array_equal(x["input_ids"], next(b)["input_ids"])
  state = a.get_state()
  expected = [next(a) for _ in range(3)]
  resumed = make()
  resumed.set_state(json.loads(json.dumps(state)))  # the state survives serialisation
  for x in expected:
    y = next(resumed)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  other_seed = pipeline.build_train_iterator([sources.shapes(records)], builder, {"und": 1, "t2i": 1},
                                             batch_size=4, seed=4)
  assert not np.array_equal(next(other_seed)["input_ids"], first[0]["input_ids"])


def test_multi_process_shares_make_the_single_process_batch(builder, records):
  """Process i builds rows [4i, 4i+4) of every global batch of 8: disjoint shares that together are, in order, what
  one process reads; the iterator state is the same position on every process (so it moves between counts)."""
  rows, states = {}, {}
  for pid in range(2):
    it = pipeline.build_train_iterator([sources.shapes(records)], builder, {"t2i": 1, "und": 1}, batch_size=4,
                                       seed=0, process_index=pid, process_count=2)
    rows[pid] = [next(it) for _ in range(3)]
    states[pid] = it.get_state()
  single = pipeline.build_train_iterator([sources.shapes(records)], builder, {"t2i": 1, "und": 1}, batch_size=8,
                                         seed=0)
  for step in range(3):
    ref = next(single)
    for key in ("input_ids", "gen_pixels", "und_pixels", "targets"):
      np.testing.assert_array_equal(np.concatenate([rows[0][step][key], rows[1][step][key]]), ref[key])
    assert not np.array_equal(rows[0][step]["input_ids"], rows[1][step]["input_ids"])
  assert states[0] == states[1] == single.get_state()
  with pytest.raises(ValueError, match="not in 0..1"):
    pipeline.build_train_dataset([sources.shapes(records)], builder, {"t2i": 1}, batch_size=4, process_index=2,
                                 process_count=2)


def test_bad_mixtures(builder, records):
  with pytest.raises(ValueError, match="Unknown mixture kind"):
    pipeline.build_train_dataset([sources.shapes(records)], builder, {"gen": 1}, batch_size=2)
  with pytest.raises(ValueError, match="no positive weight"):
    pipeline.build_train_dataset([sources.shapes(records)], builder, {"und": 0}, batch_size=2)


def test_pairs_array_record_roundtrip(builder, tmp_path):
  lines = []
  for i in range(3):
    Image.fromarray(np.full((12 + i, 20, 3), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
    lines.append(json.dumps({"image": f"{i}.png", "text": f"picture number {i}"}))
  (tmp_path / "pairs.jsonl").write_text("\n".join(lines))
  n = sources.write_pairs(str(tmp_path / "pairs.jsonl"), str(tmp_path / "pairs.array_record"))
  assert n == 3
  adapter = sources.adapter_from_config({"kind": "pairs", "paths": str(tmp_path / "pairs.array_record")})
  rec = adapter.source[2]
  assert rec["text"] == "picture number 2" and sources._image(rec["image"]).shape == (14, 20, 3)
  it = pipeline.build_train_iterator([adapter], builder, {"t2i": 1, "und": 1}, batch_size=2)
  assert next(it)["input_ids"].shape == (2, SEQ)
  (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "missing.png", "text": "x"}))
  with pytest.raises(ValueError, match="missing.png"):
    sources.write_pairs(str(tmp_path / "bad.jsonl"), str(tmp_path / "bad.array_record"))


def test_pairs_with_questions_make_only_understanding_rows(builder, tmp_path):
  """Caption rows feed every kind; question-answer rows only understanding (they have no caption to draw)."""
  lines = []
  for i in range(4):
    Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8)).save(tmp_path / f"{i}.png")
    row = {"image": f"{i}.png", "text": f"picture {i}"} if i < 2 else {
        "image": f"{i}.png", "question": f"what is {i}?", "answer": f"number {i}"}
    lines.append(json.dumps(row))
  (tmp_path / "rows.jsonl").write_text("\n".join(lines))
  assert sources.write_pairs(str(tmp_path / "rows.jsonl"), str(tmp_path / "rows.arrayrecord")) == 4
  adapter = sources.adapter_from_config({"kind": "pairs", "paths": str(tmp_path / "rows.arrayrecord")})
  assert [r["text"] for r in adapter.records_for("t2i")] == ["picture 0", "picture 1"]
  assert len(adapter.records_for("und")) == 4 and adapter.supports("text")
  batch = next(pipeline.build_train_iterator([adapter], builder, {"t2i": 1, "und": 1}, batch_size=4))
  assert batch["input_ids"].shape == (4, SEQ)
  (tmp_path / "half.jsonl").write_text(json.dumps({"image": "0.png", "question": "q?"}))
  with pytest.raises(ValueError, match=r"half.jsonl:1: 'question' and 'answer' go together"):
    sources.write_pairs(str(tmp_path / "half.jsonl"), str(tmp_path / "half.arrayrecord"))
  (tmp_path / "none.jsonl").write_text(json.dumps({"image": "0.png"}))
  with pytest.raises(ValueError, match="caption"):
    sources.write_pairs(str(tmp_path / "none.jsonl"), str(tmp_path / "none.arrayrecord"))


@pytest.mark.parametrize("name", ["coco_captions", "imagenet2012"])
def test_tfds_real_data_adapters_on_mock_data(builder, name):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    adapter = sources.adapter_from_config({"kind": name, "split": "train"})
    it = pipeline.build_train_iterator([adapter], builder, {"t2i": 1}, batch_size=2)
    batch = next(it)
  assert batch["has_gen_image"].all() and batch["gen_pixels"].shape == (2, 16, 16, 3)


def test_shapes_tfds_source_through_the_pipeline(builder, tmp_path):
  from janus_jax.data.shapes_tfds import prepare_shapes
  prepare_shapes(str(tmp_path), config_name="tiny")
  adapter = sources.adapter_from_config({"kind": "shapes", "tfds_name": "janus_shapes/tiny",
                                         "data_dir": str(tmp_path), "split": "train"})
  it = pipeline.build_train_iterator([adapter], builder, {"und": 1, "text": 1, "t2i": 1}, batch_size=6)
  batch = next(it)
  assert sorted(batch["kind"].tolist()) == [0, 0, 1, 1, 2, 2]
  with pytest.raises(FileNotFoundError, match="not prepared"):
    sources.adapter_from_config({"kind": "shapes", "tfds_name": "janus_shapes/default",
                                 "data_dir": str(tmp_path / "empty")})


# --- packing ----------------------------------------------------------------------------------------------------
MIX = {"und": 2, "text": 1, "t2i": 2}
PACK = dict(enabled=True, max_und_images=2)


def _plain(builder, records, batch_size):
  return pipeline.build_train_iterator([sources.shapes(records)], builder, MIX, batch_size=batch_size, seed=2)


def _packed(builder, records, batch_size=4):
  return pipeline.build_train_iterator([sources.shapes(records)], builder, MIX, batch_size=batch_size, seed=2,
                                       packing=PACK)


def _segments(batch, r):
  """Packed row r -> its segments in position order: token arrays + the understanding / generation image."""
  seg, und_k, out = batch["segment_ids"][r], 0, []
  for s in range(1, seg.max() + 1):
    where = seg == s
    assert where.any() and np.all(np.diff(np.flatnonzero(where)) == 1)  # contiguous
    tokens = {k: batch[k][r][where] for k in pipeline.TOKEN_KEYS}
    und = None
    if tokens["und_image_mask"].any():
      und, und_k = batch["und_pixels"][r, und_k], und_k + 1
    gen = batch["gen_pixels"][r] if tokens["gen_image_mask"].any() else None
    out.append((tokens, und, gen))
  assert not batch["valid"][r][seg == 0].any()
  assert bool(batch["has_gen_image"][r]) == any(g is not None for *_, g in out)
  return out


def _cut(batch, r):
  n = int(batch["valid"][r].sum())
  und = batch["und_pixels"][r, 0] if batch["und_image_mask"][r].any() else None
  gen = batch["gen_pixels"][r] if batch["has_gen_image"][r] else None
  return {k: batch[k][r][:n] for k in pipeline.TOKEN_KEYS}, und, gen


def test_packing_keeps_every_row_with_its_images(builder, records):
  """Three packed batches hold exactly the stream's first M rows (first-fit emits whole groups), each segment
  equal to its unpacked row, with restarted positions, its own images and the per-row image limits."""
  packed = _packed(builder, records)
  got = [s for _ in range(3) for batch in [next(packed)] for r in range(4) for s in _segments(batch, r)]
  plain = next(_plain(builder, records, len(got)))
  want = [_cut(plain, r) for r in range(len(got))]
  assert len(got) > 2 * 12, "rows should pack about 3 to a 200-token sequence"
  key = lambda s: s[0]["input_ids"].tobytes() + s[0]["targets"].tobytes()
  for (tg, ug, gg), (tw, uw, gw) in zip(sorted(got, key=key), sorted(want, key=key)):
    for k in pipeline.TOKEN_KEYS:
      np.testing.assert_array_equal(tg[k], tw[k])
    np.testing.assert_array_equal(tg["positions"], np.arange(len(tg["positions"])))
    for a, b in ((ug, uw), (gg, gw)):
      assert (a is None) == (b is None)
      if a is not None:
        np.testing.assert_array_equal(a, b)
  batch = next(packed)
  assert batch["input_ids"].shape == (4, SEQ) and batch["und_pixels"].shape == (4, 2, 32, 32, 3)
  check_batch(batch, 4, SEQ)
  assert (batch["und_image_mask"].sum(1) <= 2 * 16).all() and (batch["gen_image_mask"].sum(1) <= 16).all()


def test_packed_iterator_resumes_exactly(builder, records):
  a = _packed(builder, records)
  for _ in range(2):
    next(a)
  state = json.loads(json.dumps(a.get_state()))
  expected = [next(a) for _ in range(3)]
  resumed = _packed(builder, records)
  resumed.set_state(state)
  for x in expected:
    y = next(resumed)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  with pytest.raises(ValueError, match="max_und_images"):
    pipeline.build_train_dataset([sources.shapes(records)], builder, MIX, batch_size=2,
                                 packing=dict(max_und_images=0))
  with pytest.raises(ValueError, match="Unknown input.packing"):
    pipeline.build_train_dataset([sources.shapes(records)], builder, MIX, batch_size=2, packing=dict(bins=3))
  plain = pipeline.build_train_iterator([sources.shapes(records)], builder, MIX, batch_size=2,
                                        packing=dict(enabled=False, max_und_images=2))
  assert "segment_ids" not in next(plain)


def test_packed_batch_has_the_loss_of_its_rows_unpacked(builder, records):
  """The model sees a packed row as its separate rows: same text and image CE sums (SigLIP features, VQ codes
  and attention all stay inside their segment)."""
  import jax
  from janus_jax.configs import models
  from janus_jax.models.configs import JanusConfig
  from janus_jax.models.janus import JanusModel, init_params
  from janus_jax.train import losses
  from janus_jax.train import step as step_lib
  cfg = JanusConfig.from_dict(models.janus_tiny())
  model, params = JanusModel(cfg), init_params(cfg, jax.random.PRNGKey(0))
  packed = next(_packed(builder, records))
  m = int(packed["segment_ids"].max(1).sum())
  plain = {k: v for k, v in next(_plain(builder, records, m)).items() if k != "kind"}

  def sums(batch):
    b = step_lib.prepare_batch(model, params, batch, jax.random.PRNGKey(0), dict(cfg_dropout=0.0, pad_id=0))
    return model.apply({"params": params}, b, method=losses.loss_sums)

  p, u = sums(packed), sums(plain)
  assert float(p.text_tokens) == float(u.text_tokens) > 0 and float(p.image_tokens) == float(u.image_tokens) > 0
  assert abs(float(p.text_loss) - float(u.text_loss)) < 1e-4 * max(1.0, float(u.text_loss))
  assert abs(float(p.image_loss) - float(u.image_loss)) < 1e-4 * max(1.0, float(u.image_loss))


@pytest.mark.parametrize("packing", [None, PACK])
@pytest.mark.parametrize("mixture", [MIX, {"und": 1, "text": 1}])
def test_batch_spec_is_the_shape_of_the_real_batches(builder, records, packing, mixture):
  """What ahead-of-time compilation (janus-jax plan) assumes is what the pipeline yields."""
  adapter = sources.shapes(records, text_letter_drill=True)
  batch = next(pipeline.build_train_iterator([adapter], builder, mixture, batch_size=4, packing=packing))
  real = {k: (v.shape, v.dtype) for k, v in batch.items() if k != "kind"}
  assert pipeline.batch_spec(builder.spec, mixture, batch_size=4, packing=packing) == real


@pytest.mark.parametrize("packing", [None, PACK])
def test_worker_processes_and_prefetch_give_the_same_batches_and_resume_exactly(builder, records, packing):
  """Rows made in 2 grain worker processes, batches prefetched by a thread: the batches of the plain pipeline,
  and an iterator restored from a saved state continues with exactly the batches that followed it."""
  make = lambda **kw: pipeline.build_train_iterator([sources.shapes(records)], builder, MIX, batch_size=4, seed=2,
                                                    packing=packing, **kw)
  plain = [next(it) for it in [make()] for _ in range(5)]
  it = make(workers=2, prefetch=2)
  fast = [next(it) for _ in range(3)]
  state = it.get_state()
  fast += [next(it) for _ in range(2)]
  resumed = make(workers=2, prefetch=2)
  resumed.set_state(state)
  for a, b in zip(plain, fast):
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  for a, b in zip(fast[3:], [next(resumed) for _ in range(2)]):
    assert all(np.array_equal(a[k], b[k]) for k in a)
  with pytest.raises(ValueError, match="input.workers=-1"):
    make(workers=-1)


@pytest.mark.parametrize("packing", [None, PACK])
def test_read_threads_give_the_same_batches_and_states_restore_across_them(builder, records, packing):
  """Rows read ahead by 4 threads (grain's thread pool) or in order on the iterating thread (read_threads=0, the
  demo's): the same batches, and a state saved with threads (as grain's default of 16 did) restores without."""
  make = lambda **kw: pipeline.build_train_iterator([sources.shapes(records)], builder, MIX, batch_size=4, seed=3,
                                                    packing=packing, **kw)
  inline, threaded = make(read_threads=0), make(read_threads=4)
  a = [next(inline) for _ in range(4)]
  b = [next(threaded) for _ in range(2)]
  state = threaded.get_state()
  resumed = make(read_threads=0)
  resumed.set_state(state)
  b += [next(resumed) for _ in range(2)]
  for x, y in zip(a, b):
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
  with pytest.raises(ValueError, match="input.read_threads=-1"):
    make(read_threads=-1)
