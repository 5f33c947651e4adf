"""Pixel values: the one normalisation rule, for tf.data on the host and the jitted step.

Clips leave the input pipeline either normalised (float, as Scenic and DMVR do) or, with
`data_dtype_str='uint8'` (our configs' default), as uint8 pixels in [0, 255]: a quarter of the
bytes of float32 to copy to the devices, normalised there by `model_input` inside the step.
"""
import numpy as np


def normalize(frames, zero_centering: bool):
  """Float pixels in [0, 255] → [-1, 1] (`dataset_configs.zero_centering`) or [0, 1].

  Plain arithmetic, so it takes a tf.Tensor, a numpy array or a jax.Array alike.
  """
  return frames / 127.5 - 1.0 if zero_centering else frames / 255.0


def to_uint8(frames):
  """Float pixels in [0, 255] (after resizing and augmentation) → uint8, rounded (tf.Tensor)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (the host pipeline only)
  return tf.cast(tf.clip_by_value(tf.round(frames), 0.0, 255.0), tf.uint8)


def model_input(inputs, zero_centering: bool):
  """What the model sees of a batch's `inputs` (jax): uint8 pixels are normalised to float32
  here, on the device; anything else arrived normalised and passes through."""
  if inputs.dtype == np.uint8:
    return normalize(inputs.astype(np.float32), zero_centering)
  return inputs
