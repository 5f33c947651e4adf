"""`dataset_name='synthetic_device'`: clips made on the devices; a trainer without TensorFlow."""
import copy
import json
import math
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests import train_helpers as th
from tests import train_procs
from tests.test_configs import load
from vivit_jax import config_check, config_facts, device_feed, preflight, sharding, train
from vivit_jax.data import synthetic_device

TB_OFF = "TensorBoard files are off"


def _config(**overrides) -> ml_collections.ConfigDict:
  """The tests' tiny ViViT on synthetic_device clips [4, 16, 16, 3] of 4 classes."""
  config = th.tiny_config(dataset_name="synthetic_device", **overrides)
  config.dataset_configs.crop_size = 16
  return config


def _mesh(num_devices: int):
  return sharding.make_mesh(None, jax.devices()[:num_devices])


def _batch(config, step, *, split="train", batch=8, devices=8, seed=0):
  make = synthetic_device.make_batch_fn(config, split, batch, _mesh(devices), seed=seed)
  return {k: np.asarray(v) for k, v in make(step).items()}


# ------------------------------------------------------------------------------ the generator

def test_batch_has_the_steps_shapes_dtypes_and_sharding_over_8_devices():
  config = _config()
  mesh = _mesh(8)
  batch = synthetic_device.make_batch_fn(config, "train", 16, mesh, seed=0)(0)
  assert config_facts.batch_dtypes(config)["inputs"] == jnp.uint8
  expected = {"inputs": ((16, 4, 16, 16, 3), jnp.uint8), "label": ((16, 4), jnp.float32),
              "batch_mask": ((16,), jnp.float32)}
  for key, (shape, dtype) in expected.items():
    assert batch[key].shape == shape and batch[key].dtype == dtype, key
    assert batch[key].sharding == sharding.batch_sharding(mesh, len(shape)), key
    assert {s.data.shape[0] for s in batch[key].addressable_shards} == {2}, key  # 16 / 8 rows
  assert sorted(config_facts.batch_dtypes(config)) == sorted(expected)
  np.testing.assert_array_equal(np.asarray(batch["batch_mask"]), np.ones(16))


def test_batches_are_a_function_of_seed_and_step_whatever_the_mesh():
  config = _config()
  a = _batch(config, 5)
  for key, value in _batch(config, 5, devices=1).items():
    np.testing.assert_array_equal(value, a[key])
  assert not np.array_equal(_batch(config, 6)["inputs"], a["inputs"])
  assert not np.array_equal(_batch(config, 5, seed=1)["inputs"], a["inputs"])
  assert not np.array_equal(_batch(config, 5, split="validation")["inputs"], a["inputs"])


@pytest.mark.parametrize("kind", ["motion", "random"])
def test_labels_are_one_hot_over_every_class(kind):
  config = _config(**{"dataset_configs.synthetic_device_pattern": kind})
  labels = _batch(config, 0, batch=64)["label"]
  assert set(np.unique(labels)) == {0.0, 1.0}
  np.testing.assert_array_equal(labels.sum(axis=1), np.ones(64))
  assert set(labels.argmax(axis=1)) == set(range(th.NUM_CLASSES))


def test_random_pattern_is_noise_over_the_whole_range():
  config = _config(**{"dataset_configs.synthetic_device_pattern": "random"})
  pixels = _batch(config, 0)["inputs"]
  assert pixels.min() == 0 and pixels.max() == 255
  assert abs(pixels.mean() - 127.5) < 2


def test_several_heads_get_one_one_hot_each_of_the_same_class():
  config = _config(**{"dataset_configs.class_splits": [4, 6], "dataset_configs.num_classes": 10})
  labels = _batch(config, 0, batch=32)["label"]
  assert labels.shape == (32, 10)
  np.testing.assert_array_equal(labels[:, :4].sum(1), np.ones(32))
  np.testing.assert_array_equal(labels[:, 4:].sum(1), np.ones(32))
  np.testing.assert_array_equal(labels[:, :4].argmax(1), labels[:, 4:].argmax(1))
  assert labels[:, 8:].sum() == 0  # classes of the smallest head only


def _square_centre(frame: np.ndarray) -> np.ndarray:
  """(y, x) of the bright square on a torus frame `[h, w]` (circular mean of its pixels)."""
  ys, xs = np.nonzero(frame >= synthetic_device.FOREGROUND[0])
  centre = []
  for coords, size in ((ys, frame.shape[0]), (xs, frame.shape[1])):
    angle = np.angle(np.mean(np.exp(2j * np.pi * (coords + 0.5) / size)))
    centre.append(angle % (2 * np.pi) * size / (2 * np.pi))
  return np.asarray(centre)


