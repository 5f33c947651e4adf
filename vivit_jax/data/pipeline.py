"""`build_dataset`: DMVR TFRecords (or a TFDS dataset) → numpy batches for training and evaluation.

`dataset_configs.tables` names DMVR TFRecord files; `dataset_configs.tfds_name` instead reads a
video dataset prepared with TensorFlow Datasets (`tfds_source.py`), everything below the same.

Batches are dicts of numpy arrays (`b` = the per-host `batch_size`):
  * `inputs`: float32 `[b, t, h, w, 3]` normalised (`dataset_configs.zero_centering`), or
    with `uint8_pixels=True` uint8 pixels in [0, 255] (`data/pixels.py`); for the test split `[b, views, t, h, w, 3]` with
    views = num_test_clips × (3 if do_three_spatial_crops else 1), ordered clip-major
    (view = clip * crops + crop; crops left/top, centre, right/bottom).
  * `label`: float32 `[b, num_classes]` one-hot (several values under the label key and no
    class_splits: multi-hot; with `class_splits`: the per-split one-hots concatenated, width
    sum(class_splits), the i-th label value belonging to split i).
  * `batch_mask`: float32 `[b]`, 0 for padding and for records that could not be read.
  * `example_id`: int64 `[b]`, the record's position in the split's file list (files in spec order,
    records in file order); -1 for padding.

Train (`split='train'`): infinite. The host's records (files `process_index::process_count`) are
visited epoch after epoch, each epoch in a full random permutation drawn from (seed, process_index,
epoch); the random sampling and augmentation of the n-th clip of the host's stream is drawn from
(seed, process_index, n). Batch `s` is therefore clips `[s * b, (s + 1) * b)` of that stream, a pure
function of (seed, step): `build_dataset(..., start_step=s)` starts at step `s` at no cost (nothing is
read or decoded for the skipped steps), which is how a resumed run continues exactly.

Validation and test: finite; the host's records in order, each exactly once, the last batch padded
(`batch_mask` 0). Every host yields the same number of batches, ceil(max host records / b), so hosts
stay in step in a multi-host evaluation.

Bad records (data that fails its CRC, not a SequenceExample, a missing key, a corrupt JPEG, a label
out of range, a truncated file or a length header that fails its CRC) are logged with the file, the
record number and the key, counted in `dataset.skipped`, and replaced by a masked (batch_mask 0)
zero clip, which keeps the step → examples map of training intact.
"""
import atexit
import dataclasses
import functools
import itertools
import weakref
from typing import Any, Iterator

from absl import logging
import numpy as np
import tensorflow as tf

from vivit_jax.data import augment
from vivit_jax.data.fields import ClipConfig
from vivit_jax.data import pixels
from vivit_jax.data import randaugment
from vivit_jax.data import sampling
from vivit_jax.data import tfrecord

# The pipeline runs on the host: TensorFlow must never take an accelerator from JAX.
try:
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # Devices already initialised (TF used earlier in the process).
  pass

SPLITS = ("train", "validation", "test")

# Iterators still open at exit are closed while Python is alive: otherwise TensorFlow finalizes
# their generator after the interpreter state is gone and prints an error.
_LIVE_ITERATORS = weakref.WeakSet()
atexit.register(lambda: [it.close() for it in list(_LIVE_ITERATORS)])


