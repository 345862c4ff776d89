"""Local or remote paths: `paths.resolve`, no local-only file calls in the path-taking modules, convert -> load with
`epath.Path` arguments, and tokenizer / config / image / JSONL / safetensors reads from a mocked `gs://` bucket."""
from __future__ import annotations

import ast
import json
import os
import pathlib

import numpy as np
import pytest
from etils import epath
from etils.epath import gpath, testing as epath_testing

from janus_jax import paths

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------- paths.resolve


def test_resolve_remote_home_relative(monkeypatch, tmp_path):
  for url in ("gs://bucket/runs/x", "s3://b/k", "gs://bucket"):
    assert paths.is_remote(url) and os.fspath(paths.resolve(url)) == url
    assert isinstance(paths.resolve(url), epath.Path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert os.fspath(paths.resolve("~/runs/x")) == str(tmp_path / "home" / "runs" / "x")
  monkeypatch.chdir(tmp_path)
  assert os.fspath(paths.resolve("runs/../x")) == str(tmp_path / "x")
  assert not paths.is_remote("runs/x") and not paths.is_remote("/abs/gs://x")
  assert paths.resolve(epath.Path(tmp_path)) == epath.Path(tmp_path)
  assert paths.join("gs://b/run", "eval", "e.json") == "gs://b/run/eval/e.json"
  assert paths.join(tmp_path, "a") == str(tmp_path / "a")


# ----------------------------------------------------------------------------------------------- source scan

SCANNED = sorted(
    [p for p in (ROOT / "janus_jax" / "checkpoint").glob("*.py")] +
    [p for p in (ROOT / "janus_jax" / "evals").glob("*.py")] +
    [p for p in (ROOT / "janus_jax" / "train").glob("*.py")] +
    [ROOT / "janus_jax" / f for f in ("processing/tokenizer.py", "processing/image.py", "data/sources.py",
                                      "data/prepare.py", "data/pipeline.py", "api.py", "cli.py", "main.py")])
_LOCAL_MODULES = ("glob", "shutil", "pathlib")
_OS_FILE_CALLS = ("listdir", "makedirs", "mkdir", "remove", "rename", "replace", "rmdir", "scandir", "stat", "unlink",
                  "walk")
# (file, source text of the flagged expression) -> why it is not a user path.
ALLOWED = {
    ("janus_jax/processing/tokenizer.py", "open(os.devnull, 'w')"):
        "sentencepiece's trainer logs to an OS file descriptor; os.devnull is no user path",
    ("janus_jax/data/sources.py", "Image.open(io.BytesIO(bytes(x)))"):
        "decodes image bytes already in memory (a caller-provided file object), no path",
    ("janus_jax/processing/image.py", "Image.open(f)"):
        "decodes the file object epath opened (local or remote)",
}


def _local_file_calls(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, source) of each `open(...)`, `Image.open(...)`, `os.path`, `os.<file op>` and glob / shutil / pathlib use
  in one module."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
      found.append(node)
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open"
          and isinstance(node.func.value, ast.Name) and node.func.value.id == "Image"):
      found.append(node)
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" and (
        node.attr == "path" or node.attr in _OS_FILE_CALLS):
      found.append(node)
    elif isinstance(node, ast.Name) and node.id in _LOCAL_MODULES:
      found.append(node)
    elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in _LOCAL_MODULES for a in node.names):
      found.append(node)
    elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _LOCAL_MODULES:
      found.append(node)
  return sorted((n.lineno, ast.unparse(n)) for n in found)


def test_no_local_only_file_calls():
  """Every file operation on a user path goes through `paths.resolve` + epath, so gs:// works everywhere."""
  assert len(SCANNED) >= 17 and all(p.is_file() for p in SCANNED)
  bad, used = [], set()
  for path in SCANNED:
    rel = path.relative_to(ROOT).as_posix()
    for line, expr in _local_file_calls(path):
      if (rel, expr) in ALLOWED:
        used.add((rel, expr))
      else:
        bad.append(f"{rel}:{line}: {expr}")
  assert not bad, ("local-only file calls (use janus_jax.paths.resolve(p) and epath.Path methods, or add an "
                   f"ALLOWED entry with the reason): {bad}")
  assert used == set(ALLOWED), f"stale ALLOWED entries: {set(ALLOWED) - used}"


