r"""Sweep reports: the work units of a sweep root -> one table per variant (mean ± 95% CI over seeds) + plots.

  janus-jax report ROOT/NAME            # writes ROOT/NAME/report/{report.md, units.csv, summary.csv, paired.csv,
                                        #   metrics.png, loss.png} and prints the Markdown table
  from janus_jax import report          # in a notebook
  units = report.load_units("ROOT/NAME"); summary = report.summarize(units)
  paired = report.paired_differences(units)   # each variant minus the first, seed by seed

A sweep root is what `launch/sweep.py --root=ROOT --name=NAME` fills: one folder per work unit, `ROOT/NAME/<i>/`,
holding `unit.json` (written by the launcher: {"unit", "variant", "seed", "overrides", "command"}), the main job's
outputs (`eval.json`, `janus/metrics.jsonl`, `samples.png`, `model/`) and, when the local runner ran it, `exit.json`
({"returncode", "seconds"}) and `log.txt`. A unit's status:
  done     eval.json is there (or the unit exited 0: a train-only unit reports its training metrics)
  failed   exit.json has a non-zero return code (the message points at log.txt)
  corrupt  eval.json is not readable (the message says how to redo it)
  running  training metrics but no result yet (the message gives the last step)
  pending  nothing written yet
Every unit is a row, whatever its status; means and intervals use the done units only. An eval.json whose
trained scores have a `cfg_sweep` ({"<weight>": {"generation": {...}}}, from `eval.cfg_weights`) becomes one row per guidance weight,
variant "<variant> · cfg <weight>", so one trained model gives every point of a CFG curve.
"""
from __future__ import annotations

import json
import math
from typing import Any

from janus_jax import paths

UNIT_FILE, EXIT_FILE, EVAL_FILE, LOG_FILE = "unit.json", "exit.json", "eval.json", "log.txt"
TRAIN_DIR = "janus"  # the main job's training workdir inside a unit (metrics.jsonl, TensorBoard, checkpoints)
STATUSES = ("done", "failed", "corrupt", "running", "pending")
# The columns the Markdown summary and the bar plots show first (every metric is in the CSV files).
KEY_METRICS = ("generation/overall", "understanding/overall", "final_loss", "wall_s")
_COUNTS = ("num_images", "num_questions")
_BASE_COLUMNS = ("unit", "variant", "seed", "status", "workdir", "message")


class ReportError(ValueError):
  """A sweep root that cannot be reported; the message names the fix."""


def unit_dirs(root) -> list:
  """The work-unit folders `root/<i>` in index order. Raises ReportError for a root that is not a sweep."""
  root = paths.resolve(root)
  if not root.exists():
    raise ReportError(f"{root} does not exist. Pass the folder of one sweep, ROOT/NAME of `python launch/sweep.py "
                      f"--root=ROOT --name=NAME ...` (each work unit is ROOT/NAME/<i>).")
  if not root.is_dir():
    raise ReportError(f"{root} is a file; pass the sweep folder ROOT/NAME.")
  units = sorted((p for p in root.iterdir() if p.name.isdigit() and p.is_dir()), key=lambda p: int(p.name))
  if not units:
    sweeps = sorted(p.name for p in root.iterdir() if p.is_dir() and any(q.name.isdigit() for q in p.iterdir()))
    hint = (f" It holds the sweeps {sweeps}: pass e.g. {root / sweeps[-1]}." if sweeps else
            " Launch one with `python launch/sweep.py --config=experiments/<x>.py[:arg] --root=ROOT --name=NAME --local`.")
    raise ReportError(f"{root} holds no work units (numbered folders).{hint}")
  return units


def _read_json(path) -> tuple[Any, str | None]:
  """(value, None) or (None, what is wrong with the file)."""
  try:
    return json.loads(path.read_text()), None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    return None, f"{path.name} is not valid JSON ({e})"