def _decode(jpegs: tf.Tensor) -> tf.Tensor:
  """string [n] → uint8 [n, h, w, 3] (all frames of a video have one size)."""
  return tf.map_fn(lambda j: tf.io.decode_jpeg(j, channels=3), jpegs,
                   fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _labels_to_target(labels: tf.Tensor, cfg: ClipConfig) -> tf.Tensor:
  """int64 [L] → float32 [num_classes]; out-of-range or miscounted labels fail the record."""
  widths = cfg.class_splits or (cfg.num_classes,)
  if cfg.class_splits:
    checks = [tf.debugging.assert_equal(tf.size(labels), len(widths),
                                        message="label count != len(class_splits)")]
    bound = tf.constant(widths, tf.int64)
  else:
    checks = []
    bound = tf.fill(tf.shape(labels), tf.constant(cfg.num_classes, tf.int64))
  checks.append(tf.debugging.assert_non_negative(labels, message="negative label"))
  checks.append(tf.debugging.assert_less(labels, bound, message="label >= number of classes"))
  with tf.control_dependencies(checks):
    labels = tf.identity(labels)
  if cfg.class_splits:
    return tf.concat([tf.one_hot(labels[i], w) for i, w in enumerate(widths)], axis=0)
  return tf.reduce_max(tf.one_hot(labels, cfg.num_classes), axis=0)


def _augment_train(frames: tf.Tensor, seed: tf.Tensor, cfg: ClipConfig) -> tf.Tensor:
  """Decoded frames [t, H, W, 3] → one augmented crop [t, s, s, 3] in [0, 255]."""
  aug = cfg.aug
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
  scale = 1.0
  if aug.get("do_jitter_scale", False):
    scale = augment.scale_factor(seeds[0], aug.get("scale_min_factor", 0.9),
                                 aug.get("scale_max_factor", 1.33),
                                 aug.get("prob_scale_jitter", 1.0))
  shape = tf.shape(frames)
  box = augment.crop_windows(shape[1], shape[2], cfg.min_resize, cfg.crop_size, "random",
                             scale=scale, seed=seeds[1])[0]
  frames = augment.crop_and_resize(frames, box, cfg.crop_size)
  if cfg.random_flip:
    frames = augment.random_flip(frames, seeds[2])
  if aug.get("do_rand_augment", False):
    frames = randaugment.rand_augment(frames, seeds[3], aug.get("rand_augment_num_layers", 2),
                                      aug.get("rand_augment_magnitude", 10))
  elif aug.get("do_color_augment", False):
    frames = augment.color_augment(frames, seeds[3], aug.get("prob_color_augment", 0.8),
                                   aug.get("prob_color_drop", 0.0))
  if aug.get("do_random_erasing", False):
    frames = augment.random_erasing(frames, seeds[4], aug.get("prob_random_erasing", 0.25))
  return frames


def make_process_fn(cfg: ClipConfig, split: str, seed: int, process_index: int, parse=None):
  """The per-record tf.data map: (serialized, stream position, example id) → processed example.

  `parse`: serialized record → (JPEG frames [T], labels [L]); default: a DMVR SequenceExample.
  """
  parse = parse or functools.partial(tfrecord.parse_clip, label_keys=cfg.label_keys)
  train = split == "train"
  mode = {"train": "random", "validation": "central", "test": "uniform"}[split]
  num_clips = cfg.num_test_clips if split == "test" else 1
  stride = cfg.test_stride if split == "test" else cfg.stride
  crop_mode = "three" if split == "test" and cfg.do_three_spatial_crops else "central"

  def process(serialized, position, example_id):
    frames, labels = parse(serialized)
    clip_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, process_index], tf.int64), position)
    seeds = tf.unstack(tf.random.experimental.stateless_split(clip_seed, 2))
    indices = sampling.sample_indices(tf.shape(frames)[0], cfg.num_frames, stride, mode,
                                      seed=seeds[0], num_clips=num_clips)
    if cfg.decode_all_frames:  # Baseline for benchmarks: decode everything, then sample.
      decoded = tf.gather(_decode(frames), tf.reshape(indices, [-1]))
    else:
      decoded = _decode(tf.gather(frames, tf.reshape(indices, [-1])))
    if train:
      clips = _augment_train(decoded, seeds[1], cfg)
    else:
      shape = tf.shape(decoded)
      boxes = augment.crop_windows(shape[1], shape[2], cfg.min_resize, cfg.crop_size, crop_mode)
      per_clip = tf.reshape(decoded, tf.concat([[num_clips, cfg.num_frames], shape[1:]], 0))
      views = [augment.crop_and_resize(per_clip[c], boxes[k], cfg.crop_size)
               for c in range(num_clips) for k in range(3 if crop_mode == "three" else 1)]
      clips = tf.stack(views) if split == "test" else views[0]
    return {
        "inputs": (pixels.to_uint8(clips) if cfg.uint8_pixels
                   else pixels.normalize(clips, cfg.zero_centering)),
        "label": _labels_to_target(labels, cfg),
        "batch_mask": tf.constant(1.0, tf.float32),
        "example_id": example_id,
        "position": position,
    }

  return process


