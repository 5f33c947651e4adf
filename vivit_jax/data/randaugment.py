"""Temporally consistent RandAugment: each layer picks one op and applies it to every frame alike.

`magnitude` is on a 0..30 scale (Scenic configs use 10 to 20); at 30 the ops reach their strongest
setting (rotate 30 degrees, shear 0.3, translate 45% of the side, colour factors 1 +- 0.9, solarize at
0, posterize to 4 bits). Each op's direction (sign) is random.
"""
import math

import tensorflow as tf

MAX_MAGNITUDE = 30.0
_FILL = 128.0


def _affine(frames: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
  """Maps output pixel (x, y) to input (a x + b y + c, d x + e y + f); matrix = [a, b, c, d, e, f]."""
  transform = tf.concat([matrix, tf.zeros([2])], axis=0)[None]
  shape = tf.shape(frames)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=frames, transforms=transform, output_shape=shape[1:3], fill_value=_FILL,
      interpolation="BILINEAR", fill_mode="CONSTANT")


def _rotate(frames, level):
  angle = level * math.radians(30.0)
  shape = tf.cast(tf.shape(frames), tf.float32)
  cy, cx = (shape[1] - 1) / 2, (shape[2] - 1) / 2
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _affine(frames, tf.stack(
      [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy]))


def _shear_x(frames, level):
  return _affine(frames, tf.stack([1.0, level * 0.3, 0.0, 0.0, 1.0, 0.0]))


def _shear_y(frames, level):
  return _affine(frames, tf.stack([1.0, 0.0, 0.0, level * 0.3, 1.0, 0.0]))


def _translate_x(frames, level):
  dx = level * 0.45 * tf.cast(tf.shape(frames)[2], tf.float32)
  return _affine(frames, tf.stack([1.0, 0.0, dx, 0.0, 1.0, 0.0]))


def _translate_y(frames, level):
  dy = level * 0.45 * tf.cast(tf.shape(frames)[1], tf.float32)
  return _affine(frames, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, dy]))


def _blend(a, b, factor):
  """factor 0 → a, 1 → b, beyond extrapolates (PIL ImageEnhance semantics)."""
  return tf.clip_by_value(a + factor * (b - a), 0.0, 255.0)


def _brightness(frames, level):
  return _blend(tf.zeros_like(frames), frames, 1.0 + 0.9 * level)


def _color(frames, level):
  grey = tf.tile(tf.image.rgb_to_grayscale(frames), [1, 1, 1, 3])
  return _blend(grey, frames, 1.0 + 0.9 * level)


def _contrast(frames, level):
  mean = tf.reduce_mean(tf.image.rgb_to_grayscale(frames))
  return _blend(tf.fill(tf.shape(frames), mean), frames, 1.0 + 0.9 * level)


def _sharpness(frames, level):
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  blurred = tf.nn.depthwise_conv2d(frames, kernel, [1, 1, 1, 1], "SAME")
  return _blend(blurred, frames, 1.0 + 0.9 * level)


def _solarize(frames, level):
  threshold = 256.0 - 256.0 * tf.abs(level)
  return tf.where(frames >= threshold, 255.0 - frames, frames)


def _posterize(frames, level):
  bits = tf.cast(tf.round(8.0 - 4.0 * tf.abs(level)), tf.int32)
  shift = 8 - bits
  as_int = tf.cast(frames, tf.int32)
  return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(as_int, shift), shift), tf.float32)


def _autocontrast(frames, level):
  del level
  lo = tf.reduce_min(frames, axis=[0, 1, 2], keepdims=True)
  hi = tf.reduce_max(frames, axis=[0, 1, 2], keepdims=True)
  scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1e-3), 1.0)
  return tf.where(hi > lo, (frames - lo) * scale, frames)


def _identity(frames, level):
  del level
  return frames


OPS = (_identity, _autocontrast, _rotate, _shear_x, _shear_y, _translate_x, _translate_y,
       _brightness, _color, _contrast, _sharpness, _solarize, _posterize)


def rand_augment(frames: tf.Tensor, seed: tf.Tensor, num_layers: int,
                 magnitude: float) -> tf.Tensor:
  """Applies `num_layers` random ops to frames float32 [t, h, w, 3] in [0, 255], alike on all."""
  if not 0 <= magnitude <= MAX_MAGNITUDE:
    raise ValueError(f"augmentation_params.rand_augment_magnitude={magnitude} not in [0, 30]")
  seeds = tf.random.experimental.stateless_split(seed, 2 * num_layers)
  fraction = magnitude / MAX_MAGNITUDE
  for layer in range(num_layers):
    op = tf.random.stateless_uniform([], seeds[2 * layer], 0, len(OPS), dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], seeds[2 * layer + 1]) < 0.5, -1.0, 1.0)
    level = sign * fraction
    frames = tf.switch_case(op, [lambda f=f: f(frames, level) for f in OPS])
    frames = tf.clip_by_value(frames, 0.0, 255.0)
  return frames
