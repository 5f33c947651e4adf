"""Synthetic motion set: the label is the motion only; deterministic; generated once, atomically."""
import json
import os

import numpy as np
import pytest

from tests import data_fixtures as fx
from vivit_jax.data import build_dataset
from vivit_jax.data import synthetic


def _centre(frame: np.ndarray) -> np.ndarray:
  """Centre of the bright shape on the 32-pixel torus (circular mean; background < 70 + noise)."""
  weight = np.clip(frame.astype(float).mean(-1) - 100.0, 0, None)
  angles = np.exp(2j * np.pi * (np.arange(32) + 0.5) / 32)
  y = np.angle((weight.sum(1) * angles).sum()) * 32 / (2 * np.pi)
  x = np.angle((weight.sum(0) * angles).sum()) * 32 / (2 * np.pi)
  return np.array([y, x]) % 32


def _wrapped(delta: np.ndarray) -> np.ndarray:
  return (delta + 16) % 32 - 16


def test_label_is_the_motion_only():
  directions = {0: (0, 1), 1: (0, -1), 2: (1, 0), 3: (-1, 0)}
  for i in range(48):
    label = i % 8
    clip = synthetic.render_clip(np.random.default_rng([5, i]), label)
    assert clip.shape == (16, 32, 32, 3) and clip.dtype == np.uint8
    path = np.stack([_centre(f) for f in clip])
    steps = _wrapped(np.diff(path, axis=0))
    dy, dx = directions[label // 2]
    speed = (1.0, 2.0)[label % 2]
    np.testing.assert_allclose(steps.mean(0), [dy * speed, dx * speed], atol=0.1)
    area = (clip.astype(float).mean(-1) > 100).sum(axis=(1, 2))
    assert area.min() >= 20 and area.max() - area.min() <= 0.25 * area.mean()  # Always whole.
  a = synthetic.render_clip(np.random.default_rng([1, 2]), 3)
  np.testing.assert_array_equal(a, synthetic.render_clip(np.random.default_rng([1, 2]), 3))
  # One frame does not tell the class: in every class, the shape's position in a given frame is
  # spread evenly over the frame (mean close to the middle, every quadrant used).
  for label in range(8):
    centres = np.stack([_centre(synthetic.render_clip(np.random.default_rng([9, i]), label)[8])
                        for i in range(40)])
    quadrants = {(int(y // 16), int(x // 16)) for y, x in centres}
    assert len(quadrants) == 4, label


def _small(base_dir, **kw):
  dc = synthetic.default_dataset_configs(str(base_dir))
  dc.synthetic.update(dict(num_train=24, num_validation=10, num_test=6, **kw))
  return dc


def test_ensure_dataset_generates_once_and_the_pipeline_reads_it(tmp_path):
  dc = _small(tmp_path / "syn")
  with pytest.raises(TimeoutError, match="did not appear"):
    synthetic.ensure_dataset(dc, process_index=1, timeout_s=0.5)  # Others wait for process 0.
  assert synthetic.ensure_dataset(dc, process_index=0)
  files = sorted(os.listdir(tmp_path / "syn"))
  assert files == sorted([synthetic.MARKER, "label_map.json"] +
                         [f"train-{i:05d}-of-00004" for i in range(4)] +
                         [f"validation-{i:05d}-of-00002" for i in range(2)] +
                         [f"test-{i:05d}-of-00002" for i in range(2)])
  marker = json.loads((tmp_path / "syn" / synthetic.MARKER).read_text())
  assert marker["counts"] == {"train": 24, "validation": 10, "test": 6}
  assert not synthetic.ensure_dataset(dc, process_index=0)
  assert not synthetic.ensure_dataset(dc, process_index=1)
  with pytest.raises(ValueError, match="made with .* delete the folder"):
    synthetic.ensure_dataset(_small(tmp_path / "syn", seed=1), process_index=0)
  dc.synthetic = None
  assert not synthetic.ensure_dataset(dc, process_index=0)

  train = next(iter(build_dataset(dc, "train", 8, seed=0)))
  assert train["inputs"].shape == (8, 8, 32, 32, 3) and train["label"].shape == (8, 8)
  assert train["inputs"].min() >= -1 and train["inputs"].max() <= 1
  test = fx.collect(build_dataset(dc, "test", 4))
  labels = np.concatenate([b["label"].argmax(-1)[b["batch_mask"] > 0] for b in test])
  assert len(test) == 2 and sorted(labels) == [0, 1, 2, 3, 4, 5]
  assert json.loads((tmp_path / "syn" / "label_map.json").read_text())["up_fast"] == 7


def test_generation_is_deterministic(tmp_path):
  for name in ("a", "b"):
    settings = synthetic.default_generation_settings()
    settings.update(dict(num_train=4, num_validation=2, num_test=2))
    synthetic.generate(str(tmp_path / name), settings)
  for f in ("train-00001-of-00004", "test-00000-of-00002"):
    assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