def test_motion_square_moves_in_the_direction_of_its_class():
  """The label can be read off the pixels: the displacement's angle is 2π·class/4."""
  config = _config()
  batch = _batch(config, 3, batch=32)
  h = 16
  for clip, label in zip(batch["inputs"], batch["label"].argmax(1)):
    assert (clip.max(axis=-1) >= synthetic_device.FOREGROUND[0]).any(axis=(1, 2)).all()
    move = _square_centre(clip[-1].min(-1)) - _square_centre(clip[0].min(-1))
    move = (move + h / 2) % h - h / 2  # the short way round the torus
    angle = math.atan2(move[0], move[1]) % (2 * math.pi)
    nearest = round(angle / (2 * math.pi / th.NUM_CLASSES)) % th.NUM_CLASSES
    assert nearest == label, (move, label)


def test_validation_and_test_are_a_fixed_padded_set_of_one_view():
  config = _config(**{"dataset_configs.examples_per_subset": {"validation": 10, "test": 1000}})
  assert synthetic_device.eval_examples(config, "validation") == 10
  assert synthetic_device.eval_examples(config, "test") == synthetic_device.EVAL_EXAMPLES
  data_fn = synthetic_device.data_fn(config)
  with jax.set_mesh(_mesh(8)):
    first = [jax.device_get(b) for b in data_fn("validation", 1, process_index=0,
                                                 process_count=8, seed=0)]
    again = [jax.device_get(b) for b in data_fn("validation", 1, process_index=0,
                                                 process_count=8, seed=0)]
  assert len(first) == 2 and first[0]["inputs"].shape == (8, 4, 16, 16, 3)  # one view
  np.testing.assert_array_equal(np.concatenate([b["batch_mask"] for b in first]),
                                [1] * 10 + [0] * 6)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_data_fn_needs_the_mesh_set_by_the_trainer():
  with pytest.raises(RuntimeError, match="made on the mesh set by `jax.set_mesh"):
    synthetic_device.data_fn(_config())("train", 8, process_index=0, process_count=1, seed=0)


def test_prefetch_passes_device_batches_through_untouched():
  config = _config()
  mesh = _mesh(8)
  made = [synthetic_device.make_batch_fn(config, "train", 8, mesh, seed=0)(n) for n in range(3)]
  with device_feed.DeviceFeed(iter(made), mesh, 2, config_facts.batch_dtypes(config)) as feed:
    fed = list(feed)
  assert all(f[k] is m[k] for f, m in zip(fed, made) for k in m)


# ------------------------------------------------------------------------------ config, preflight

def test_k400_config_with_synthetic_device_is_accepted_and_needs_no_tables(tmp_path):
  config = load("k400_fe")
  config.dataset_name = "synthetic_device"
  config.init_from.checkpoint_path = None
  config.dataset_configs.base_dir = str(tmp_path / "no_such_folder")
  config_check.validate_config(config)
  preflight.check_paths(config, str(tmp_path / "run"), "train_and_eval")
  config.dataset_name = "video_tfrecord_dataset"
  with pytest.raises(preflight.UserInputError, match="base_dir: .*no_such_folder is not a folder"):
    preflight.check_paths(config, str(tmp_path / "run"), "train_and_eval")


def test_bad_pattern_and_pattern_on_another_dataset_are_refused():
  config = load("k400_fe")
  config.dataset_configs.synthetic_device_pattern = "motion"
  with pytest.raises(ValueError, match=re.escape(
      "config.dataset_configs.synthetic_device_pattern is only read with "
      "dataset_name='synthetic_device' (dataset_name is 'video_tfrecord_dataset'); remove it")):
    config_check.validate_config(config)
  config.dataset_name = "synthetic_device"
  config.dataset_configs.synthetic_device_pattern = "moving"
  with pytest.raises(ValueError, match=re.escape(
      "config.dataset_configs.synthetic_device_pattern='moving'; valid: ['motion', 'random']")):
    config_check.validate_config(config)


# ------------------------------------------------------------------------------ the trainer

def _train(workdir, config, mode="train_and_eval", devices=1):
  config_check.validate_config(config)
  return train.train_and_evaluate(config, str(workdir), mode=mode,
                                  devices=jax.devices()[:devices])