def _flat_scores(result: dict) -> dict[str, float]:
  """{'generation': {'colors': .8, 'num_images': 150, ...}, ...} -> {'generation/colors': .8, ...}."""
  out = {}
  for task in ("generation", "understanding"):
    for key, value in (result.get(task) or {}).items():
      if key not in _COUNTS and isinstance(value, (int, float)):
        out[f"{task}/{key}"] = float(value)
  return out


_TOKENIZER_KEYS = ("psnr", "codes_used", "codebook_usage", "scaling_factor")


def _tokenizer_scores(workdir, result: dict | None) -> dict[str, float]:
  """'vq/psnr', 'vq/codes_used', ... (flow: 'vae/...') of the unit's image tokenizer: from eval.json, else from the
  stage's own report (a `--mode=vq` unit)."""
  out = {}
  for part in ("vq", "vae"):
    rep = (result or {}).get(part)
    if rep is None and (workdir / part / "report.json").exists():
      rep = _read_json(workdir / part / "report.json")[0]
    for key in _TOKENIZER_KEYS:
      if isinstance(rep, dict) and isinstance(rep.get(key), (int, float)):
        out[f"{part}/{key}"] = float(rep[key])
  return out


def _final_loss(workdir) -> tuple[float | None, int | None]:
  """(last logged train/loss, its step) from the unit's metrics.jsonl, or (None, None)."""
  from janus_jax.train.metrics import read_metrics  # pylint: disable=import-outside-toplevel
  rows = [r for r in read_metrics(workdir / TRAIN_DIR) if "train/loss" in r]
  return (float(rows[-1]["train/loss"]), int(rows[-1]["step"])) if rows else (None, None)


def _redo_hint(info: dict) -> str:
  cmd = info.get("command")
  if cmd:
    import shlex  # pylint: disable=import-outside-toplevel
    return f"re-evaluate it with `{shlex.join(list(cmd) + ['--mode=eval'])}`, or delete it and rerun the sweep"
  return "delete it and rerun the unit"


def read_unit(workdir) -> list[dict]:
  """The report rows of one unit folder (one row; one per guidance weight when eval.json has a `cfg_sweep`)."""
  workdir = paths.resolve(workdir)
  info, problem = ({}, None)
  if (workdir / UNIT_FILE).exists():
    info, problem = _read_json(workdir / UNIT_FILE)
    info = info or {}
  base = {"unit": int(info.get("unit", workdir.name)), "variant": str(info.get("variant", "")),
          "seed": info.get("seed"), "status": "pending", "workdir": str(workdir), "message": problem or ""}
  loss, step = _final_loss(workdir)
  exit_info = _read_json(workdir / EXIT_FILE)[0] if (workdir / EXIT_FILE).exists() else None
  metrics: dict[str, float] = {}
  if loss is not None:
    metrics["final_loss"] = loss
  metrics.update(_tokenizer_scores(workdir, None))
  if exit_info and exit_info.get("seconds") is not None:
    metrics["wall_s"] = float(exit_info["seconds"])
  result = None
  if (workdir / EVAL_FILE).exists():
    result, problem = _read_json(workdir / EVAL_FILE)
    if problem is None and not isinstance(result, dict):
      result, problem = None, f"{EVAL_FILE} holds {type(result).__name__}, not the main job's summary"
    if problem:
      return [{**base, **metrics, "status": "corrupt", "message": f"{problem}: {_redo_hint(info)}"}]
  if result is not None:
    total = (result.get("timings_seconds") or {}).get("total")
    if total is not None and "wall_s" not in metrics:
      metrics["wall_s"] = float(total)
    trained = result.get("trained") or {}
    metrics.update(_tokenizer_scores(workdir, result))
    done = {**base, **metrics, **_flat_scores(trained), "status": "done"}
    sweep = trained.get("cfg_sweep") or {}
    if not sweep:
      return [done]
    und = {k: v for k, v in done.items() if k.startswith("understanding/")}
    rows = []
    for weight, scores in sorted(sweep.items(), key=lambda kv: float(kv[0])):
      gen = {k: v for k, v in _flat_scores(scores).items() if k.startswith("generation/")}
      label = f"{base['variant']} · cfg {float(weight):g}".lstrip(" ·")
      rows.append({**base, **metrics, **und, **gen, "variant": label, "cfg_weight": float(weight), "status": "done"})
    return rows
  if exit_info is not None:
    rc = int(exit_info.get("returncode", 1))
    if rc != 0:
      log = workdir / LOG_FILE
      tail = ""
      if log.exists():
        lines = [ln for ln in log.read_bytes().decode("utf-8", "replace").splitlines() if ln.strip()]
        tail = f": {lines[-1][:200]}" if lines else ""
      return [{**base, **metrics, "status": "failed", "message": f"exit {rc}; see {log}{tail}"}]
    return [{**base, **metrics, "status": "done"}]
  if step is not None:
    return [{**base, **metrics, "status": "running", "message": f"at step {step}"}]
  return [{**base, **metrics}]