# ----------------------------------------------------------------------------------------------- epath.Path arguments


def test_convert_and_load_with_epath_paths(tmp_path):
  """convert -> store -> janus_jax.load with every path an `epath.Path`: the same params as with str paths."""
  pytest.importorskip("transformers")
  import janus_jax
  from janus_jax.checkpoint import store
  from janus_jax.checkpoint.convert import convert
  from janus_jax.checkpoint.mapping import flatten
  from tiny_assets import make_tiny_tokenizer
  from torch_reference import TINY_JANUS, build_tiny_hf_janus
  from janus_jax.models.configs import JanusConfig

  src = tmp_path / "hf"
  build_tiny_hf_janus(seed=1).save_pretrained(src)
  make_tiny_tokenizer(str(src))
  out = convert(epath.Path(src), epath.Path(tmp_path / "out"), progress=False)
  assert isinstance(out, epath.Path) and store.is_checkpoint(epath.Path(out))
  ref = convert(str(src), str(tmp_path / "ref"), progress=False)
  a, cfg = store.load_checkpoint(epath.Path(out))
  b, _ = store.load_checkpoint(str(ref))
  assert cfg == JanusConfig.from_dict(TINY_JANUS)
  fa, fb = flatten(a), flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    assert np.array_equal(np.asarray(fa[k]).view(np.uint8), np.asarray(fb[k]).view(np.uint8)), k
  info = store.load_info(epath.Path(out))
  assert info["source"] == str(src) and "tokenizer.json" in info["tokenizer_files"]
  assert sorted(p.name for p in store.tokenizer_path(epath.Path(out)).iterdir()) == sorted(info["tokenizer_files"])
  pipe = janus_jax.load(epath.Path(out))
  assert pipe.tokenizer.bos_id == 1 and pipe.cfg.llm.hidden_size == cfg.llm.hidden_size
  with pytest.raises(FileExistsError, match="overwrite"):
    convert(epath.Path(src), out, progress=False)


# ----------------------------------------------------------------------------------------------- mocked gs://


