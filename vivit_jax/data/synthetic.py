"""Synthetic datasets. Motion: a shape moving in one of 4 directions at one of 2 speeds (8 classes).

Every clip: 16 frames of 32x32 on a random dark background with per-frame pixel noise; one square or
disc (side 6 to 8 px, random bright colour, anti-aliased edges at sub-pixel positions) starts at a
uniformly random position and moves in a straight line at constant velocity. The frame is a torus (what
leaves on the right comes back on the left, the same for every class; no bounce), so the position in
any frame is uniform whatever the class: a single frame cannot tell the class. Class = direction * 2 +
speed with directions (right, left, down, up) and speeds (1, 2 px per frame); any two frames up to 7
steps apart tell it unambiguously (the displacement stays under half the frame).
Horizontal flipping would swap left and right, so its configs set `random_flip=False`.

Deterministic by seed: clip i of a split depends only on (seed, split, i). Written as DMVR TFRecords
(`train-0000k-of-00004`, `validation-...-of-00002`, `test-...-of-00002`) plus `label_map.json`.

The order task (`task='order'`, 6 classes): a red, a green and a blue shape (square or disc,
side 12 to 16 px, each at its own uniformly random place) are shown one after the other, each for at
least 3 consecutive frames, with at least 1 blank frame between two colours, filling the 16 frames.
The class is the order of the colours (`red_green_blue`, `red_blue_green`, ...). The run lengths do
not depend on the class, so whatever the class a clip holds the same frames (see
`render_order_clip`), only their order differs: no function of the unordered set of frames (a frame
average) tells the class. One frame, or one 2-frame tubelet, shows at most one colour, which leaves
at least 2 classes open; only frames far apart in time tell the class.

CLI: `python -m vivit_jax.data.synthetic --output_dir=DIR [--task=motion|order] [--num_train=3000]
[--seed=0]`.
"""
import argparse
import itertools
import json
import os
import shutil
import sys
import time
from typing import Optional

from absl import logging
import ml_collections
import jax
import numpy as np
import tensorflow as tf

from vivit_jax.data import tfrecord

DIRECTIONS = (("right", (0.0, 1.0)), ("left", (0.0, -1.0)), ("down", (1.0, 0.0)),
              ("up", (-1.0, 0.0)))
SPEEDS = (("slow", 1.0), ("fast", 2.0))
CLASS_NAMES = tuple(f"{d}_{s}" for d, _ in DIRECTIONS for s, _ in SPEEDS)
MARKER = "_SYNTHETIC_COMPLETE.json"
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
_SHARDS = {"train": 4, "validation": 2, "test": 2}


def default_generation_settings(task: str = "motion") -> ml_collections.ConfigDict:
  """`dataset_configs.synthetic`: what to generate (`task`: 'motion' or 'order')."""
  return ml_collections.ConfigDict({
      "task": task, "num_classes": len(task_of({"task": task})[1]), "num_train": 3000,
      "num_validation": 400, "num_test": 400, "num_frames": 16, "frame_size": 32,
      "noise_std": 8.0, "jpeg_quality": 90, "seed": 0,
  })


def shape_cover(size: int, y: float, x: float, side: float, disc: bool) -> np.ndarray:
  """Fraction of each pixel of a `size`² torus covered by a disc or square centred at (y, x).

  float [size, size] in [0, 1]; edges anti-aliased at sub-pixel positions.
  """
  grid = np.arange(size, dtype=np.float64) + 0.5  # Pixel centres.
  # Signed distance from each pixel centre to the shape's centre, the short way round.
  ddy = (grid - y + size / 2) % size - size / 2
  ddx = (grid - x + size / 2) % size - size / 2
  if disc:
    return np.clip(side / 2 + 0.5 - np.hypot(ddy[:, None], ddx[None, :]), 0.0, 1.0)
  rows = np.clip(side / 2 + 0.5 - np.abs(ddy), 0.0, 1.0)  # Area of each pixel inside the square.
  cols = np.clip(side / 2 + 0.5 - np.abs(ddx), 0.0, 1.0)
  return rows[:, None] * cols[None, :]