def load_units(root):
  """pandas.DataFrame, one row per unit (see `read_unit`): unit, variant, seed, status, workdir, message, then one
  float column per metric ('generation/overall', 'understanding/overall', ..., 'final_loss', 'wall_s')."""
  import pandas as pd  # pylint: disable=import-outside-toplevel
  rows = [row for d in unit_dirs(root) for row in read_unit(d)]
  frame = pd.DataFrame(rows)
  metrics = sorted(c for c in frame.columns if c not in _BASE_COLUMNS and c != "cfg_weight")
  ordered = [c for c in _BASE_COLUMNS if c in frame.columns] + (["cfg_weight"] if "cfg_weight" in frame else [])
  return frame[ordered + sorted(metrics, key=_metric_order)]


def _metric_order(name: str) -> tuple:
  """Key metrics first (in KEY_METRICS order), then the rest alphabetically."""
  return (KEY_METRICS.index(name), "") if name in KEY_METRICS else (len(KEY_METRICS), name)


def metric_columns(units) -> list[str]:
  return [c for c in units.columns if c not in _BASE_COLUMNS and c != "cfg_weight"]


def mean_ci95(values) -> tuple[float, float, int]:
  """(mean, half-width of the two-sided 95% Student-t interval, n) of the finite values; the half-width is NaN
  for fewer than two values."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from scipy import stats  # pylint: disable=import-outside-toplevel
  x = np.asarray([v for v in values if v is not None and math.isfinite(float(v))], np.float64)
  if x.size == 0:
    return math.nan, math.nan, 0
  if x.size == 1:
    return float(x[0]), math.nan, 1
  half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
  return float(x.mean()), half, int(x.size)


def _status_text(statuses) -> str:
  counts = {s: list(statuses).count(s) for s in STATUSES}
  return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def summarize(units):
  """pandas.DataFrame, one row per variant (in launch order): variant, n_done, n_units, status (e.g. '2 done,
  1 failed'), and for every metric m the columns f'{m} mean' and f'{m} ci95' (95% t-interval half-width over the
  done units' seeds)."""
  import pandas as pd  # pylint: disable=import-outside-toplevel
  metrics = metric_columns(units)
  rows = []
  for variant in dict.fromkeys(units["variant"]):
    group = units[units["variant"] == variant]
    done = group[group["status"] == "done"]
    row = {"variant": variant, "n_done": len(done), "n_units": len(group), "status": _status_text(group["status"])}
    for m in metrics:
      mean, half, _ = mean_ci95(done[m].tolist())
      row[f"{m} mean"], row[f"{m} ci95"] = mean, half
    rows.append(row)
  return pd.DataFrame(rows)


def paired_differences(units, reference=None):
  """pandas.DataFrame, one row per variant other than `reference` (default: the first variant): variant, n_pairs,
  and for every metric m the columns f'{m} diff mean' and f'{m} diff ci95': the mean and 95% t-interval of the
  per-seed differences (variant − reference) over the seeds done in both. Variants of a claim share each seed's
  data order and image tokenizer, so pairing by seed removes the seed-to-seed swing the unpaired intervals carry."""
  import pandas as pd  # pylint: disable=import-outside-toplevel
  metrics = metric_columns(units)
  done = units[(units["status"] == "done") & units["seed"].notna()]
  variants = list(dict.fromkeys(units["variant"]))
  if reference is None:
    reference = variants[0] if variants else None
  if reference not in variants:
    raise ReportError(f"no variant {reference!r} to pair against; the variants are {variants}")
  base = done[done["variant"] == reference].drop_duplicates("seed").set_index("seed")
  rows = []
  for variant in variants:
    if variant == reference:
      continue
    other = done[done["variant"] == variant].drop_duplicates("seed").set_index("seed")
    seeds = [s for s in other.index if s in base.index]
    row = {"variant": variant, "reference": reference, "n_pairs": len(seeds)}
    for m in metrics:
      diffs = [float(other.loc[s, m]) - float(base.loc[s, m]) for s in seeds]
      row[f"{m} diff mean"], row[f"{m} diff ci95"], _ = mean_ci95(diffs)
    rows.append(row)
  return pd.DataFrame(rows, columns=["variant", "reference", "n_pairs"]
                      + [f"{m} diff {k}" for m in metrics for k in ("mean", "ci95")])


def paired_markdown(paired, metrics: list[str]) -> str:
  """The paired table: 'mean ± ci95' of the per-seed differences, n pairs."""
  rows = [[f"{r['variant'] or '(base)'} − {r['reference'] or '(base)'}", str(r["n_pairs"])]
          + [_cell(r[f"{m} diff mean"], r[f"{m} diff ci95"], _digits(m), signed=True) for m in metrics]
          for _, r in paired.iterrows()]
  return markdown_table(["difference", "pairs"] + metrics, rows)


def loss_curves(root):
  """pandas.DataFrame with columns variant, seed, unit, step, loss: every unit's logged train/loss."""
  import pandas as pd  # pylint: disable=import-outside-toplevel
  from janus_jax.train.metrics import read_metrics  # pylint: disable=import-outside-toplevel
  rows = []
  for d in unit_dirs(root):
    info = (_read_json(d / UNIT_FILE)[0] or {}) if (d / UNIT_FILE).exists() else {}
    for r in read_metrics(d / TRAIN_DIR):
      if "train/loss" in r:
        rows.append({"variant": str(info.get("variant", "")), "seed": info.get("seed"), "unit": int(d.name),
                       "step": int(r["step"]), "loss": float(r["train/loss"])})
  return pd.DataFrame(rows, columns=["variant", "seed", "unit", "step", "loss"])


def _cell(mean: float, half: float, digits: int, signed: bool = False) -> str:
  if not math.isfinite(mean):
    return "–"
  return f"{mean:{'+' if signed else ''}.{digits}f}" + (f" ± {half:.{digits}f}" if math.isfinite(half) else "")


def _digits(metric: str) -> int:
  return 0 if metric == "wall_s" else 3


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def summary_markdown(summary, metrics: list[str]) -> str:
  """The per-variant table: 'mean ± ci95' cells, n done of n units."""
  rows = [[str(r["variant"]) or "(base)", f"{r['n_done']}/{r['n_units']}"]
          + [_cell(r[f"{m} mean"], r[f"{m} ci95"], _digits(m)) for m in metrics] for _, r in summary.iterrows()]
  return markdown_table(["variant", "done"] + metrics, rows)


def _plot_metrics(units, summary, metrics: list[str], path) -> None:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  # no pyplot: notebooks keep theirs
  labels = [str(v) or "(base)" for v in summary["variant"]]
  fig = Figure(figsize=(max(3.2, 0.9 * len(labels) + 1.5) * max(len(metrics), 1), 3.6))
  axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)
  x = np.arange(len(labels))
  for ax, m in zip(axes[0], metrics):
    means = summary[f"{m} mean"].to_numpy(float)
    halves = np.nan_to_num(summary[f"{m} ci95"].to_numpy(float))
    ax.bar(x, np.nan_to_num(means), yerr=halves, capsize=4, color="#7aa6d8", edgecolor="#2b5d8f")
    for i, variant in enumerate(summary["variant"]):
      done = units[(units["variant"] == variant) & (units["status"] == "done")][m].dropna()
      ax.plot(np.full(len(done), i), done.to_numpy(float), "o", color="#1b1b1b", ms=3.5, zorder=3)
    ax.set_title(m, fontsize=10)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
  fig.suptitle("mean ± 95% CI over seeds (dots: seeds)", fontsize=10)
  fig.tight_layout()
  with paths.resolve(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=110)


