"""Faults: SIGKILL (also at several points of a checkpoint write) continues exactly; NaN stops;
misfit and damaged checkpoints."""
import errno
import json
import os
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from tests import train_helpers as th
from tests import train_procs
from vivit_jax import checkpoints, run_state, train

STEPS = 8


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Losses of an uninterrupted 1-device run (checkpoints every 2 steps, as the workers)."""
  workdir = tmp_path_factory.mktemp("reference") / "run"
  train.train_and_evaluate(th.tiny_config(num_training_steps=STEPS, checkpoint_steps=2),
                           str(workdir), mode="train", data_fn=th.fake_data_fn,
                           devices=jax.devices()[:1])
  losses = th.read_losses(workdir)
  assert sorted(losses) == list(range(1, STEPS + 1))
  return workdir, losses


def _complete_steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _start_and_wait(workdir, step: int, checkpoint: int = 0):
  """A slow-data worker, returned once it has logged `step` (and committed `checkpoint`: on a
  loaded machine the asynchronous save can lag a step behind)."""
  proc = train_procs.start(workdir, STEPS, "--slow_data=0.4")
  deadline = time.time() + 240
  while (not (workdir / "metrics.jsonl").exists() or max(th.read_losses(workdir) or [0]) < step
         or checkpoint and checkpoint not in _complete_steps(workdir)):
    assert proc.poll() is None and time.time() < deadline, f"worker ended before step {step}"
    time.sleep(0.05)
  return proc


def _assert_same_losses(workdir, reference):
  reference = reference[1]
  losses = th.read_losses(workdir)
  assert sorted(losses) == list(range(1, STEPS + 1))
  # Same program, same data, same state: bit-identical, not merely close.
  assert [losses[s] for s in range(1, STEPS + 1)] == [reference[s] for s in range(1, STEPS + 1)]
  rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert len([r for r in rows if "train_loss" in r]) == STEPS  # replayed steps logged once


@pytest.mark.slow
def test_sigkill_then_restart_continues_exactly(tmp_path, reference):
  workdir = tmp_path / "run"
  proc = _start_and_wait(workdir, 5, checkpoint=4)
  os.kill(proc.pid, signal.SIGKILL)
  assert proc.wait(timeout=60) == -signal.SIGKILL
  killed_at = max(th.read_losses(workdir))
  resumed = max(_complete_steps(workdir))  # Orbax's unfinished folders are not digit names
  assert killed_at < STEPS and resumed >= 4

  train_procs.run(workdir, STEPS)
  assert f"training steps {resumed} → {STEPS}" in (tmp_path / "run.0.log").read_text()
  _assert_same_losses(workdir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("point, complete", [
    ("started", [2, 4]),  # step 6 was being written: not a checkpoint
    ("before_rename", [2, 4]),  # written and finalised, not committed
    ("after_rename", [2, 4, 6]),  # the rename is the commit: step 6 is complete
])
def test_sigkill_during_checkpoint_write(tmp_path, reference, point, complete):
  workdir = tmp_path / "run"
  proc = train_procs.start(workdir, STEPS, "--kill_in_save=6", f"--kill_point={point}")
  assert proc.wait(timeout=240) == -signal.SIGKILL
  assert _complete_steps(workdir) == complete
  train_procs.run(workdir, STEPS)
  log = (tmp_path / "run.0.log").read_text()
  assert f"training steps {complete[-1]} → 8" in log and "damaged" not in log
  _assert_same_losses(workdir, reference)
  assert _complete_steps(workdir) == [2, 4, 6, 8]
  assert not [p.name for p in (workdir / "checkpoints").iterdir() if not p.name.isdigit()]


@pytest.mark.slow
def test_sigterm_saves_then_resumes(tmp_path, reference):
  workdir = tmp_path / "run"
  proc = _start_and_wait(workdir, 3)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 1
  log = (tmp_path / "run.0.log").read_text()
  stopped = int(log.split("stopped by SIGTERM at step ")[1].split(";")[0])
  assert stopped < STEPS and stopped in _complete_steps(workdir)  # saved off the 2-step grid too
  train_procs.run(workdir, STEPS)
  assert f"training steps {stopped} → {STEPS}" in (tmp_path / "run.0.log").read_text()
  _assert_same_losses(workdir, reference)


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = th.tiny_config(num_training_steps=8, checkpoint_steps=2, max_grad_norm=None,
                          **{"lr_configs.base_learning_rate": 1e4})
  with pytest.raises(FloatingPointError, match=r"non-finite loss or parameters at step \d+.*"
                     r"last good checkpoint is kept.*base_learning_rate") as err:
    train.train_and_evaluate(config, str(tmp_path), mode="train", data_fn=th.fake_data_fn,
                             devices=jax.devices()[:1])
  bad_step = int(str(err.value).split("at step ")[1].split(" ")[0])
  steps = _complete_steps(tmp_path)
  assert steps and max(steps) < bad_step
  manager = run_state.make_manager(tmp_path)
  restored = manager.restore(max(steps))["state"]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored["params"]))


def test_misfit_checkpoint_lists_every_mismatch(tmp_path, reference):
  shutil.copytree(reference[0] / "checkpoints", tmp_path / "checkpoints")
  wider = th.tiny_config(num_training_steps=4, **{
      "model.spatial_transformer.mlp_dim": 48, "model.temporal_transformer.mlp_dim": 48})
  with pytest.raises(checkpoints.CheckpointMismatchError) as err:
    train.train_and_evaluate(wider, str(tmp_path), mode="train", data_fn=th.fake_data_fn,
                             devices=jax.devices()[:1])
  message = str(err.value)
  for part in ("SpatialTransformer", "TemporalTransformer"):
    for leaf in ("Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel"):
      assert f"{part}/encoderblock_0/MlpBlock_0/{leaf}" in message, message
  assert "(16, 48)" in message and "(16, 32)" in message
  assert str(tmp_path / "checkpoints" / str(STEPS)) in message


def test_resume_wins_over_init_from(tmp_path, reference):
  """A run folder with checkpoints is resumed; `init_from` is not even opened."""
  missing = str(tmp_path / "no_such_pretrained_checkpoint")
  config = th.tiny_config(num_training_steps=STEPS, **{"init_from.checkpoint_path": missing})
  shutil.copytree(reference[0] / "checkpoints", tmp_path / "run" / "checkpoints")
  _, summary = train.train_and_evaluate(config, str(tmp_path / "run"), mode="train",
                                     data_fn=th.fake_data_fn, devices=jax.devices()[:1])
  assert summary["step"] == STEPS
  with pytest.raises(Exception, match="no_such_pretrained_checkpoint"):  # fresh folder: init_from
    train.train_and_evaluate(config, str(tmp_path / "fresh"), mode="train",
                             data_fn=th.fake_data_fn, devices=jax.devices()[:1])


def test_eval_mode_uses_newest_checkpoint(tmp_path, reference):
  shutil.copytree(reference[0] / "checkpoints", tmp_path / "checkpoints")
  _, summary = train.train_and_evaluate(th.tiny_config(), str(tmp_path), mode="eval",
                                     data_fn=th.fake_data_fn, devices=jax.devices()[:1])
  results = json.loads((tmp_path / "eval_results.json").read_text())
  assert results["step"] == STEPS and results["num_videos"] == 10 and results["num_views"] == 2
  assert summary["line"].startswith(f"vivit_jax done: step {STEPS} |")
  with pytest.raises(ValueError,
                     match=r"no checkpoint in .*config\.eval_checkpoint_path is not set"):
    train.train_and_evaluate(th.tiny_config(), str(tmp_path / "empty"), mode="eval",
                             data_fn=th.fake_data_fn, devices=jax.devices()[:1])


def test_eval_mode_of_released_scenic_checkpoint(tmp_path, scenic_ref):
  """`--mode=eval` + `eval_checkpoint_path` (2021 flax.optim layout) gives Scenic's logits."""
  ref = np.load(scenic_ref / "vivit" / "spacetime_token" / "reference.npz")
  logits = ref["logits"].astype(np.float64)  # [2, 5]
  # Video 0 labelled with its top class, video 1 with its lowest: top-1 is exactly 1/2.
  labels = np.asarray([np.argmax(logits[0]), np.argmin(logits[1])])
  one_hot = np.eye(5, dtype=np.float32)[labels]

  def data_fn(split, batch_size, **_):
    assert split == "test" and batch_size == 2
    yield {"inputs": ref["inputs"][:, None], "label": one_hot,
           "batch_mask": np.ones(2, np.float32)}

  scenic_config = json.loads(
      (scenic_ref / "vivit" / "spacetime_token" / "config.json").read_text())
  config = th.tiny_config(eval_batch_size=2, **{"dataset_configs.num_classes": 5,
                                                "dataset_configs.num_frames": 8,
                                                "dataset_configs.crop_size": 16})
  config.model = scenic_config["model"]
  config.eval_checkpoint_path = str(
      scenic_ref / "vivit" / "spacetime_token_legacy_optimizer_layout" / "checkpoint_2")
  train.train_and_evaluate(config, str(tmp_path), mode="eval", data_fn=data_fn,
                           devices=jax.devices()[:1])
  results = json.loads((tmp_path / "eval_results.json").read_text())
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected_loss = -np.mean(log_probs[np.arange(2), labels])
  assert results["top1"] == 0.5 and results["num_videos"] == 2 and results["step"] == 0
  np.testing.assert_allclose(results["loss"], expected_loss, rtol=1e-5)
  assert list((tmp_path / "checkpoints").iterdir()) == []  # nothing saved by an evaluation


