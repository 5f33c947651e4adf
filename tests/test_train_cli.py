"""`python -m vivit_jax.main`: config file with `:runlocal`, overrides, data creation, outputs."""
import json
import subprocess
import sys

import pytest

from tests import train_procs

CONFIG = train_procs.REPO / "configs" / "synthetic.py"
SMALL_SET = ["--config.dataset_configs.synthetic.num_train=64",
             "--config.dataset_configs.synthetic.num_validation=16",
             "--config.dataset_configs.synthetic.num_test=24"]


def _main(tmp_path, *args):
  """Runs the CLI from `tmp_path` (relative workdirs land there)."""
  env = train_procs.worker_env()
  env["VIVIT_DATA_DIR"] = str(tmp_path / "data")
  return subprocess.run([sys.executable, "-m", "vivit_jax.main", *args], env=env,
                        cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_runlocal_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  out = _main(tmp_path, f"--config={CONFIG}:runlocal", "--workdir=run",  # relative workdir
              "--config.num_training_steps=4", "--config.log_summary_steps=2", *SMALL_SET)
  assert out.returncode == 0, out.stderr[-3000:]
  last = out.stdout.strip().splitlines()[-1]
  assert last.startswith("vivit_jax done: step 4 |") and "24 videos x 1 views" in last, last
  assert (tmp_path / "data" / "synthetic_motion" / "_SYNTHETIC_COMPLETE.json").exists()
  results = json.loads((workdir / "eval_results.json").read_text())
  assert results["split"] == "test" and results["num_videos"] == 24 and results["step"] == 4
  rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  train_rows = [r for r in rows if "train_loss" in r]
  assert [r["step"] for r in train_rows] == [2, 4]
  for key in ("steps_per_sec", "clips_per_sec", "data_wait_fraction", "learning_rate"):
    assert all(r[key] is not None and r[key] >= 0 for r in train_rows), key
  assert 0 <= train_rows[-1]["data_wait_fraction"] <= 1
  assert "FLOPs per step in total" in out.stderr and "Total:" in out.stderr  # cost analysis, overview
  assert "orbax" not in out.stderr.lower().replace("orbax-checkpoint", "")  # Orbax chatter off
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["4"]


def test_bad_override_names_field_and_values(tmp_path):
  out = _main(tmp_path, f"--config={CONFIG}:runlocal", f"--workdir={tmp_path / 'r'}",
              "--config.optimizer=adamm")
  assert out.returncode == 2
  assert "optimizer" in out.stderr and "adamw" in out.stderr and "momentum" in out.stderr


def test_eval_mode_flag_reaches_scenic_loader(tmp_path):
  missing = tmp_path / "no_such_checkpoint"
  out = _main(tmp_path, f"--config={CONFIG}:runlocal", "--workdir=ev", "--mode=eval",
              f"--config.eval_checkpoint_path={missing}", *SMALL_SET)
  assert out.returncode == 2
  assert f"config.eval_checkpoint_path: {missing} does not exist" in out.stderr