class _NoReadinto:
  """A read-only file object without `readinto`, like `tf.io.gfile.GFile`."""

  def __init__(self, f):
    self._f = f

  def __getattr__(self, name):
    if name == "readinto":
      raise AttributeError(name)
    return getattr(self._f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self._f.close()


@pytest.fixture
def gcs(tmp_path, monkeypatch):
  """`gs://` served from tmp_path/'gcs' (etils.epath.testing.mock_epath); yields (local root, set_no_readinto)."""
  root = tmp_path / "gcs"
  root.mkdir()
  # With TensorFlow installed epath sends gs:// to its tf backend, which mock_epath does not replace (etils 1.15;
  # the check is cached, so EPATH_USE_TF=false set now would come too late).
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  state = {"no_readinto": False}

  def local(p):
    p = os.fspath(p)
    return str(root / p[len("gs://"):]) if p.startswith("gs://") else p

  def remote(p):
    p = os.fspath(p)
    return "gs://" + p[len(str(root)) + 1:] if p.startswith(str(root) + os.sep) else p

  def one(fn, p, *args, **kwargs):
    return fn(local(p), *args, **kwargs)

  def two(fn, p, q, *args, **kwargs):
    return fn(local(p), local(q), *args, **kwargs)

  def open_(fn, p, mode, *args, **kwargs):
    f = fn(local(p), mode, *args, **kwargs)
    return _NoReadinto(f) if state["no_readinto"] and "b" in mode and "r" in mode else f

  def glob(fn, p):
    found = fn(local(p))
    return [remote(x) for x in found] if os.fspath(p).startswith("gs://") else found

  def walk(fn, p, **kwargs):
    for d, dirs, files in fn(local(p), **kwargs):
      yield (remote(d) if os.fspath(p).startswith("gs://") else d), dirs, files

  with epath_testing.mock_epath(open=open_, copy=two, rename=two, replace=two, exists=one, isdir=one, listdir=one,
                                makedirs=one, mkdir=one, remove=one, rmtree=one, stat=one, glob=glob, walk=walk):
    yield root, lambda on: state.update(no_readinto=on)


def test_mocked_gcs_is_remote(gcs):
  root, _ = gcs
  p = paths.resolve("gs://bucket/a/b.txt")
  p.parent.mkdir(parents=True)
  p.write_text("x")
  assert (root / "bucket" / "a" / "b.txt").read_text() == "x"
  assert [q.name for q in paths.resolve("gs://bucket/a").glob("*.txt")] == ["b.txt"]


def test_tokenizers_from_gcs(gcs):
  from janus_jax.processing import tokenizer as T
  from tiny_assets import CORPUS, make_tiny_tokenizer
  root, _ = gcs
  make_tiny_tokenizer(str(root / "bucket" / "hf"))
  local = T.load_tokenizer(root / "bucket" / "hf")
  remote = T.load_tokenizer("gs://bucket/hf")
  assert isinstance(remote, T.HFTokenizer) and remote.path == "gs://bucket/hf/tokenizer.json"
  text = "a red circle left of a blue square"
  assert remote.encode(text) == local.encode(text) and remote.special_ids() == local.special_ids()
  # A SentencePiece model trained straight into the bucket, then loaded from it.
  model = T.train_sentencepiece(CORPUS * 10, "gs://bucket/sp/tiny", vocab_size=320)
  assert model == "gs://bucket/sp/tiny.model" and (root / "bucket" / "sp" / "tiny.model").is_file()
  sp = T.load_tokenizer("gs://bucket/sp")
  assert isinstance(sp, T.SentencePieceTokenizer)
  assert sp.encode(text) == T.load_tokenizer(root / "bucket" / "sp" / "tiny.model").encode(text)
  assert sp.decode(sp.encode(text)) == text
  with pytest.raises(FileNotFoundError, match="gs://bucket/nope"):
    T.load_tokenizer("gs://bucket/nope")


def test_configs_and_checkpoint_metadata_from_gcs(gcs):
  from janus_jax.checkpoint import store
  from janus_jax.checkpoint.config_json import load_janus_config, write_deepseek_config
  from janus_jax.configs import models
  from janus_jax.models.configs import JanusConfig
  from tiny_assets import make_tiny_tokenizer
  root, _ = gcs
  cfg = JanusConfig.from_dict(models.janus_tiny())
  written = write_deepseek_config(cfg, "gs://bucket/hf")
  assert os.fspath(written) == "gs://bucket/hf/config.json" and (root / "bucket" / "hf" / "config.json").is_file()
  back, info = load_janus_config("gs://bucket/hf")
  assert back == cfg and info["layout"] == "deepseek"
  # A janus_jax checkpoint (orbax params written locally: tensorstore's gs driver is not mocked), read through gs://.
  tok = make_tiny_tokenizer(str(root / "tok"))
  store.save_checkpoint(root / "bucket" / "ck", {"w": np.ones((2, 3), np.float32)}, cfg, tokenizer_dir=tok,
                        extra_info={"template": "deepseek_old"})
  assert store.is_checkpoint("gs://bucket/ck")
  assert store.load_config("gs://bucket/ck") == cfg
  assert store.load_info("gs://bucket/ck")["template"] == "deepseek_old"
  assert os.fspath(store.tokenizer_path("gs://bucket/ck")) == "gs://bucket/ck/tokenizer"
  names = store.copy_tokenizer_files("gs://bucket/ck/tokenizer", "gs://bucket/copy")
  assert sorted(names) == sorted(os.listdir(root / "bucket" / "copy")) == ["special_tokens_map.json", "tokenizer.json"]
  with pytest.raises(store.NotAJanusCheckpointError, match="janus-jax convert"):
    store.load_config("gs://bucket/hf")


@pytest.mark.parametrize("readinto", [True, False], ids=["readinto", "read"])
def test_safetensors_from_gcs(gcs, readinto):
  from safetensors.numpy import save_file
  from janus_jax.checkpoint import reader
  root, no_readinto = gcs
  rng = np.random.default_rng(0)
  state = {"a.weight": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(5, dtype=np.int64),
           "empty": np.zeros((0, 2), np.float32)}
  (root / "bucket" / "st").mkdir(parents=True)
  save_file(state, str(root / "bucket" / "st" / reader.SAFETENSORS))
  no_readinto(not readinto)
  got = reader.read_state_dict("gs://bucket/st")
  lazy = reader.open_state_dict("gs://bucket/st")
  assert sorted(got) == sorted(lazy) == sorted(state)
  for k, v in state.items():
    assert got[k].dtype == v.dtype and np.array_equal(got[k], v) and np.array_equal(np.asarray(lazy[k]), v)
  (root / "bucket" / "bin").mkdir()
  (root / "bucket" / "bin" / reader.PYTORCH).write_bytes(b"PK\x03\x04")
  with pytest.raises(reader.CheckpointReadError, match="local files only"):
    reader.read_state_dict("gs://bucket/bin")


def test_image_and_pairs_from_gcs(gcs, tmp_path):
  from PIL import Image
  from janus_jax.data.sources import PairsSource, write_pairs
  from janus_jax.processing.image import load_image
  root, _ = gcs
  (root / "bucket" / "img").mkdir(parents=True)
  pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(root / "bucket" / "img" / "a.png")
  assert np.array_equal(np.asarray(load_image("gs://bucket/img/a.png")), pixels)
  with pytest.raises(FileNotFoundError, match="gs://bucket/img/b.png"):
    load_image("gs://bucket/img/b.png")
  rows = [{"image": "img/a.png", "text": "noise"}, {"image": "gs://bucket/img/a.png", "question": "q?", "answer": "a"}]
  (root / "bucket" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "pairs.arrayrecord"
  assert write_pairs("gs://bucket/rows.jsonl", str(out)) == 2
  src = PairsSource(str(out))
  assert len(src) == 2 and src.kinds["und"] == [0, 1] and src.kinds["t2i"] == [0]
  assert src[1]["image"] == (root / "bucket" / "img" / "a.png").read_bytes()
  (root / "bucket" / "bad.jsonl").write_text(json.dumps({"image": "img/missing.png", "text": "x"}) + "\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:1: cannot read image gs://bucket/img/missing.png"):
    write_pairs("gs://bucket/bad.jsonl", str(tmp_path / "bad.arrayrecord"))
  assert not (tmp_path / "bad.arrayrecord").exists()


def test_convert_from_gcs(gcs, tmp_path):
  """`janus-jax convert --from gs://...`: config, safetensors shards and tokenizer files all read through epath."""
  pytest.importorskip("transformers")
  from janus_jax.checkpoint import store
  from janus_jax.checkpoint.convert import convert
  from tiny_assets import make_tiny_tokenizer
  from torch_reference import TINY_JANUS, build_tiny_hf_janus
  from janus_jax.models.configs import JanusConfig
  root, _ = gcs
  build_tiny_hf_janus(seed=2).save_pretrained(root / "bucket" / "hf", max_shard_size="200KB")
  make_tiny_tokenizer(str(root / "bucket" / "hf"))
  assert len(list((root / "bucket" / "hf").glob("model-*.safetensors"))) > 1
  out = convert("gs://bucket/hf", tmp_path / "out", progress=False)
  params, cfg = store.load_checkpoint(out)
  assert cfg == JanusConfig.from_dict(TINY_JANUS)
  info = store.load_info(out)
  assert info["source"] == "gs://bucket/hf" and sorted(info["tokenizer_files"]) == ["special_tokens_map.json",
                                                                                    "tokenizer.json"]
  assert params["language_model"]["lm_head"]["kernel"].shape == (cfg.llm.hidden_size, cfg.llm.vocab_size)