def _plot_losses(curves, path) -> None:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  fig = Figure(figsize=(6.4, 4.0))
  ax = fig.subplots()
  for variant, group in curves.groupby("variant", sort=False):
    by_step = group.groupby("step")["loss"]
    mean, low, high = by_step.mean(), by_step.min(), by_step.max()
    line, = ax.plot(mean.index, mean.to_numpy(), label=str(variant) or "(base)")
    ax.fill_between(mean.index, low.to_numpy(), high.to_numpy(), color=line.get_color(), alpha=0.2)
  ax.set_xlabel("step")
  ax.set_ylabel("train/loss (mean over seeds; band: min–max)")
  if not curves.empty:
    ax.legend(fontsize=8)
  fig.tight_layout()
  with paths.resolve(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=110)


def write_report(root, out_dir=None) -> dict[str, str]:
  """Writes report.md, units.csv, summary.csv, (paired.csv,) metrics.png and loss.png into `out_dir` (default
  ROOT/NAME/report); returns {'markdown', 'units_csv', 'summary_csv', 'metrics_png', 'loss_png'} -> path, plus
  'paired_csv' (`paired_differences`) when the sweep has more than one variant."""
  root = paths.resolve(root)
  units = load_units(root)
  summary = summarize(units)
  out = paths.resolve(out_dir) if out_dir else root / "report"
  out.mkdir(parents=True, exist_ok=True)
  metrics = metric_columns(units)
  key = [m for m in KEY_METRICS if m in metrics] or metrics[:4]
  files = {"markdown": out / "report.md", "units_csv": out / "units.csv", "summary_csv": out / "summary.csv",
           "metrics_png": out / "metrics.png", "loss_png": out / "loss.png"}
  files["units_csv"].write_text(units.to_csv(index=False))
  files["summary_csv"].write_text(summary.to_csv(index=False))
  paired_text = []
  if summary["variant"].nunique() > 1:
    paired = paired_differences(units)
    files["paired_csv"] = out / "paired.csv"
    files["paired_csv"].write_text(paired.to_csv(index=False))
    paired_text = ["## Paired by seed", "", "Each variant minus the first, seed by seed (the variants share each "
                   "seed's data order and image tokenizer): mean ± half-width of the 95% t-interval of the "
                   "differences.", "", paired_markdown(paired, key), ""]
  unit_rows = [[str(r["unit"]), str(r["variant"]) or "(base)", "" if r["seed"] is None or r["seed"] != r["seed"]
                else str(r["seed"]), r["status"], str(r["message"])] for _, r in units.iterrows()]
  text = [f"# Sweep report: {root}", "", f"{len(units)} rows from {units['unit'].nunique()} work units: "
          f"{_status_text(units['status'])}. Cells: mean ± half-width of the 95% t-interval over the done seeds.", "",
          summary_markdown(summary, key), ""] + paired_text
  text += ["## Every metric", "", summary_markdown(summary, metrics), "",
           "## Units", "", markdown_table(["unit", "variant", "seed", "status", "message"], unit_rows), "",
           "![metrics](metrics.png)", "", "![training loss](loss.png)", ""]
  files["markdown"].write_text("\n".join(text))
  _plot_metrics(units, summary, key, files["metrics_png"])
  _plot_losses(loss_curves(root), files["loss_png"])
  return {k: str(v) for k, v in files.items()}


__all__ = ["ReportError", "load_units", "summarize", "paired_differences", "loss_curves", "write_report", "mean_ci95",
           "read_unit", "unit_dirs"]
