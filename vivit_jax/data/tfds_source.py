"""Video datasets prepared with TensorFlow Datasets, read by the TFRecord pipeline (`pipeline.py`).

`dataset_configs.tfds_name` (e.g. 'ucf101/ucf101_1_256') selects a dataset that
`tensorflow_datasets` has already prepared under `dataset_configs.tfds_data_dir` (TFDS's default
folder when unset). Nothing is downloaded at run time: a missing dataset is an error that says how
to prepare it.

TFDS stores a prepared split as TFRecord shards of `tf.train.Example`s. We index those shards like
any other TFRecord file and let TFDS's own feature spec parse a record, keeping the video's JPEG
frames encoded (`SkipDecoding`), so that only the sampled frames are decoded. Sampling,
augmentation, host sharding (by shard file), the exactly-once evaluation and the bad-record
handling are the pipeline's, the same as for DMVR TFRecords.

Fields (docs/finetuning.md):
  tfds_name: 'name' or 'name/config', optionally ':version'.
  tfds_data_dir: the `data_dir` the dataset was prepared in (default: TFDS's, $TFDS_DATA_DIR or
    ~/tensorflow_datasets).
  tfds_splits: {'train': ..., 'validation': ..., 'test': ...} TFDS split names, slices allowed
    ('train[:90%]'); default each split its own name.
  tfds_video_key: the video feature (default 'video', as UCF101's builder).
  tfds_label_key: the label feature, or a list of them for several heads (default 'label').
"""
import dataclasses
import os
import re
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_jax.data import tfrecord

DEFAULT_VIDEO_KEY = "video"
DEFAULT_LABEL_KEY = "label"


@dataclasses.dataclass
class SplitSource:
  """One split of a prepared TFDS dataset, in the terms of `pipeline.VideoDataset`."""
  files: list[str]  # The split's shard files, in TFDS order.
  index: tfrecord.RecordIndex  # The split's records (a slice 'train[:90%]' keeps part of them).
  parse: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]  # → (JPEG frames [T], labels [L]).
  diagnose: Callable[[bytes], str]  # What is wrong with a record that failed (eager).


def label_keys_of(dataset_configs) -> tuple[str, ...]:
  keys = dataset_configs.get("tfds_label_key") or DEFAULT_LABEL_KEY
  return (keys,) if isinstance(keys, str) else tuple(keys)


def split_name(dataset_configs, split: str) -> str:
  """The TFDS split read for our `split` ('train', 'validation' or 'test')."""
  return (dataset_configs.get("tfds_splits") or {}).get(split, split)


def prepare_command(name: str, data_dir: str) -> str:
  """The command that prepares a TFDS dataset (the `tfds build` CLI of tensorflow-datasets 4.9
  needs apache-beam; this does not)."""
  return (f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
          f"data_dir='{data_dir}').download_and_prepare()\"")


def _prepare_hint(name: str, data_dir: str) -> str:
  command = prepare_command(name, data_dir)
  return (f"Nothing is downloaded at run time: prepare it once with `{command}`"
          " (UCF101 needs ffmpeg; see docs/finetuning.md), or point dataset_configs.tfds_data_dir "
          "at the folder that holds it.")


def open_builder(dataset_configs) -> tfds.core.DatasetBuilder:
  """The prepared dataset's builder; a clear error when it is not prepared."""
  name = dataset_configs.tfds_name
  data_dir = dataset_configs.get("tfds_data_dir") or os.path.expanduser(
      tfds.core.constants.DATA_DIR)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise FileNotFoundError(f"dataset_configs.tfds_name={name!r}: no prepared dataset of that name "
                            f"under {data_dir} and no TFDS builder by that name. "
                            f"{_prepare_hint(name, data_dir)}") from None
  if not tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json")):
    raise FileNotFoundError(f"dataset_configs.tfds_name={name!r} is not prepared: "
                            f"{builder.data_dir}/dataset_info.json not found. "
                            f"{_prepare_hint(name, data_dir)}")
  if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
    raise ValueError(f"{builder.data_dir} was prepared as {builder.info.file_format.value}; the "
                     f"pipeline reads TFRecord shards: prepare it again with "
                     f"tfds.builder({name!r}, data_dir=..., file_format='tfrecord') (the default)")
  return builder


