"""benchmarks/train_step.py runs end to end in its tiny mode and reports sane figures."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "train_step.py")
# One CPU device, as a user's machine: conftest's 8 virtual devices would split batch 2 eight ways.
ENV = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "train_step.json"
  proc = subprocess.run(
      [sys.executable, SCRIPT, "--size=tiny", "--variants=spacetime", "--trainer_steps=20",
       f"--json={out}"],
      capture_output=True, text=True, timeout=300, check=False, env=ENV)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text()), proc.stdout


def test_rows_and_figures(report):
  data, stdout = report
  rows = {r["role"]: r for r in data["rows"]}
  assert set(rows) >= {"ours", "plain"}
  ours, plain = rows["ours"], rows["plain"]
  assert ours["attention"] == "auto" and plain["attention"] == "explicit"  # CPU
  for r in (ours, plain):
    assert r["finite"] is True
    assert r["flops_per_step"] > 0 and r["ms_per_step"] > 0
    assert 0 < r["utilisation"] < 1.5
    assert r["compiled_memory"]["peak"] > 0
    assert r["clips_per_s"] == pytest.approx(2 / (r["ms_per_step"] / 1e3))
    assert len(r["ms_all"]) == 3
  # Same model, same shapes: XLA counts the same matmuls whichever attention path runs them.
  assert plain["flops_per_step"] == pytest.approx(ours["flops_per_step"], rel=0.1)
  assert ours["speedup_vs_plain"] == pytest.approx(plain["ms_per_step"] / ours["ms_per_step"])
  assert "| Model 1 | ours | auto |" in stdout
  assert ours["kept_for_backward_bytes"] > 0


def test_trainer_row(report):
  data, stdout = report
  rows = {r["role"]: r for r in data["rows"]}
  trainer, ours = rows["trainer"], rows["ours"]
  assert trainer["steps"] == 20 and len(trainer["steps_per_sec"]) == 4  # 5 rows, first left out
  assert all(0 <= w <= 1 for w in trainer["data_wait_fraction"])
  assert ours["trainer_rate_vs_step"] == pytest.approx(
      ours["ms_per_step"] / trainer["ms_per_step"])
  assert "the trainer on synthetic_device runs at" in stdout


def test_hf_baseline_row(report):
  data, _ = report
  hf = next(r for r in data["rows"] if r["role"] == "hf")
  try:
    import transformers  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    assert "torch/transformers not installed" in hf["skipped"]
    return
  assert hf["ms_per_step"] > 0 and hf["loss_finite"] is True
  assert hf["attn_implementation"] == "sdpa"
  # Same shapes as ours: hidden 32, 1 layer, 2 heads, MLP 64, 4×32² clips, 400 classes.
  ours = next(r for r in data["rows"] if r["role"] == "ours")
  assert abs(hf["params"] - ours["params"]) / ours["params"] < 0.05, (hf["params"], ours["params"])


def test_meta(report):
  data, _ = report
  meta = data["meta"]
  assert meta["settings"]["size"] == "tiny" and meta["jax"]
  assert meta["matmul"]["tflops"] > 0 and meta["matmul"]["dtype"] == "float32"
  assert meta["plain_attention"] == "explicit" and "cpu" in meta["device"]
  assert "benchmarks/train_step.py --size=tiny" in meta["command"]


def test_no_tensorflow_in_the_measuring_process():
  """The GPU machine has no TensorFlow: the step's child must not import it."""
  spec = {"size": "tiny", "variant": "spacetime", "dtype": "float32", "batch": 2, "frames": 4,
          "crop": 32, "attentions": ["auto"], "remat": "none", "steps": 1, "warmup": 0}
  code = ("import runpy, sys\n"
          f"sys.argv = ['train_step.py', '--_child', 'ours', '--_spec', {json.dumps(spec)!r}]\n"
          "try:\n"
          f"  runpy.run_path({SCRIPT!r}, run_name='__main__')\n"
          "except SystemExit:\n"
          "  pass\n"
          "print('tensorflow imported:', 'tensorflow' in sys.modules)\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=120, check=False, env=ENV)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert '"finite": true' in proc.stdout
  assert "tensorflow imported: False" in proc.stdout
