"""`ucf101_fe.py:runlocal` and `hmdb51_fe.py:runlocal`: train 2 steps and test, on the synthetic set
prepared through its TFDS builder and read through `dataset_configs.tfds_name`."""
import json
import subprocess
import sys

import pytest

from tests import train_procs

SMALL_SET = ["--config.dataset_configs.synthetic.num_train=32",
             "--config.dataset_configs.synthetic.num_validation=8",
             "--config.dataset_configs.synthetic.num_test=12"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ucf101_fe", "hmdb51_fe"])
def test_runlocal_trains_and_tests_on_the_tfds_set(tmp_path, name):
  env = train_procs.worker_env()
  env["VIVIT_DATA_DIR"] = str(tmp_path / "data")
  workdir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "-m", "vivit_jax.main", f"--config={train_procs.REPO}/configs/{name}.py:"
       "runlocal", f"--workdir={workdir}", "--config.num_training_steps=2", *SMALL_SET],
      env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  last = out.stdout.strip().splitlines()[-1]
  # 12 test videos, each once, 2 clips x 3 crops (the full config's 4x3 views, shrunk).
  assert last.startswith("vivit_jax done: step 2 |") and "12 videos x 6 views" in last, last
  prepared = tmp_path / "data" / "tfds" / "synthetic_motion"
  assert json.loads((prepared / "_SYNTHETIC_COMPLETE.json").read_text())["counts"] == {
      "train": 32, "validation": 8, "test": 12}
  assert (prepared / "1.0.0" / "dataset_info.json").exists()
  assert not (tmp_path / "data" / "synthetic_motion").exists()  # No TFRecord copy was made.
  results = json.loads((workdir / "eval_results.json").read_text())
  assert results["split"] == "test" and results["num_videos"] == 12 and results["step"] == 2