class VideoDataset:
  """Iterable of numpy batches for one split on one host; see the module docstring.

  Attributes:
    num_examples: records this host reads per epoch / evaluation.
    num_batches: batches per evaluation (None for train, which is infinite).
    num_views: views per test example (1 for train and validation).
    skipped: {record location: reason} for every bad record met so far.
    num_skipped: how many times a bad record was replaced by a masked one so far.
  """

  def __init__(self, dataset_configs, split: str, batch_size: int, *, process_index: int = 0,
               process_count: int = 1, seed: int = 0, start_step: int = 0,
               uint8_pixels: bool = False):
    if split not in SPLITS:
      raise ValueError(f"split={split!r} not in {SPLITS}")
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size} must be >= 1")
    self.cfg = dataclasses.replace(ClipConfig.from_configs(dataset_configs),
                                   uint8_pixels=uint8_pixels)
    self.split, self.batch_size, self.seed = split, batch_size, seed
    self.process_index, self.process_count = process_index, process_count
    self.start_step = start_step
    if dataset_configs.get("tfds_name"):  # A dataset prepared by TFDS: its shards and its parser.
      from vivit_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
      source = tfds_source.open_split(dataset_configs, split)
      files, full, parse, self._diagnose = source.files, source.index, source.parse, source.diagnose
      table = f"{dataset_configs.tfds_name} {tfds_source.split_name(dataset_configs, split)}"
    else:
      tables = dataset_configs.get("tables") or {}
      if split not in tables:
        raise ValueError(f"dataset_configs.tables has no entry for split {split!r} "
                         f"(has {sorted(tables)})")
      table = tables[split]
      files = tfrecord.expand_file_spec(dataset_configs.get("base_dir") or "", table)
      full, parse = None, None  # Indexed below; parsed as DMVR SequenceExamples.
      self._diagnose = functools.partial(
          tfrecord.diagnose_clip, label_keys=self.cfg.label_keys,
          label_widths=self.cfg.class_splits or (self.cfg.num_classes,))
    mine = tfrecord.shard_files(files, process_index, process_count)
    if split == "train" and not mine:
      raise ValueError(f"process {process_index} of {process_count} gets no file of table "
                       f"{table!r} ({len(files)} files): write at least {process_count} "
                       "shards")
    # All files are indexed (headers only): evaluation needs every host's count to stay in step,
    # and example ids number the records of the whole split.
    if full is None:
      full = tfrecord.index_files(files)
    self._index = full.take(range(process_index, len(files), process_count))
    self._example_ids = np.flatnonzero(np.isin(full.file_ids, self._index.file_ids))
    self.num_examples = len(self._index)
    self.skipped = {path: reason for path, reason in full.problems if path in mine}
    self.num_skipped = len(self.skipped)
    self.num_views = self.cfg.num_views if split == "test" else 1
    if split == "train":
      if self.num_examples == 0:
        raise ValueError(f"process {process_index}: no readable record in {mine}")
      self.num_batches = None
    else:
      per_host = np.bincount(full.file_ids % process_count, minlength=process_count)
      self.num_batches = int(-(-per_host.max() // batch_size))
    self._process = make_process_fn(self.cfg, split, seed, process_index, parse)

  def __len__(self) -> int:
    if self.num_batches is None:
      raise TypeError("the train split is infinite")
    return self.num_batches

  def _positions(self) -> Iterator[int]:
    if self.split == "train":
      return itertools.count(self.start_step * self.batch_size)
    return iter(range(self.num_examples))

  def _record_of(self, position: int, perms: dict) -> int:
    if self.split != "train":
      return position
    epoch, offset = divmod(position, self.num_examples)
    if epoch not in perms:
      perms.clear()  # Only the current epoch's permutation is kept.
      rng = np.random.default_rng([self.seed, self.process_index, epoch])
      perms[epoch] = rng.permutation(self.num_examples)
    return int(perms[epoch][offset])

  def _tf_dataset(self) -> tf.data.Dataset:
    def records():
      reader = tfrecord.RecordReader(self._index)
      perms = {}
      try:
        for position in self._positions():
          r = self._record_of(position, perms)
          try:
            data = reader.read(r)
          except tfrecord.CorruptRecordError:
            continue  # A gap in `position`: `_failed` reports it.
          yield data, position, self._example_ids[r]
      finally:
        reader.close()

    ds = tf.data.Dataset.from_generator(records, output_signature=(
        tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64)))
    ds = ds.map(self._process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()  # Failures show up as gaps in `position`, diagnosed in Python.
    ds = ds.batch(self.batch_size).prefetch(2)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options)

  def _failed(self, position: int, perms: dict, template: dict) -> dict:
    """Diagnoses the record at `position` and returns its masked stand-in."""
    r = self._record_of(position, perms)
    where = self._index.location(r)
    if where not in self.skipped:
      reader = tfrecord.RecordReader(self._index)
      try:
        reason = self._diagnose(reader.read(r))
      except tfrecord.CorruptRecordError:
        reason = "data CRC mismatch"
      finally:
        reader.close()
      self.skipped[where] = reason
      logging.warning("Skipping %s: %s", where, reason)
    self.num_skipped += 1
    return self._blank(template, position)

  def _blank(self, template: dict, position: int) -> dict:
    return {"inputs": np.zeros_like(template["inputs"]), "label": np.zeros_like(template["label"]),
            "batch_mask": np.float32(0.0), "example_id": np.int64(-1),
            "position": np.int64(position)}

  def _template(self) -> dict:
    cfg = self.cfg
    clip = (cfg.num_frames, cfg.crop_size, cfg.crop_size, 3)
    shape = (self.num_views,) + clip if self.split == "test" else clip
    return {"inputs": np.zeros(shape, np.uint8 if cfg.uint8_pixels else np.float32),
            "label": np.zeros((cfg.num_classes,), np.float32)}

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    batches = self._batches()
    _LIVE_ITERATORS.add(batches)
    return batches

  def _batches(self) -> Iterator[dict[str, np.ndarray]]:
    b = self.batch_size
    template = self._template()
    expected = self.start_step * b if self.split == "train" else 0
    pending = []  # Examples waiting to fill a batch (only when a batch had to be reassembled).
    perms = {}
    for batch in self._tf_dataset().as_numpy_iterator():
      positions = batch["position"]
      if not pending and len(positions) == b and positions[-1] - positions[0] == b - 1 and (
          positions[0] == expected):
        expected += b
        yield _public(batch)
        continue
      for k in range(len(positions)):
        while expected < positions[k]:
          pending.append(self._failed(expected, perms, template))
          expected += 1
        pending.append({key: value[k] for key, value in batch.items()})
        expected += 1
      while len(pending) >= b:
        yield _public(_stack(pending[:b]))
        pending = pending[b:]
    if self.split == "train":  # Only a failure to read the files ends the infinite stream.
      raise RuntimeError(f"the train stream of process {self.process_index} ended at clip "
                         f"{expected}: reading {self._index.files} failed (see the log above)")
    while expected < self.num_examples:  # Failures at the very end.
      pending.append(self._failed(expected, perms, template))
      expected += 1
    total = self.num_batches * b
    while expected < total:
      pending.append(self._blank(template, expected))
      expected += 1
    for start in range(0, len(pending), b):
      yield _public(_stack(pending[start:start + b]))


def _stack(examples: list[dict]) -> dict[str, np.ndarray]:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _public(batch: dict[str, Any]) -> dict[str, np.ndarray]:
  out = {k: v for k, v in batch.items() if k != "position"}
  out["batch_mask"] = out["batch_mask"].astype(np.float32)
  return out


def build_dataset(dataset_configs, split: str, batch_size: int, *, process_index: int = 0,
                  process_count: int = 1, seed: int = 0, start_step: int = 0,
                  uint8_pixels: bool = False) -> VideoDataset:
  """Builds the batches of one split for one host (see the module docstring for the contract).

  Args:
    dataset_configs: Scenic-style `config.dataset_configs` (docs/data.md lists every field).
    split: 'train', 'validation' or 'test'.
    batch_size: examples per batch on this host.
    process_index: this host (jax.process_index()).
    process_count: number of hosts (jax.process_count()).
    seed: train shuffling and augmentation seed.
    start_step: train only; the first batch yielded is batch `start_step` of the stream.
    uint8_pixels: `inputs` as uint8 pixels in [0, 255] for the devices to normalise
      (`data.pixels.model_input`), instead of normalised float32.

  Returns:
    A re-iterable `VideoDataset`; each iteration of an evaluation split visits every example once.
  """
  if start_step and split != "train":
    raise ValueError(f"start_step={start_step} is only meaningful for split='train', not {split!r}")
  return VideoDataset(dataset_configs, split, batch_size, process_index=process_index,
                      process_count=process_count, seed=seed, start_step=start_step,
                      uint8_pixels=uint8_pixels)
