"""DMVR-format TFRecords: file specs, a seekable record index, parsing and writing.

Format (one `tf.train.SequenceExample` per video clip, the layout DMVR and Scenic read):
  * frames: JPEG bytes, one per frame, in the feature list `image/encoded` (sequence layout). The legacy
    layout, with every frame as one value of a single context feature `image/encoded`, is also read.
  * labels: context `clip/label/index` (int64, one or several values); optional text in
    `clip/label/text` or `clip/label/string`. Other label keys can be chosen with
    `dataset_configs.label_keys` (each key gives its values in order; they are concatenated).
  * optional context: `video/filename`, `clip/start/timestamp`, `clip/end/timestamp` (microseconds),
    `video/fps`.

A TFRecord file is a sequence of (uint64 length, uint32 crc, bytes, uint32 crc) records, each crc the
masked CRC-32C of what precedes it. We read the length headers once (`index_files`), so that any
record can be read by seeking: this gives a full shuffle, exact example counts for evaluation and a
cheap jump to any training step. Both CRCs are checked: the length's when indexing (a bad length
header ends the file's readable part, since the records after it cannot be found), the data's on
every read (`RecordReader.read` raises `CorruptRecordError`, which the pipeline reports and skips).
"""
import dataclasses
import os
import struct
import time
from typing import Iterable, Iterator, Optional, Sequence, Union

from absl import logging
import google_crc32c
import numpy as np
import tensorflow as tf

from vivit_jax.data.fields import LABEL_KEY  # pylint: disable=unused-import  (re-exported)

FRAMES_KEY = "image/encoded"
LABEL_TEXT_KEYS = ("clip/label/text", "clip/label/string")
FILENAME_KEY = "video/filename"
_HEADER_BYTES = 12  # uint64 length + uint32 masked crc of the length.
_FOOTER_BYTES = 4  # uint32 masked crc of the data.
_GLOB_CHARS = "*?["

FileSpec = Union[str, Sequence[str]]
_CRC_MASK_DELTA = 0xA282EAD8


class CorruptRecordError(ValueError):
  """A record that fails its CRC, or a file cut short; the message names the file and record."""


def masked_crc(data: bytes) -> int:
  """TFRecord's masked CRC-32C (rotate right by 15, add a constant) of `data`."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def expand_file_spec(base_dir: str, spec: FileSpec) -> list[str]:
  """Expands a Scenic table spec into a sorted list of existing files.

  Args:
    base_dir: folder prefixed to relative entries ('' or None: none).
    spec: a path, `name@N` (-> `name-00000-of-0000N` ... `name-0000{N-1}-of-0000N`), a glob, a
      comma-separated string of those, or a list of those.

  Returns:
    The files, in spec order (globs sorted).

  Raises:
    FileNotFoundError: naming the spec entry whose files are missing.
    ValueError: for an empty spec or a malformed `@N`.
  """
  entries = [spec] if isinstance(spec, str) else list(spec)
  entries = [e.strip() for entry in entries for e in str(entry).split(",") if e.strip()]
  if not entries:
    raise ValueError(f"Empty table spec {spec!r} (expected a path, 'name@N', a glob or a list).")
  files = []
  for entry in entries:
    path = entry if not base_dir or os.path.isabs(entry) or "://" in entry else os.path.join(
        base_dir, entry)
    if "@" in os.path.basename(path):
      stem, _, count = path.rpartition("@")
      if not count.isdigit() or int(count) < 1:
        raise ValueError(f"Table spec {entry!r}: after '@' expected a positive shard count, "
                         f"got {count!r}.")
      n = int(count)
      candidates = [f"{stem}-{i:05d}-of-{n:05d}" for i in range(n)]
      missing = [c for c in candidates if not tf.io.gfile.exists(c)]
      if missing:
        raise FileNotFoundError(f"Table spec {entry!r}: {len(missing)} of {n} shards missing, "
                                f"first {missing[0]}")
      files.extend(candidates)
    elif any(c in path for c in _GLOB_CHARS):
      matched = sorted(tf.io.gfile.glob(path))
      if not matched:
        raise FileNotFoundError(f"Table spec {entry!r}: no file matches {path}")
      files.extend(matched)
    else:
      if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Table spec {entry!r}: file {path} not found")
      files.append(path)
  return files


def shard_files(files: Sequence[str], process_index: int, process_count: int) -> list[str]:
  """Host `process_index` of `process_count` gets files[process_index::process_count]."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index={process_index} must be in [0, process_count={process_count}).")
  return list(files[process_index::process_count])


