"""Two processes on 127.0.0.1 (gloo collectives) train, checkpoint and resume like one; a killed
process stops the other within a bounded time, and restarting both resumes exactly."""
import signal
import time

import jax
import numpy as np
import pytest

from tests import train_helpers as th
from tests import train_procs
from vivit_jax import distributed, run_state, train


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

  restored = run_state.restore(run_state.make_manager(workdir), 6, ref_state)
  assert int(restored["step"]) == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=1e-4, atol=1e-5),
               restored["params"], ref_state["params"])


def _start_pair(workdir, steps, *args):
  port = train_procs.free_port()
  return [train_procs.start(workdir, steps, "--num_processes=2", f"--port={port}",
                            f"--process_id={i}", *args, log=f"{workdir}.{i}.log")
          for i in range(2)]


def _wait_for_step(workdir, procs, step, timeout=240):
  deadline = time.time() + timeout
  while not (workdir / "metrics.jsonl").exists() or max(th.read_losses(workdir) or [0]) < step:
    assert all(p.poll() is None for p in procs) and time.time() < deadline, "workers ended early"
    time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_process_stops_the_other_quickly_then_both_resume(tmp_path):
  steps = 8
  workdir = tmp_path / "two"
  procs = _start_pair(workdir, steps, "--slow_data=0.3", "--heartbeat_timeout=10")
  _wait_for_step(workdir, procs, 3)
  procs[1].send_signal(signal.SIGKILL)
  killed = time.time()
  rc = procs[0].wait(timeout=60)  # never hangs
  elapsed = time.time() - killed
  log = (tmp_path / "two.0.log").read_text()
  # Its next collective fails at once: one clear line and exit code 1, no shutdown wait.
  assert rc == distributed.EXIT_PROCESS_LOST and elapsed < 30, (rc, elapsed, log[-2000:])
  assert "vivit_jax: stopped: process 0 of 2: a cross-process operation failed" in log
  assert "another process has probably died. Restart every process" in log
  saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and max(saved) < steps

  train_procs.run(workdir, steps, processes=2)  # restart both: resumes exactly
  log = (tmp_path / "two.0.log").read_text()
  assert f"training steps {max(saved)} → {steps}" in log
  train.train_and_evaluate(
      th.tiny_config(num_training_steps=steps, checkpoint_steps=2), str(tmp_path / "ref"),
      mode="train", data_fn=th.fake_data_fn, devices=jax.devices()[:2])
  losses, ref_losses = th.read_losses(workdir), th.read_losses(tmp_path / "ref")
  assert sorted(losses) == list(range(1, steps + 1))
  np.testing.assert_allclose([losses[s] for s in range(1, steps + 1)],
                             [ref_losses[s] for s in range(1, steps + 1)], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_killed_coordinator_stops_the_other_quickly(tmp_path):
  workdir = tmp_path / "two"
  procs = _start_pair(workdir, 30, "--slow_data=0.3", "--heartbeat_timeout=10")
  _wait_for_step(workdir, procs, 2)
  procs[0].send_signal(signal.SIGKILL)
  killed = time.time()
  rc = procs[1].wait(timeout=60)  # never hangs
  elapsed = time.time() - killed
  log = (tmp_path / "two.1.log").read_text()
  assert rc != 0 and elapsed < 30, (rc, elapsed, log[-2000:])
  assert "Terminating process because the JAX distributed service detected fatal errors" in log
