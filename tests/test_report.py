"""Sweep reports (janus_jax.report, `janus-jax report`) on a fabricated sweep root with hand-computed values."""
import json
import math
import subprocess
import sys

import pytest

from janus_jax import report

# Two variants x 3 seeds; unit 5 failed, unit 6 is still training, unit 7 has a truncated eval.json.
GEN = {"base": [0.50, 0.60, 0.70], "vq": [0.20, 0.30]}
UND = {"base": [0.40, 0.50, 0.90], "vq": [0.30, 0.30]}
T_975 = {1: 12.706204736174707, 2: 4.302652729749464}  # Student t quantiles (2 and 3 seeds)


def _unit(root, i, variant, seed, files):
  d = root / str(i)
  (d / "janus").mkdir(parents=True)
  (d / "unit.json").write_text(json.dumps({"unit": i, "variant": variant, "seed": seed,
                                           "overrides": {"config.seed": seed}, "command": ["python", "-m", "x"]}))
  for name, text in files.items():
    (d / name).write_text(text)
  return d


def _eval(gen, und, extra=None):
  trained = {"generation": {"overall": gen, "colors": gen / 2, "num_images": 150},
             "understanding": {"overall": und, "num_questions": 300}, **(extra or {})}
  return json.dumps({"trained": trained, "timings_seconds": {"total": 100.0}})


def _loss_lines(start):
  return "".join(json.dumps({"step": s, "train/loss": start - 0.1 * s}) + "\n" for s in (1, 2, 3))


@pytest.fixture(name="root")
def fabricated_root(tmp_path):
  root = tmp_path / "sweeps" / "claim"
  i = 0
  for variant in ("base", "vq"):
    for seed, (g, u) in enumerate(zip(GEN[variant], UND[variant])):
      _unit(root, i, variant, seed, {"eval.json": _eval(g, u), "janus/metrics.jsonl": _loss_lines(2.0 + i),
                                     "exit.json": json.dumps({"returncode": 0, "seconds": 60.0 + i})})
      i += 1
  _unit(root, 5, "vq", 2, {"exit.json": json.dumps({"returncode": 1, "seconds": 3.0}),
                           "log.txt": "step 1\nValueError: boom\n"})
  _unit(root, 6, "vq", 3, {"janus/metrics.jsonl": _loss_lines(5.0)})
  _unit(root, 7, "base", 3, {"eval.json": '{"trained": {"generation": {"overall": 0.'})
  (root / "0" / "vq").mkdir()
  (root / "0" / "vq" / "report.json").write_text(json.dumps({"psnr": 26.0, "codes_used": 22, "steps": 500}))
  return root


def test_units_keep_every_status(root):
  units = report.load_units(root)
  assert list(units["unit"]) == list(range(8))
  assert list(units["status"]) == ["done"] * 5 + ["failed", "running", "corrupt"]
  assert "exit 1" in units.loc[5, "message"] and "ValueError: boom" in units.loc[5, "message"]
  assert units.loc[6, "message"] == "at step 3"
  assert "eval.json is not valid JSON" in units.loc[7, "message"] and "--mode=eval" in units.loc[7, "message"]
  assert units.loc[0, "final_loss"] == pytest.approx(2.0 - 0.3)
  assert units.loc[1, "wall_s"] == 61.0  # the runner's exit.json wins over eval.json's own timing
  assert "generation/num_images" not in units.columns  # counts are not metrics
  assert (units.loc[0, "vq/psnr"], units.loc[0, "vq/codes_used"]) == (26.0, 22.0) and "vq/steps" not in units


def test_summary_means_and_t_intervals_by_hand(root):
  summary = report.summarize(report.load_units(root)).set_index("variant")
  for variant in ("base", "vq"):
    for metric, values in (("generation/overall", GEN[variant]), ("understanding/overall", UND[variant])):
      n = len(values)
      mean = sum(values) / n
      sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
      assert summary.loc[variant, f"{metric} mean"] == pytest.approx(mean)
      assert summary.loc[variant, f"{metric} ci95"] == pytest.approx(T_975[n - 1] * sd / math.sqrt(n))
  assert summary.loc["base", "generation/colors mean"] == pytest.approx(0.3)
  assert (summary.loc["base", "n_done"], summary.loc["base", "n_units"]) == (3, 4)
  assert (summary.loc["vq", "n_done"], summary.loc["vq", "n_units"]) == (2, 4)
  assert summary.loc["vq", "status"] == "2 done, 1 failed, 1 running"
  assert summary.loc["base", "status"] == "3 done, 1 corrupt"