def render_clip(rng: np.random.Generator, label: int, num_frames: int = 16, size: int = 32,
                noise_std: float = 8.0) -> np.ndarray:
  """One clip of class `label`: uint8 [num_frames, size, size, 3].

  The frame is a torus: a shape leaving on one side comes back on the other, so every position is
  equally likely in every frame for every class.
  """
  (_, (dy, dx)), (_, speed) = DIRECTIONS[label // 2], SPEEDS[label % 2]
  if 2 * speed >= size / 2:
    raise ValueError(f"frame_size={size} too small for {speed} px/frame (motion would alias)")
  side = rng.uniform(6.0, 8.0)
  disc = rng.random() < 0.5
  y0, x0 = rng.uniform(0.0, size, size=2)  # Centre of the shape in the first frame.
  background = rng.uniform(0, 70, size=3)
  colour = rng.uniform(130, 255, size=3)
  frames = np.empty((num_frames, size, size, 3), np.float64)
  for t in range(num_frames):
    cover = shape_cover(size, y0 + dy * speed * t, x0 + dx * speed * t, side, disc)
    frames[t] = background + cover[:, :, None] * (colour - background)
  frames += rng.normal(0.0, noise_std, size=frames.shape)
  return np.clip(np.round(frames), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- the order task

# Three coloured shapes shown one after the other; the class is the order of their colours.
ORDER_COLOURS = ("red", "green", "blue")
ORDERS = tuple(itertools.permutations(range(len(ORDER_COLOURS))))
ORDER_CLASS_NAMES = tuple("_".join(ORDER_COLOURS[k] for k in order) for order in ORDERS)
ORDER_MIN_FRAMES = 3  # Each colour is shown for at least this many consecutive frames...
ORDER_MIN_GAP = 1  # ...then at least this many blank frames: no 2 frames in a row show 2 colours.
ORDER_SIDE = (12.0, 16.0)  # Side or diameter in pixels: large, so that the colour is never in doubt.


def order_layout(rng: np.random.Generator, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """(frames of each colour, indexed by colour not by time; blank frames after the 1st and 2nd).

  Every split of the clip into such runs is equally likely; the runs fill the clip.
  """
  num = len(ORDER_COLOURS)
  slack = num_frames - num * ORDER_MIN_FRAMES - (num - 1) * ORDER_MIN_GAP
  if slack < 0:
    raise ValueError(f"synthetic.num_frames={num_frames} is too short for {num} colours of at "
                     f"least {ORDER_MIN_FRAMES} frames {ORDER_MIN_GAP} apart: needs at least "
                     f"{num_frames - slack}")
  # The spare frames split into 2 * num - 1 runs (colours, then gaps): stars and bars.
  bins = 2 * num - 1
  bars = np.sort(rng.choice(slack + bins - 1, size=bins - 1, replace=False))
  extra = np.diff(np.concatenate([[-1], bars, [slack + bins - 1]])) - 1
  return extra[:num] + ORDER_MIN_FRAMES, extra[num:] + ORDER_MIN_GAP


def render_order_clip(rng: np.random.Generator, label: int, num_frames: int = 16, size: int = 32,
                      noise_std: float = 8.0) -> np.ndarray:
  """One clip of the order task: uint8 [num_frames, size, size, 3].

  Everything drawn from `rng` is the same whatever the label: how many frames each colour is
  shown, its shape (place, size, square or disc, shade), the blank gaps and every frame's noise.
  The label only decides which colour comes first, second and third, so clips of all 6 classes
  drawn with equal generators hold the same frames, bit for bit, in different orders.
  """
  lengths, gaps = order_layout(rng, num_frames)
  background = rng.uniform(0, 70, size=3)
  runs = []  # Per colour: its frames.
  for k, length in enumerate(lengths):
    colour = rng.uniform(0, 60, size=3)
    colour[k] = rng.uniform(170, 255)
    y, x = rng.uniform(0.0, size, size=2)
    cover = shape_cover(size, y, x, rng.uniform(*ORDER_SIDE), rng.random() < 0.5)
    frame = background + cover[:, :, None] * (colour - background)
    runs.append(frame + rng.normal(0.0, noise_std, size=(length, size, size, 3)))
  blanks = [background + rng.normal(0.0, noise_std, size=(g, size, size, 3)) for g in gaps]
  first, second, third = ORDERS[label]
  frames = np.concatenate([runs[first], blanks[0], runs[second], blanks[1], runs[third]])
  return np.clip(np.round(frames), 0, 255).astype(np.uint8)


# Per `dataset_configs.synthetic.task`: the renderer and the class names (label i = name i).
TASKS = {"motion": (render_clip, CLASS_NAMES), "order": (render_order_clip, ORDER_CLASS_NAMES)}


def task_of(settings) -> tuple:
  """`(render_fn, class_names)` of `settings.task` (`motion` or `order`)."""
  task = settings.get("task", "motion")
  if task not in TASKS:
    raise ValueError(f"synthetic.task={task!r}; valid: {sorted(TASKS)}")
  return TASKS[task]


@tf.function
def _encode_frames(frames: tf.Tensor, quality: int) -> tf.Tensor:
  return tf.map_fn(lambda f: tf.io.encode_jpeg(f, quality=quality), frames,
                   fn_output_signature=tf.string)


def split_clips(settings, split: str, shard: int = 0, num_shards: int = 1):
  """Yields (i, label, JPEG bytes per frame) of clips i = shard, shard + num_shards, ... of a split.

  The one source of the clips, whatever the file format (TFRecords here, TFDS in synthetic_tfds).
  """
  count = settings[f"num_{split}"]
  for i in range(shard, count, num_shards):
    rng = np.random.default_rng([settings.seed, _SPLIT_IDS[split], i])
    label = i % settings.num_classes
    render, _ = task_of(settings)
    frames = render(rng, label, settings.num_frames, settings.frame_size, settings.noise_std)
    yield i, label, _encode_frames(tf.constant(frames), settings.jpeg_quality).numpy().tolist()


def _split_records(settings, split: str, shard: int, num_shards: int):
  _, names = task_of(settings)
  for i, label, jpegs in split_clips(settings, split, shard, num_shards):
    yield tfrecord.make_clip_example(jpegs, [label], label_text=names[label],
                                     context={tfrecord.FILENAME_KEY: f"synthetic/{split}/{i}"})


def generate(output_dir: str, settings: Optional[ml_collections.ConfigDict] = None) -> dict:
  """Writes every split into `output_dir` (files first moved in one by one, the marker last).

  Returns:
    {split: number of clips}.
  """
  settings = settings or default_generation_settings()
  _, names = task_of(settings)
  if settings.num_classes != len(names):
    raise ValueError(f"synthetic.num_classes={settings.num_classes}: the "
                     f"{settings.get('task', 'motion')} task has exactly {len(names)} classes "
                     f"{names}")
  start = time.time()
  tf.io.gfile.makedirs(output_dir)
  for stale in tf.io.gfile.glob(os.path.join(output_dir, ".tmp-*")):  # Left by a killed run.
    shutil.rmtree(stale, ignore_errors=True)
  tmp = os.path.join(output_dir, f".tmp-{os.getpid()}")
  tf.io.gfile.makedirs(tmp)
  counts = {}
  try:
    for split, num_shards in _SHARDS.items():
      counts[split] = 0
      for shard in range(num_shards):
        name = f"{split}-{shard:05d}-of-{num_shards:05d}"
        counts[split] += tfrecord.write_records_atomically(
            os.path.join(tmp, name), _split_records(settings, split, shard, num_shards))
      logging.info("synthetic: %s, %d clips (%.1f s)", split, counts[split], time.time() - start)
    with open(os.path.join(tmp, "label_map.json"), "w") as f:
      json.dump({name: i for i, name in enumerate(names)}, f, indent=1)
    for name in sorted(os.listdir(tmp)):
      os.replace(os.path.join(tmp, name), os.path.join(output_dir, name))
    marker = {"settings": settings.to_dict(), "counts": counts}
    with open(os.path.join(tmp, MARKER), "w") as f:
      json.dump(marker, f, indent=1, sort_keys=True)
    os.replace(os.path.join(tmp, MARKER), os.path.join(output_dir, MARKER))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.info("synthetic: wrote %s to %s in %.1f s", counts, output_dir, time.time() - start)
  return counts


def ensure_dataset(dataset_configs, *, process_index: Optional[int] = None,
                   timeout_s: float = 1800.0) -> bool:
  """Generates the synthetic set under `dataset_configs.base_dir` if configured and missing.

  With `dataset_configs.tfds_name`, the same set is prepared as a TFDS dataset under `tfds_data_dir`.

  Only process 0 writes; other processes wait for the completion marker.

  Returns:
    True if this call generated the data.

  Raises:
    ValueError: if existing data was generated with other settings.
    TimeoutError: if a non-zero process waited `timeout_s` without seeing the marker.
  """
  settings = dataset_configs.get("synthetic")
  if not settings:
    return False
  if dataset_configs.get("tfds_name"):  # The same clips, prepared as a TFDS dataset.
    from vivit_jax.data import synthetic_tfds  # pylint: disable=g-import-not-at-top  (a cycle)
    base_dir = synthetic_tfds.marker_dir(dataset_configs)
    write = lambda _, s: synthetic_tfds.prepare(dataset_configs.tfds_data_dir, s)
  else:
    base_dir, write = dataset_configs.get("base_dir"), generate
  if not base_dir:
    raise ValueError("dataset_configs.base_dir is required with dataset_configs.synthetic")
  marker = os.path.join(base_dir, MARKER)
  wanted = default_generation_settings(settings.get("task", "motion"))
  wanted.update(dict(settings))
  if process_index is None:
    process_index = jax.process_index()
  generated = False
  if not os.path.exists(marker):
    if process_index == 0:
      logging.info("synthetic: generating %s into %s", wanted.to_dict(), base_dir)
      write(base_dir, wanted)
      generated = True
    else:
      deadline = time.time() + timeout_s
      while not os.path.exists(marker):
        if time.time() > deadline:
          raise TimeoutError(f"process {process_index}: {marker} did not appear in {timeout_s} s")
        time.sleep(1.0)
  with open(marker) as f:
    found = {"task": "motion", **json.load(f)["settings"]}  # Sets made before 'task' existed.
  if found != wanted.to_dict():
    raise ValueError(f"{base_dir} holds a synthetic set made with {found}, but "
                     f"dataset_configs.synthetic asks for {wanted.to_dict()}: delete the folder or "
                     "choose another base_dir")
  return generated


def default_dataset_configs(base_dir: str, task: str = "motion") -> ml_collections.ConfigDict:
  """The full `dataset_configs` for the synthetic set of `task` stored in `base_dir`.

  Motion: 8 frames at stride 2 (any two frames tell the class). Order: all 16 frames at stride 1
  (the flashes are spread over the whole clip and last 2 frames each).
  """
  settings = default_generation_settings(task)
  order = task == "order"
  return ml_collections.ConfigDict({
      "base_dir": base_dir,
      "tables": {"train": f"train@{_SHARDS['train']}",
                 "validation": f"validation@{_SHARDS['validation']}",
                 "test": f"test@{_SHARDS['test']}"},
      "examples_per_subset": {"train": settings.num_train, "validation": settings.num_validation,
                              "test": settings.num_test},
      "num_classes": settings.num_classes,
      "num_frames": settings.num_frames if order else 8,
      "stride": 1 if order else 2,
      "min_resize": settings.frame_size,
      "crop_size": settings.frame_size,
      "zero_centering": True,
      "num_test_clips": 1,
      "do_three_spatial_crops": False,
      "random_flip": False,  # Flipping would swap the 'left' and 'right' classes.
      "augmentation_params": {"do_jitter_scale": False, "do_color_augment": False},
      "synthetic": settings,
  })


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", required=True)
  for key, value in default_generation_settings().items():
    parser.add_argument(f"--{key}", type=type(value),
                        default=None if key == "num_classes" else value)  # Follows --task.
  args = parser.parse_args(argv)
  settings = default_generation_settings(args.task)
  settings.update({k: getattr(args, k) for k in settings.keys() if getattr(args, k) is not None})
  logging.set_verbosity(logging.INFO)
  counts = generate(args.output_dir, settings)
  print(f"Wrote {counts} to {args.output_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
