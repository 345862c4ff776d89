r"""Peak resident memory of `janus-jax convert` against the size of the checkpoint it converts.

Builds (once, into --workdir) a transformers-layout Janus-Pro with a scaled-up-but-small random config (LLM 1024 x
4 layers, vocab 16384: ~85 M params, ~340 MB as float32 safetensors in shards of --max-shard-size), or takes an
existing checkpoint directory with --src, then runs `python -m janus_jax.cli convert` in a subprocess and prints
the checkpoint's size on disk, the output's size, the converter's peak RSS (its `ru_maxrss`, via `os.wait4`), the RSS
of a process that only imports the converter (jax, orbax, ...), and the ratios.

  python bench/convert_rss.py                                   # build ./workdir/bench_convert/src once, convert it
  python bench/convert_rss.py --src /ckpts/Janus-Pro-1B --dtype bfloat16
  python bench/convert_rss.py --layers 8 --source-dtype bfloat16  # another synthetic checkpoint (rebuilt)

Building needs torch + transformers (the `[dev]` extra); converting a --src checkpoint does not.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HIDDEN, INTER, HEADS, VOCAB = 1024, 2816, 16, 16384


def hf_config(layers: int) -> dict:
  """transformers `JanusConfig` kwargs: the LLM carries the bulk; vision tower and VQ stay small."""
  return dict(
      text_config=dict(model_type="llama", vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER,
                       num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                       max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                       tie_word_embeddings=False),
      vision_config=dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=16,
                         num_image_tokens=16, projection_dim=HIDDEN, mlp_ratio=4.0),
      vq_config=dict(embed_dim=8, num_embeddings=4096, latent_channels=64, base_channels=64,
                     channel_multiplier=[1, 1, 2], num_res_blocks=1, projection_dim=HIDDEN,
                     image_token_embed_dim=HIDDEN),
      image_token_id=5, tie_word_embeddings=False)


def build(directory: str, layers: int, source_dtype: str, max_shard_size: str) -> None:
  """Writes a random transformers Janus checkpoint (config.json + safetensors shards) to `directory`."""
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import JanusConfig, JanusForConditionalGeneration  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  model = JanusForConditionalGeneration(JanusConfig(**hf_config(layers))).eval().to(getattr(torch, source_dtype))
  model.save_pretrained(directory, max_shard_size=max_shard_size)
  with open(os.path.join(directory, "bench_build.json"), "w") as f:
    json.dump(dict(layers=layers, source_dtype=source_dtype, max_shard_size=max_shard_size), f)


def du(path: str) -> int:
  """Bytes of the files under `path`."""
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def peak_rss(cmd: list[str]) -> tuple[int, float, str]:
  """(peak RSS bytes, wall seconds, stdout) of `cmd` run in a fresh child; `os.wait4` gives that child's own
  rusage (RUSAGE_CHILDREN would be a running maximum over every child this process has waited for)."""
  t = time.perf_counter()
  with tempfile.TemporaryFile("w+") as out:
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)  # pylint: disable=consider-using-with
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    out.seek(0)
    text = out.read()
  if proc.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text}")
  return usage.ru_maxrss * 1024, wall, text  # ru_maxrss is in KiB on Linux.


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--src", default=None, help="an existing checkpoint directory (skips building)")
  ap.add_argument("--workdir", default="workdir/bench_convert")
  ap.add_argument("--layers", type=int, default=4, help="LLM layers of the built checkpoint")
  ap.add_argument("--source-dtype", default="float32", choices=["float32", "bfloat16"])
  ap.add_argument("--max-shard-size", default="100MB", help="safetensors shard size of the built checkpoint")
  ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="convert --dtype")
  ap.add_argument("--build-only", default=None, metavar="DIR", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.build_only:
    build(args.build_only, args.layers, args.source_dtype, args.max_shard_size)
    return
  src = args.src
  if src is None:
    src = os.path.join(args.workdir, "src")
    want = dict(layers=args.layers, source_dtype=args.source_dtype, max_shard_size=args.max_shard_size)
    stamp = os.path.join(src, "bench_build.json")
    if not (os.path.isfile(stamp) and json.load(open(stamp)) == want):  # pylint: disable=consider-using-with
      shutil.rmtree(src, ignore_errors=True)
      t = time.perf_counter()
      # In a child: a forked child's ru_maxrss starts at its parent's RSS, so this process must stay small.
      subprocess.run([sys.executable, os.path.abspath(__file__), "--build-only", src, "--layers", str(args.layers),
                      "--source-dtype", args.source_dtype, "--max-shard-size", args.max_shard_size], check=True)
      print(f"built {src} in {time.perf_counter() - t:.1f} s")
  dst = os.path.join(args.workdir, "converted")
  base, _, _ = peak_rss([sys.executable, "-c", "import jax, orbax.checkpoint, numpy; "
                         "import janus_jax.checkpoint.convert, janus_jax.models.janus; jax.devices()"])
  cmd = [sys.executable, "-m", "janus_jax.cli", "convert", "--from", src, "--to", dst, "--overwrite", "--quiet"]
  if args.dtype:
    cmd += ["--dtype", args.dtype]
  peak, wall, _ = peak_rss(cmd)
  size, out_size = du(src), du(dst)
  with open(os.path.join(dst, "janus_config.json")) as f:
    info = json.load(f)["info"]
  params = info["num_params"] * {"float32": 4, "bfloat16": 2, "float16": 2}[info["dtype"]]
  mb = lambda n: f"{n / 2**20:8.1f} MiB"
  print(f"checkpoint : {src}  {mb(size)} on disk")
  print(f"output     : {dst}  {mb(out_size)} on disk; {info['num_params'] / 1e6:.1f} M params as {info['dtype']} = "
        f"{mb(params)} in memory")
  print(f"import RSS : {mb(base)}  (python + jax + orbax + janus_jax, nothing converted)")
  print(f"peak RSS   : {mb(peak)}  = {peak / size:.2f}x the checkpoint")
  print(f"  above the import RSS: {mb(peak - base)} = {(peak - base) / size:.2f}x the checkpoint, "
        f"{(peak - base) / params:.2f}x the output params; beyond those params: {mb(peak - base - params)}")
  print(f"wall time  : {wall:.1f} s")


if __name__ == "__main__":
  main()