def test_paired_differences_by_seed_by_hand(root):
  paired = report.paired_differences(report.load_units(root)).set_index("variant")
  # vq has seeds 0 and 1 done (seed 2 failed, seed 3 running); base's seed 3 is corrupt: 2 pairs.
  assert list(paired.index) == ["vq"] and paired.loc["vq", "reference"] == "base" and paired.loc["vq", "n_pairs"] == 2
  assert paired.loc["vq", "generation/overall diff mean"] == pytest.approx(-0.3)  # 0.2-0.5, 0.3-0.6
  assert paired.loc["vq", "generation/overall diff ci95"] == pytest.approx(0.0, abs=1e-9)
  diffs = [0.3 - 0.4, 0.3 - 0.5]
  sd = math.sqrt(sum((d + 0.15) ** 2 for d in diffs))
  assert paired.loc["vq", "understanding/overall diff mean"] == pytest.approx(-0.15)
  assert paired.loc["vq", "understanding/overall diff ci95"] == pytest.approx(T_975[1] * sd / math.sqrt(2))
  against_vq = report.paired_differences(report.load_units(root), reference="vq").set_index("variant")
  assert against_vq.loc["base", "generation/overall diff mean"] == pytest.approx(0.3)
  with pytest.raises(report.ReportError, match="no variant 'nope'"):
    report.paired_differences(report.load_units(root), reference="nope")


def test_single_seed_has_no_interval():
  mean, half, n = report.mean_ci95([0.5, float("nan"), None])
  assert (mean, n) == (0.5, 1) and math.isnan(half)


def test_cfg_sweep_rows_per_weight(tmp_path):
  root = tmp_path / "cfg"
  for seed in range(2):
    sweep = {"1": {"generation": {"overall": 0.1 + seed}}, "5": {"generation": {"overall": 0.5 + seed}}}
    _unit(root, seed, "", seed, {"eval.json": _eval(0.9, 0.4 + seed, {"cfg_sweep": sweep})})
  units = report.load_units(root)
  assert list(units["variant"]) == ["cfg 1", "cfg 5"] * 2 and list(units["cfg_weight"]) == [1.0, 5.0] * 2
  summary = report.summarize(units).set_index("variant")
  assert summary.loc["cfg 5", "generation/overall mean"] == pytest.approx(1.0)
  assert summary.loc["cfg 1", "understanding/overall mean"] == pytest.approx(0.9)  # same model at every weight


def test_report_command_writes_tables_and_plots(root):
  proc = subprocess.run([sys.executable, "-m", "janus_jax.cli", "report", str(root)], capture_output=True, text=True,
                        check=False)
  assert proc.returncode == 0, proc.stderr
  out = root / "report"
  md = (out / "report.md").read_text()
  assert "| base | 3/4 | 0.600 ± 0.248 |" in md  # 0.6 ± 4.303 * 0.1 / sqrt(3)
  assert "| vq | 2/4 | 0.250 ± 0.635 |" in md and "| 5 | vq | 2 | failed |" in md
  assert "| base | 3/4 |" in proc.stdout
  assert "| vq − base | 2 | -0.300 ± 0.000 | -0.150 ± 0.635 |" in md  # the paired table
  import pandas as pd  # pylint: disable=import-outside-toplevel
  assert len(pd.read_csv(out / "summary.csv")) == 2 and len(pd.read_csv(out / "units.csv")) == 8
  assert len(pd.read_csv(out / "paired.csv")) == 1
  from PIL import Image  # pylint: disable=import-outside-toplevel
  for png in ("metrics.png", "loss.png"):
    with Image.open(out / png) as im:
      assert im.size[0] > 300 and im.size[1] > 200
  curves = report.loss_curves(root)
  assert len(curves) == 6 * 3 and set(curves["variant"]) == {"base", "vq"}


def test_bad_roots_name_the_fix(tmp_path):
  missing = subprocess.run([sys.executable, "-m", "janus_jax.cli", "report", str(tmp_path / "nope")],
                           capture_output=True, text=True, check=False)
  assert missing.returncode == 2 and "does not exist" in missing.stderr and "ROOT/NAME" in missing.stderr
  _unit(tmp_path / "sweeps" / "exp1", 0, "", 0, {})
  with pytest.raises(report.ReportError, match=r"holds the sweeps \['exp1'\]: pass e.g. .*exp1"):
    report.load_units(tmp_path / "sweeps")