def _damage(step_dir):
  """Truncates every data file of a step to half (a copy cut short, a bad disk)."""
  for path in sorted((step_dir / "state").rglob("*")):
    if path.is_file() and path.parent.name == "d":
      with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def test_damaged_newest_checkpoints_are_set_aside_and_training_resumes(tmp_path, reference,
                                                                        caplog):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0] / "checkpoints", workdir / "checkpoints")
  _damage(workdir / "checkpoints" / "8")
  (workdir / "checkpoints" / "6" / "state" / "_METADATA").write_text("{\"tree\": ")
  config = th.tiny_config(num_training_steps=STEPS, checkpoint_steps=2)
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(config, str(workdir), mode="train", data_fn=th.fake_data_fn,
                             devices=jax.devices()[:1])
  warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
  assert len(warnings) == 2 and all("\n" not in w for w in warnings), warnings
  for step, warning in zip((8, 6), warnings):
    assert warning.startswith(f"checkpoint {workdir / 'checkpoints' / str(step)} is damaged: ")
    assert f"set aside as {workdir / 'checkpoints' / f'{step}.damaged'}" in warning
    assert warning.endswith("resuming from step 4")
  # Nothing lost: both damaged steps are kept, renamed; steps 6 and 8 are written again.
  names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  assert names == ["2", "4", "6", "6.damaged", "8", "8.damaged"]
  losses = th.read_losses(workdir)
  assert sorted(losses) == [5, 6, 7, 8]
  assert [losses[s] for s in (5, 6, 7, 8)] == [reference[1][s] for s in (5, 6, 7, 8)]