@pytest.mark.slow
def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
  config = _config(num_training_steps=4, checkpoint_steps=2)
  whole, _ = _train(tmp_path / "whole", config, mode="train")
  cut = copy.deepcopy(config)
  cut.num_training_steps = 2
  _train(tmp_path / "cut", cut, mode="train")
  resumed, _ = _train(tmp_path / "cut", config, mode="train")
  assert th.read_losses(tmp_path / "whole") == th.read_losses(tmp_path / "cut")
  assert len(th.read_losses(tmp_path / "cut")) == 4
  for a, b in zip(jax.tree.leaves(whole["params"]), jax.tree.leaves(resumed["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_two_processes_make_the_batches_of_one(tmp_path):
  """Each process makes its shards of the same global batch: two train as one with 2 devices."""
  config = th.tiny_config(dataset_name="synthetic_device", num_training_steps=4, checkpoint_steps=2)
  _train(tmp_path / "one", config, mode="train", devices=2)  # the worker's config
  train_procs.run(tmp_path / "two", 4, "--synthetic_device", processes=2)
  assert "processes 2 devices 2" in (tmp_path / "two.0.log").read_text()
  one, two = th.read_losses(tmp_path / "one"), th.read_losses(tmp_path / "two")
  assert sorted(two) == [1, 2, 3, 4]
  np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)],
                             rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_motion_is_learnt_well_above_chance(tmp_path):
  config = _config(num_training_steps=200, batch_size=16, eval_batch_size=64, checkpoint=False,
                   log_summary_steps=200, optimizer="adamw",
                   **{"model.dropout_rate": 0.0, "lr_configs.base_learning_rate": 1e-3})
  config.optimizer_configs = ml_collections.ConfigDict({"weight_decay": 0.0})
  _, summary = _train(tmp_path, config)
  assert summary["test"]["num_videos"] == synthetic_device.EVAL_EXAMPLES
  assert summary["test"]["top1"] > 0.6  # chance: 1/4


# ------------------------------------------------------------------------------ without TensorFlow

TINY_K400 = [
    "--config.dataset_name=synthetic_device", "--config.num_training_steps=4",
    "--config.batch_size=4", "--config.eval_batch_size=4", "--config.log_summary_steps=1",
    "--config.checkpoint_steps=2", "--config.init_from.checkpoint_path=None",
    "--config.lr_configs.warmup_epochs=0", "--config.dataset_configs.num_frames=4",
    "--config.dataset_configs.crop_size=16", "--config.dataset_configs.num_classes=4",
    "--config.dataset_configs.examples_per_subset.test=6", "--config.model.hidden_size=16",
    "--config.model.patches.size=(8,8,2)",
] + [f"--config.model.{part}_transformer.{key}={value}" for part in ("spatial", "temporal")
     for key, value in (("num_layers", 1), ("num_heads", 2), ("mlp_dim", 32))]


@pytest.mark.slow
@pytest.mark.parametrize("tensorflow", ["blocked", "installed"])
def test_main_runs_without_importing_tensorflow(tmp_path, tensorflow):
  """The documented command, shrunk: with TensorFlow absent, and with it installed."""
  workdir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, str(train_procs.TESTS / "main_without_tensorflow.py"), tensorflow,
       f"--config={train_procs.REPO / 'configs' / 'k400_fe.py'}", f"--workdir={workdir}",
       *TINY_K400], env=train_procs.worker_env(), cwd=tmp_path, capture_output=True, text=True,
      timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1] == "TENSORFLOW_MODULES_IMPORTED=[]"
  assert "vivit_jax done: step 4 |" in out.stdout and "6 videos x 1 views" in out.stdout
  events = list(workdir.glob("events.out.tfevents.*"))
  if tensorflow == "blocked":  # tensorboard is hidden too: its files are off, said once
    assert out.stderr.count(TB_OFF) == 1, out.stderr[-3000:]
    assert "the tensorboard package does not import here (No module named" in out.stderr
    assert not events
  else:  # written without TensorFlow (metrics.TensorBoardFile)
    assert TB_OFF not in out.stderr and len(events) == 1
  rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "train_loss" in r] == [1, 2, 3, 4]
  results = json.loads((workdir / "eval_results.json").read_text())
  assert results["split"] == "test" and results["num_videos"] == 6 and results["step"] == 4
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == \
      ["2", "4"]