@dataclasses.dataclass
class RecordIndex:
  """Where each record of a list of files lives: `file_ids[i]`, byte `offsets[i]`, `lengths[i]`."""
  files: list[str]
  file_ids: np.ndarray
  offsets: np.ndarray
  lengths: np.ndarray
  problems: list[tuple[str, str]]  # (file, what is wrong) for truncated files.

  def __len__(self) -> int:
    return len(self.offsets)

  def location(self, i: int) -> str:
    """Human-readable location of record i, for messages."""
    f = int(self.file_ids[i])
    first = int(np.searchsorted(self.file_ids, f))
    return f"{self.files[f]} record #{i - first}"

  def take(self, file_ids: Sequence[int]) -> "RecordIndex":
    """The sub-index of the records that live in the given files (ids into `files`)."""
    keep = np.isin(self.file_ids, np.asarray(list(file_ids), np.int64))
    return RecordIndex(self.files, self.file_ids[keep], self.offsets[keep], self.lengths[keep],
                       self.problems)


def index_files(files: Sequence[str]) -> RecordIndex:
  """Reads and checks the length headers of every record (not the data).

  A truncated tail or a length header that fails its CRC ends the file's readable part; the
  reason is logged and kept in `problems`.
  """
  start = time.time()
  file_ids, offsets, lengths, problems = [], [], [], []
  for f, path in enumerate(files):
    if f and f % 100 == 0:
      logging.info("Indexed %d of %d files (%.0f s)", f, len(files), time.time() - start)
    size = tf.io.gfile.stat(path).length
    pos = record = 0
    with tf.io.gfile.GFile(path, "rb") as fh:
      while pos < size:
        fh.seek(pos)
        header = fh.read(_HEADER_BYTES)
        where = f"record #{record} at byte {pos}"
        if len(header) < _HEADER_BYTES:
          problems.append((path, f"truncated record header ({where}); rest of file skipped"))
          break
        length, crc = struct.unpack("<QI", header)
        if masked_crc(header[:8]) != crc:
          problems.append((path, f"length header CRC mismatch ({where}); rest of file skipped"))
          break
        end = pos + _HEADER_BYTES + length + _FOOTER_BYTES
        if end > size:
          problems.append((path, f"{where} claims {length} bytes but the file ends at {size} "
                                 "(truncated file); rest of file skipped"))
          break
        file_ids.append(f)
        offsets.append(pos + _HEADER_BYTES)
        lengths.append(length)
        pos, record = end, record + 1
  for path, reason in problems:
    logging.warning("Skipping the rest of %s: %s", path, reason)
  return RecordIndex(list(files), np.asarray(file_ids, np.int64), np.asarray(offsets, np.int64),
                     np.asarray(lengths, np.int64), problems)


class RecordReader:
  """Reads records of a `RecordIndex` by position, keeping files open."""

  def __init__(self, index: RecordIndex):
    self._index = index
    self._handles = {}

  def read(self, i: int) -> bytes:
    """Record i's data, checked against its CRC.

    Raises:
      CorruptRecordError: naming the file and record number, when the data fails its CRC.
    """
    f = int(self._index.file_ids[i])
    fh = self._handles.get(f)
    if fh is None:
      fh = self._handles[f] = tf.io.gfile.GFile(self._index.files[f], "rb")
    fh.seek(int(self._index.offsets[i]))
    length = int(self._index.lengths[i])
    data, footer = fh.read(length), fh.read(_FOOTER_BYTES)
    if len(footer) != _FOOTER_BYTES or masked_crc(data) != struct.unpack("<I", footer)[0]:
      raise CorruptRecordError(f"{self._index.location(i)}: data CRC mismatch")
    return data

  def close(self):
    for fh in self._handles.values():
      fh.close()
    self._handles = {}


def parse_clip(serialized: tf.Tensor, label_keys: Sequence[str]) -> tuple[tf.Tensor, tf.Tensor]:
  """Parses one serialized SequenceExample (graph mode).

  Returns:
    frames: string [T], the JPEG bytes of every frame (sequence layout, else the legacy context
      layout).
    labels: int64 [L], the values of `label_keys` concatenated.
  Raises (at run time) InvalidArgumentError when there are no frames or no labels.
  """
  context_spec = {k: tf.io.VarLenFeature(tf.int64) for k in label_keys}
  context_spec[FRAMES_KEY] = tf.io.VarLenFeature(tf.string)
  sequence_spec = {FRAMES_KEY: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)}
  context, sequence = tf.io.parse_single_sequence_example(
      serialized, context_features=context_spec, sequence_features=sequence_spec)
  frames = tf.concat([sequence[FRAMES_KEY], context[FRAMES_KEY].values], axis=0)
  labels = tf.concat([context[k].values for k in label_keys], axis=0)
  with tf.control_dependencies([
      tf.debugging.assert_positive(tf.size(frames), message=f"no frames under '{FRAMES_KEY}'"),
      tf.debugging.assert_positive(tf.size(labels), message=f"no labels under {list(label_keys)}"),
  ]):
    return tf.identity(frames), tf.identity(labels)


