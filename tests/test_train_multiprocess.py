"""Two processes on 127.0.0.1 (gloo collectives) train, checkpoint and resume like one."""
import jax
import numpy as np
import pytest

from tests import train_helpers as th
from tests import train_procs
from vivit_jax import checkpointing, train


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tmp_path):
  ref_state, _ = train.train_and_evaluate(
      th.tiny_config(num_training_steps=6, checkpoint_steps=2), str(tmp_path / "ref"),
      mode="train", data_fn=th.fake_data_fn, devices=jax.devices()[:2])

  workdir = tmp_path / "two"
  train_procs.run(workdir, 4, processes=2)
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit()) == [2, 4]
  log = (tmp_path / "two.0.log").read_text()
  assert "processes 2 devices 2" in log
  # Second launch: resumes from the step-4 checkpoint written by both processes.
  train_procs.run(workdir, 6, processes=2)
  log = (tmp_path / "two.0.log").read_text()
  assert "resuming from" in log and "training steps 4 → 6" in log

  rows = [line for line in (workdir / "metrics.jsonl").read_text().splitlines()
          if "train_loss" in line]
  assert len(rows) == 6  # steps 1-4, then 5-6; process 1 wrote nothing
  losses, ref_losses = th.read_losses(workdir), th.read_losses(tmp_path / "ref")
  np.testing.assert_allclose([losses[s] for s in range(1, 7)],
                             [ref_losses[s] for s in range(1, 7)], rtol=1e-5, atol=1e-6)

  restored = checkpointing.restore(checkpointing.make_manager(workdir), 6, ref_state)
  assert int(restored["step"]) == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=1e-4, atol=1e-5),
               restored["params"], ref_state["params"])
