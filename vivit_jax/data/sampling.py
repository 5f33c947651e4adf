"""Temporal sampling: which frame indices a clip uses, computed before any JPEG is decoded.

Modes (T = frames in the video, span = (num_frames - 1) * stride + 1):
  * 'random' (train): start uniform in [0, T - span]; for a video shorter than the window, uniform in
    [0, T - 1].
  * 'central' (validation): start = max(T - span, 0) // 2.
  * 'uniform' (test): `num_clips` starts evenly spaced over [0, max(T - span, 0)] (rounded); one clip is
    the central one.
Indices are `(start + arange(num_frames) * stride) mod T`, so short videos wrap around.
"""
import tensorflow as tf

MODES = ("random", "central", "uniform")


def window_span(num_frames: int, stride: int) -> int:
  """Frames covered by one window of `num_frames` frames taken every `stride` frames."""
  return (num_frames - 1) * stride + 1


def sample_indices(num_video_frames: tf.Tensor, num_frames: int, stride: int, mode: str, *,
                   seed: tf.Tensor | None = None, num_clips: int = 1) -> tf.Tensor:
  """Frame indices of the sampled clips.

  Args:
    num_video_frames: int scalar T > 0.
    num_frames: frames per clip.
    stride: step between sampled frames.
    mode: 'random', 'central' or 'uniform' (see module docstring).
    seed: int [2] stateless seed, required for 'random'.
    num_clips: clips for 'uniform' (1 for the other modes).

  Returns:
    int32 [num_clips, num_frames] indices into the video's frames.
  """
  if mode not in MODES:
    raise ValueError(f"sampling mode {mode!r} not in {MODES}")
  if num_frames < 1 or stride < 1 or num_clips < 1:
    raise ValueError(
        f"num_frames={num_frames}, stride={stride}, num_clips={num_clips} must be >= 1")
  t = tf.cast(num_video_frames, tf.int32)
  span = window_span(num_frames, stride)
  last_start = tf.maximum(t - span, 0)
  if mode == "random":
    if seed is None:
      raise ValueError("mode='random' needs a seed")
    high = tf.where(t >= span, last_start, t - 1)
    starts = tf.random.stateless_uniform([1], seed, minval=0, maxval=high + 1, dtype=tf.int32)
  elif mode == "central" or num_clips == 1:
    starts = tf.reshape(last_start // 2, [1])
  else:
    positions = tf.linspace(0.0, tf.cast(last_start, tf.float32), num_clips)
    starts = tf.cast(tf.round(positions), tf.int32)
  offsets = tf.range(num_frames, dtype=tf.int32) * stride
  return (starts[:, None] + offsets[None, :]) % t