def diagnose_clip(serialized: bytes, label_keys: Sequence[str],
                  label_widths: Optional[Sequence[int]]) -> str:
  """Says in words what is wrong with a record that failed in the pipeline (eager, slow path)."""
  try:
    example = tf.train.SequenceExample.FromString(serialized)
  except Exception as e:  # pylint: disable=broad-except
    return f"not a tf.train.SequenceExample ({type(e).__name__}: {e})"
  context = example.context.feature
  frames = list(example.feature_lists.feature_list[FRAMES_KEY].feature) if (
      FRAMES_KEY in example.feature_lists.feature_list) else []
  frame_bytes = [b for f in frames for b in f.bytes_list.value]
  if FRAMES_KEY in context:
    frame_bytes += list(context[FRAMES_KEY].bytes_list.value)
  if not frame_bytes:
    return (f"missing key '{FRAMES_KEY}' (neither a feature list nor a context feature); "
            f"context keys: {sorted(context.keys())}")
  labels = []
  for k in label_keys:
    if k not in context or not context[k].int64_list.value:
      return f"missing label key '{k}' (int64 context feature); context keys: {sorted(context)}"
    labels.extend(context[k].int64_list.value)
  if label_widths is not None:
    if len(label_widths) > 1 and len(labels) != len(label_widths):
      return (f"key {list(label_keys)} has {len(labels)} values, class_splits "
              f"{list(label_widths)} needs {len(label_widths)}")
    widths = label_widths if len(label_widths) > 1 else [label_widths[0]] * len(labels)
    for v, w in zip(labels, widths):
      if not 0 <= v < w:
        return f"label {v} under {list(label_keys)} outside [0, {w})"
  sizes = []
  for t, jpeg in enumerate(frame_bytes):
    try:
      sizes.append(tuple(tf.io.decode_jpeg(jpeg).shape[:2]))
    except Exception as e:  # pylint: disable=broad-except
      return f"key '{FRAMES_KEY}' frame {t}: not a decodable JPEG ({str(e).splitlines()[0]})"
    if sizes[t] != sizes[0]:
      return (f"key '{FRAMES_KEY}': frame {t} is {sizes[t][0]}x{sizes[t][1]} pixels, frame 0 "
              f"{sizes[0][0]}x{sizes[0][1]} (all frames of a clip must have one size)")
  return "processing failed for an unknown reason (record looks valid)"


def make_clip_example(frames: Sequence[bytes], labels: Sequence[int], *,
                      label_text: Optional[str] = None, legacy_layout: bool = False,
                      context: Optional[dict] = None) -> bytes:
  """Serializes one clip as a DMVR SequenceExample.

  Args:
    frames: JPEG bytes per frame.
    labels: the `clip/label/index` values.
    label_text: written to `clip/label/text` and `clip/label/string`.
    legacy_layout: put every frame in one context feature instead of the `image/encoded` list.
    context: extra context features, {key: str | bytes | int | float | list of one kind}.
  """
  ex = tf.train.SequenceExample()
  ctx = ex.context.feature
  ctx[LABEL_KEY].int64_list.value.extend(int(v) for v in labels)
  if label_text is not None:
    for k in LABEL_TEXT_KEYS:
      ctx[k].bytes_list.value.append(label_text.encode())
  for k, v in (context or {}).items():
    values = v if isinstance(v, (list, tuple)) else [v]
    if all(isinstance(x, (bool, int, np.integer)) for x in values):
      ctx[k].int64_list.value.extend(int(x) for x in values)
    elif all(isinstance(x, (float, np.floating)) for x in values):
      ctx[k].float_list.value.extend(float(x) for x in values)
    else:
      ctx[k].bytes_list.value.extend(x if isinstance(x, bytes) else str(x).encode() for x in values)
  if legacy_layout:
    ctx[FRAMES_KEY].bytes_list.value.extend(frames)
  else:
    feature_list = ex.feature_lists.feature_list[FRAMES_KEY]
    for jpeg in frames:
      feature_list.feature.add().bytes_list.value.append(jpeg)
  return ex.SerializeToString()


def verify_file(path: str) -> int:
  """Re-reads a whole file, checking every CRC; returns its number of records.

  Raises:
    CorruptRecordError: naming the file and the first problem.
  """
  index = index_files([path])
  if index.problems:
    raise CorruptRecordError(f"{path}: {index.problems[0][1]}")
  reader = RecordReader(index)
  try:
    for i in range(len(index)):
      reader.read(i)
  finally:
    reader.close()
  return len(index)


def write_records_atomically(path: str, records: Iterable[bytes]) -> int:
  """Writes a TFRecord file under a temporary name, re-reads it (CRCs), then renames it: no
  half-written or unreadable file ever takes the name."""
  tmp = f"{path}.tmp-{os.getpid()}"
  count = 0
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for record in records:
        writer.write(record)
        count += 1
    if verify_file(tmp) != count:
      raise CorruptRecordError(f"{tmp}: {count} records written but not all read back")
    tf.io.gfile.rename(tmp, path, overwrite=True)
  except BaseException:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
    raise
  return count


def iterate_records(path: str) -> Iterator[bytes]:
  """All records of one file, in order (for tools and tests); a truncated tail is logged and
  skipped, a record that fails its CRC raises `CorruptRecordError`."""
  index = index_files([path])
  reader = RecordReader(index)
  try:
    for i in range(len(index)):
      yield reader.read(i)
  finally:
    reader.close()
