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


def _order_clips(seed: int) -> list[np.ndarray]:
  """The clips of all 6 order classes drawn with equal generators."""
  return [synthetic.render_order_clip(np.random.default_rng([seed]), label) for label in range(6)]


def _colours(clip: np.ndarray) -> list[int]:
  """The colour shown in each frame (the dominant channel of its bright pixels), -1 if blank."""
  return [int(frame[frame.max(-1) > 150].astype(float).mean(0).argmax())
          if (frame.max(-1) > 150).any() else -1 for frame in clip]


def test_order_class_is_the_order_of_the_colours():
  for seed in range(20):
    for label, clip in enumerate(_order_clips(seed)):
      assert clip.shape == (16, 32, 32, 3) and clip.dtype == np.uint8
      colours = _colours(clip)
      runs = [k for t, k in enumerate(colours) if k >= 0 and (t == 0 or k != colours[t - 1])]
      assert "_".join(synthetic.ORDER_COLOURS[k] for k in runs) == synthetic.ORDER_CLASS_NAMES[label]
      assert min(colours.count(k) for k in range(3)) >= synthetic.ORDER_MIN_FRAMES
      assert colours[0] >= 0 and colours[-1] >= 0 and 2 <= colours.count(-1) <= 7
  np.testing.assert_array_equal(synthetic.render_order_clip(np.random.default_rng([4]), 2),
                                synthetic.render_order_clip(np.random.default_rng([4]), 2))
  assert len(set(synthetic.ORDER_CLASS_NAMES)) == 6


def test_order_class_is_no_function_of_the_set_of_frames():
  for seed in range(20):
    clips = _order_clips(seed)
    # The unordered set of frames is the same for every class, bit for bit: a frame average (or
    # any function of the set) gives one answer for all 6 classes, i.e. chance on a balanced set.
    sets = [sorted(frame.tobytes() for frame in clip) for clip in clips]
    assert all(s == sets[0] for s in sets)
    sums = [clip.astype(np.int64).sum(0) for clip in clips]
    assert all(np.array_equal(s, sums[0]) for s in sums)


def test_order_class_is_no_function_of_one_frame_or_one_tubelet():
  # A frame shows one coloured shape or none (its place, size and noise do not depend on the
  # class); a 2-frame tubelet (frames 2j, 2j + 1) at most one colour. At every time index, what a
  # frame or a tubelet shows there is seen in clips of at least 2 classes: neither tells the class.
  seen: dict = {}
  for i in range(1200):
    label = i % 6
    colours = _colours(synthetic.render_order_clip(np.random.default_rng([7, i]), label))
    for t in range(16):
      seen.setdefault(("frame", t, colours[t]), set()).add(label)
    for j in range(8):
      seen.setdefault(("tubelet", j, tuple(colours[2 * j:2 * j + 2])), set()).add(label)
  assert min(len(labels) for labels in seen.values()) >= 2, min(seen.items(), key=lambda x: len(x[1]))
  assert all(len(seen[("frame", t, k)]) >= 2 for t in range(16) for k in range(3))  # all seen


def test_order_layout_covers_every_split():
  layouts = [synthetic.order_layout(np.random.default_rng([3, i]), 16) for i in range(3000)]
  for lengths, gaps in layouts:
    assert lengths.sum() + gaps.sum() == 16
    assert lengths.min() >= synthetic.ORDER_MIN_FRAMES and gaps.min() >= synthetic.ORDER_MIN_GAP
  assert len({tuple(l) + tuple(g) for l, g in layouts}) == 126  # C(5 + 4, 4): 5 spare frames
  with pytest.raises(ValueError, match="num_frames=10 is too short .* needs at least 11"):
    synthetic.order_layout(np.random.default_rng(0), 10)


def test_order_set_generation_and_reading(tmp_path):
  dc = synthetic.default_dataset_configs(str(tmp_path / "order"), task="order")
  assert (dc.num_classes, dc.num_frames, dc.stride) == (6, 16, 1)
  dc.synthetic.update(dict(num_train=12, num_validation=6, num_test=6))
  assert synthetic.ensure_dataset(dc, process_index=0)
  label_map = json.loads((tmp_path / "order" / "label_map.json").read_text())
  assert label_map == {name: i for i, name in enumerate(synthetic.ORDER_CLASS_NAMES)}
  test = fx.collect(build_dataset(dc, "test", 6))
  assert test[0]["inputs"].shape == (6, 1, 16, 32, 32, 3)  # 1 view of all 16 frames
  assert sorted(test[0]["label"].argmax(-1)) == [0, 1, 2, 3, 4, 5]
  motion = synthetic.default_dataset_configs(str(tmp_path / "order"))
  motion.synthetic.update(dict(num_train=12, num_validation=6, num_test=6))
  with pytest.raises(ValueError, match="'task': 'order'.*'task': 'motion'"):
    synthetic.ensure_dataset(motion, process_index=0)
  bad = synthetic.default_generation_settings("order")
  bad.num_classes = 8
  with pytest.raises(ValueError, match="num_classes=8: the order task has exactly 6 classes"):
    synthetic.generate(str(tmp_path / "bad"), bad)
  with pytest.raises(ValueError, match=r"synthetic.task='colour'; valid: \['motion', 'order'\]"):
    synthetic.default_generation_settings("colour")


def test_sets_made_before_the_task_key_still_load(tmp_path):
  dc = _small(tmp_path / "old")
  assert synthetic.ensure_dataset(dc, process_index=0)
  marker = tmp_path / "old" / synthetic.MARKER
  old = json.loads(marker.read_text())
  del old["settings"]["task"]
  marker.write_text(json.dumps(old))
  assert not synthetic.ensure_dataset(dc, process_index=0)
