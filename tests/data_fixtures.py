"""Builders shared by the data tests: small DMVR TFRecords whose frames encode their own index."""
import os
from typing import Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from vivit_jax.data import tfrecord

FRAME_H, FRAME_W = 24, 32


def index_frames(num_frames: int, h: int = FRAME_H, w: int = FRAME_W) -> np.ndarray:
  """uint8 [T, h, w, 3]: frame k is flat with R = 8 * (k % 32) + 4, G = 8 * (k // 32) + 4."""
  k = np.arange(num_frames)
  colour = np.stack([8 * (k % 32) + 4, 8 * (k // 32) + 4, np.full_like(k, 128)], axis=-1)
  return np.broadcast_to(colour[:, None, None, :], (num_frames, h, w, 3)).astype(np.uint8)


def frame_index(clip: np.ndarray, zero_centering: bool = False) -> np.ndarray:
  """Inverse of `index_frames` for processed clips [..., t, h, w, 3] → int [..., t]."""
  pixels = (clip + 1.0) * 127.5 if zero_centering else clip * 255.0
  mean = pixels.mean(axis=(-3, -2))
  return (np.round((mean[..., 0] - 4) / 8) + 32 * np.round((mean[..., 1] - 4) / 8)).astype(int)


def jpegs(frames: np.ndarray) -> list[bytes]:
  return [tf.io.encode_jpeg(f, quality=95).numpy() for f in frames]


def clip_record(num_frames: int, label, legacy: bool = False) -> bytes:
  labels = label if isinstance(label, (list, tuple)) else [label]
  return tfrecord.make_clip_example(jpegs(index_frames(num_frames)), labels, legacy_layout=legacy)


def write_table(folder: str, name: str, shards: Sequence[Sequence[bytes]]) -> list[str]:
  """Writes `name-0000i-of-0000N` files, shard i holding the given records."""
  os.makedirs(folder, exist_ok=True)
  paths = []
  for i, records in enumerate(shards):
    path = os.path.join(folder, f"{name}-{i:05d}-of-{len(shards):05d}")
    tfrecord.write_records_atomically(path, records)
    paths.append(path)
  return paths


def dataset_configs(base_dir: str, tables: dict, **overrides) -> ml_collections.ConfigDict:
  """Plain configs: no augmentation, no resize, [0, 1] output, 4 frames at stride 1."""
  dc = ml_collections.ConfigDict({
      "base_dir": base_dir, "tables": tables, "num_classes": 5, "num_frames": 4, "stride": 1,
      "min_resize": FRAME_H, "crop_size": FRAME_H, "zero_centering": False, "num_test_clips": 1,
      "do_three_spatial_crops": False, "random_flip": False, "augmentation_params": {},
  })
  dc.update(overrides)
  return dc


def collect(dataset, max_batches: int = 1000) -> list[dict]:
  batches = []
  for i, batch in enumerate(dataset):
    if i == max_batches:
      break
    batches.append(batch)
  return batches
