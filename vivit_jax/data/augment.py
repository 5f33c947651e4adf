"""Spatial processing and augmentation of clips.

Host side (TensorFlow, inside tf.data): every op takes frames float32 `[t, h, w, 3]` in [0, 255] and
draws its randomness from a stateless seed, once per clip, so every frame of a clip gets the same crop,
flip, colour change and erased box. The device-side batch mixing is in `mixing.py`.

Cropping is done in source coordinates: "resize the short side to `min_resize * scale`, then take a
`crop_size` square" is computed as "take the matching square of the decoded frame, resize it to
`crop_size`", which resizes far fewer pixels and is a no-op when the stored frames already have the
target size.
"""
from typing import Sequence

import tensorflow as tf


def _uniform(seed, minval=0.0, maxval=1.0):
  return tf.random.stateless_uniform([], seed, minval=minval, maxval=maxval)


def crop_windows(height: tf.Tensor, width: tf.Tensor, min_resize: int, crop_size: int,
                 mode: str, *, scale: tf.Tensor | float = 1.0,
                 seed: tf.Tensor | None = None) -> tf.Tensor:
  """Square crop boxes `[n, 3]` = (y, x, side) in source pixels.

  The frame is (conceptually) resized so its short side is `min_resize * scale`; the box is the
  `crop_size` square of that resized frame, mapped back to source pixels.

  Args:
    height, width: source frame size.
    min_resize: short side after resizing.
    crop_size: output side.
    mode: 'random' (one box, uniform position), 'central' (one box), or 'three' (left/top, centre,
      right/bottom along the long side; centred along the short side).
    scale: scale jitter factor (>= crop_size / min_resize keeps the box inside the frame).
    seed: stateless seed for 'random'.
  """
  short = tf.cast(tf.minimum(height, width), tf.float32)
  side = tf.cast(tf.round(crop_size * short / (min_resize * tf.cast(scale, tf.float32))), tf.int32)
  side = tf.clip_by_value(side, 1, tf.minimum(height, width))
  room_y, room_x = height - side, width - side
  if mode == "random":
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    y = tf.random.stateless_uniform([], seed_y, 0, room_y + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], seed_x, 0, room_x + 1, dtype=tf.int32)
    return tf.stack([y, x, side])[None]
  if mode == "central":
    return tf.stack([room_y // 2, room_x // 2, side])[None]
  if mode == "three":
    # Three offsets along the longer side; centred along the shorter one.
    along = tf.stack([0, tf.maximum(room_y, room_x) // 2, tf.maximum(room_y, room_x)])
    across = tf.fill([3], tf.minimum(room_y, room_x) // 2)
    ys, xs = tf.cond(height >= width, lambda: (along, across), lambda: (across, along))
    return tf.stack([ys, xs, tf.fill([3], side)], axis=1)
  raise ValueError(f"crop mode {mode!r} not in ('random', 'central', 'three')")


def crop_and_resize(frames: tf.Tensor, box: tf.Tensor, crop_size: int) -> tf.Tensor:
  """frames [t, h, w, c], box (y, x, side) → [t, crop_size, crop_size, c] float32."""
  y, x, side = box[0], box[1], box[2]
  crop = tf.cast(frames[:, y:y + side, x:x + side, :], tf.float32)
  out = tf.cond(
      side == crop_size, lambda: crop,
      lambda: tf.image.resize(crop, [crop_size, crop_size], method="bilinear"))
  return tf.ensure_shape(out, [None, crop_size, crop_size, None])


def scale_factor(seed: tf.Tensor, min_factor: float, max_factor: float, prob: float) -> tf.Tensor:
  """Scale jitter: U[min_factor, max_factor] with probability `prob`, else 1."""
  seed_p, seed_s = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  return tf.where(_uniform(seed_p) < prob, _uniform(seed_s, min_factor, max_factor), 1.0)


def random_flip(frames: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Flips every frame left-right with probability 1/2 (never use where left/right is the label)."""
  return tf.cond(_uniform(seed) < 0.5, lambda: tf.reverse(frames, axis=[2]), lambda: frames)


def color_augment(frames: tf.Tensor, seed: tf.Tensor, prob_color_augment: float,
                  prob_color_drop: float) -> tf.Tensor:
  """Brightness, contrast, saturation and hue jitter (prob_color_augment), then grey (prob_color_drop).

  One set of factors per clip: the same change on every frame.
  """
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 7))
  x = frames / 255.0

  def jitter(x):
    x = x + _uniform(seeds[1], -32.0 / 255, 32.0 / 255)
    x = tf.image.adjust_saturation(x, _uniform(seeds[2], 0.6, 1.4))
    x = tf.image.adjust_contrast(x, _uniform(seeds[3], 0.6, 1.4))
    x = tf.image.adjust_hue(x, _uniform(seeds[4], -0.2, 0.2))
    return tf.clip_by_value(x, 0.0, 1.0)

  x = tf.cond(_uniform(seeds[0]) < prob_color_augment, lambda: jitter(x), lambda: x)
  x = tf.cond(_uniform(seeds[5]) < prob_color_drop,
              lambda: tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 1, 3]), lambda: x)
  return x * 255.0


def random_erasing(frames: tf.Tensor, seed: tf.Tensor, prob: float,
                   area_range: Sequence[float] = (0.02, 1 / 3),
                   aspect_range: Sequence[float] = (0.3, 3.3)) -> tf.Tensor:
  """With probability `prob`, covers one box with uniform noise: the same box and noise on every
  frame, like a static occluder."""
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
  shape = tf.shape(frames)
  h, w = shape[1], shape[2]
  area = _uniform(seeds[1], *area_range) * tf.cast(h * w, tf.float32)
  log_aspect = _uniform(seeds[2], tf.math.log(aspect_range[0]), tf.math.log(aspect_range[1]))
  aspect = tf.exp(log_aspect)
  bh = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), 1, h)
  bw = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), 1, w)
  y0 = tf.cast(_uniform(seeds[3]) * tf.cast(h - bh + 1, tf.float32), tf.int32)
  x0 = tf.cast(_uniform(seeds[4]) * tf.cast(w - bw + 1, tf.float32), tf.int32)
  rows = tf.range(h)[:, None]
  cols = tf.range(w)[None, :]
  inside = (rows >= y0) & (rows < y0 + bh) & (cols >= x0) & (cols < x0 + bw)
  noise = tf.random.stateless_uniform(tf.concat([[1], shape[1:]], 0), seeds[5], 0.0, 255.0)
  erased = tf.where(inside[None, :, :, None], noise, frames)
  return tf.cond(_uniform(seeds[0]) < prob, lambda: erased, lambda: frames)