def test_eval_of_a_damaged_checkpoint_fails_in_one_line(tmp_path, reference):
  shutil.copytree(reference[0] / "checkpoints", tmp_path / "checkpoints")
  _damage(tmp_path / "checkpoints" / "8")
  with pytest.raises(run_state.DamagedCheckpointError) as err:
    train.train_and_evaluate(th.tiny_config(), str(tmp_path), mode="eval",
                             data_fn=th.fake_data_fn, devices=jax.devices()[:1])
  message = str(err.value)
  assert "\n" not in message and len(message) < 500, message
  assert message.startswith(f"checkpoint {tmp_path / 'checkpoints' / '8'} is damaged: ")
  assert isinstance(err.value, checkpoints.CheckpointFormatError)
  assert _complete_steps(tmp_path) == [2, 4, 6, 8]  # evaluation renames nothing


def test_every_checkpoint_damaged_stops_instead_of_starting_over(tmp_path, reference):
  shutil.copytree(reference[0] / "checkpoints", tmp_path / "checkpoints")
  for step in _complete_steps(tmp_path):
    _damage(tmp_path / "checkpoints" / str(step))
  with pytest.raises(run_state.DamagedCheckpointError,
                     match=r"no checkpoint of .*checkpoints restores: checkpoint .*8 is damaged"):
    train.train_and_evaluate(th.tiny_config(num_training_steps=STEPS), str(tmp_path),
                             mode="train", data_fn=th.fake_data_fn, devices=jax.devices()[:1])
  assert _complete_steps(tmp_path) == [2, 4, 6, 8]


def test_disk_full_during_a_save_stops_and_keeps_older_checkpoints(tmp_path, reference,
                                                                  monkeypatch):
  from orbax.checkpoint._src.path import async_path  # pylint: disable=g-import-not-at-top
  real_write = async_path.write_text

  async def write_text(path, *args, **kwargs):  # every Orbax metadata write of step 6 fails
    if "/checkpoints/6." in str(path):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return await real_write(path, *args, **kwargs)

  monkeypatch.setattr(async_path, "write_text", write_text)
  config = th.tiny_config(num_training_steps=STEPS, checkpoint_steps=2)
  with pytest.raises(run_state.CheckpointSaveError) as err:
    train.train_and_evaluate(config, str(tmp_path), mode="train", data_fn=th.fake_data_fn,
                             devices=jax.devices()[:1])
  assert err.value.errno == errno.ENOSPC
  message = str(err.value)
  assert message.startswith(f"[Errno 28] cannot write checkpoint {tmp_path / 'checkpoints' / '6'}: "
                            "No space left on device"), message
  assert "previous checkpoints [2, 4]" in message and "\n" not in message
  assert _complete_steps(tmp_path) == [2, 4]
  monkeypatch.undo()  # space freed: the run resumes from step 4, exactly
  train.train_and_evaluate(config, str(tmp_path), mode="train", data_fn=th.fake_data_fn,
                           devices=jax.devices()[:1])
  losses = th.read_losses(tmp_path)
  assert [losses[s] for s in range(1, STEPS + 1)] == [reference[1][s] for s in range(1, STEPS + 1)]
  assert _complete_steps(tmp_path) == [2, 4, 6, 8]