def _check_features(builder, dataset_configs) -> tuple[str, tuple[str, ...]]:
  """The video and label keys, checked against the dataset's features and the config's classes."""
  features = builder.info.features
  name = dataset_configs.tfds_name
  video_key = dataset_configs.get("tfds_video_key") or DEFAULT_VIDEO_KEY
  label_keys = label_keys_of(dataset_configs)
  for field, key in [("tfds_video_key", video_key)] + [("tfds_label_key", k) for k in label_keys]:
    if key not in features:
      raise ValueError(f"dataset_configs.{field}={key!r}: {name} has features {sorted(features)}")
  video = features[video_key]
  if not isinstance(video, tfds.features.Video) or video.feature.encoding_format != "jpeg":
    raise ValueError(f"{name} feature {video_key!r} is {video!r}; the pipeline reads videos "
                     "stored as JPEG frames (tfds.features.Video(..., encoding_format='jpeg'))")
  widths = dataset_configs.get("class_splits") or [dataset_configs.num_classes] * len(label_keys)
  for key, width in zip(label_keys, widths):
    num = getattr(features[key], "num_classes", None)
    if num is not None and num != width:
      raise ValueError(f"{name} feature {key!r} has {num} classes but the config expects {width} "
                       "(dataset_configs.num_classes / class_splits)")
  return video_key, label_keys, list(widths)


def _split_index(builder, dataset_configs, split: str) -> tuple[list[str], tfrecord.RecordIndex]:
  tfds_split = split_name(dataset_configs, split)
  try:
    instructions = builder.info.splits[tfds_split].file_instructions
  except (KeyError, ValueError) as e:
    raise ValueError(f"dataset_configs.tfds_splits.{split}={tfds_split!r}: {e} "
                     f"({dataset_configs.tfds_name} has splits {sorted(builder.info.splits)})"
                     ) from None
  files = list(dict.fromkeys(os.fspath(i.filename) for i in instructions))
  full = tfrecord.index_files(files)
  keep = np.zeros(len(full), bool)
  for ins in instructions:
    rows = np.flatnonzero(full.file_ids == files.index(os.fspath(ins.filename)))
    keep[rows[ins.skip:None if ins.take < 0 else ins.skip + ins.take]] = True
  return files, dataclasses.replace(full, file_ids=full.file_ids[keep],
                                    offsets=full.offsets[keep], lengths=full.lengths[keep])


def open_split(dataset_configs, split: str) -> SplitSource:
  """The files, record index and parser of one split (see the module docstring)."""
  builder = open_builder(dataset_configs)
  video_key, label_keys, widths = _check_features(builder, dataset_configs)
  files, index = _split_index(builder, dataset_configs, split)
  features = builder.info.features
  decoders = {video_key: tfds.decode.SkipDecoding()}

  def parse(serialized):
    example = features.deserialize_example(serialized, decoders=decoders)
    frames = example[video_key]
    labels = tf.concat([tf.reshape(tf.cast(example[k], tf.int64), [-1]) for k in label_keys], 0)
    with tf.control_dependencies([
        tf.debugging.assert_positive(tf.size(frames), message=f"no frames in {video_key!r}"),
        tf.debugging.assert_positive(tf.size(labels), message=f"no labels in {list(label_keys)}"),
    ]):
      return tf.identity(frames), tf.identity(labels)

  def diagnose(serialized: bytes) -> str:
    return _diagnose(features, decoders, video_key, dict(zip(label_keys, widths)), serialized)

  return SplitSource(files, index, parse, diagnose)


def _diagnose(features, decoders, video_key: str, label_widths: dict[str, int],
              serialized: bytes) -> str:
  try:
    example = features.deserialize_example(serialized, decoders=decoders)
  except Exception as e:  # pylint: disable=broad-except
    return f"not an example of this TFDS dataset ({type(e).__name__}: {str(e).splitlines()[0]})"
  for k, width in label_widths.items():
    values = np.reshape(example[k].numpy(), [-1])
    if np.any((values < 0) | (values >= width)):
      return f"label {values.tolist()} in feature {k!r} outside [0, {width})"
  for t, jpeg in enumerate(example[video_key].numpy()):
    try:
      tf.io.decode_jpeg(jpeg)
    except Exception as e:  # pylint: disable=broad-except
      return f"feature {video_key!r} frame {t}: not a decodable JPEG ({_tf_message(e)})"
  return "processing failed for an unknown reason (record looks valid)"


def _tf_message(e: Exception) -> str:
  """A TensorFlow error's own words, without the op and function-node decorations."""
  text = str(e).splitlines()[0] if str(e) else type(e).__name__
  return re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", text)
