r"""Converts videos to sharded DMVR-format TFRecords (the format `vivit_jax.data` reads).

  python -m vivit_jax.tools.make_tfrecords --input=DIR_OR_CSV --output_dir=DIR --split=train \
      --num_shards=8 [--fps=25] [--min_resize=256] [--label_map=JSON] [--workers=4]

Input: a folder with one sub-folder per class (`DIR/<class>/<video>`), or a CSV with rows
`path,label[,start,end]` (optional header `path,label,start,end`; relative paths are relative to the
CSV's folder; start/end in seconds). A label may hold several parts separated by ';' (e.g. Epic-Kitchens
`noun;verb` class ids, in the order of `dataset_configs.class_splits`): each part is mapped and all
are written, in order, to `clip/label/index`.

Output in `--output_dir`: `SPLIT-0000i-of-0000N` shards, `label_map.json` ({class name: index}) and
`SPLIT-summary.json` (counts and every skipped video with the reason). The label map is, in order of
precedence: `--label_map`, an existing `label_map.json` in the output folder (so that validation and
test reuse the train split's map), the labels themselves when they are all integers, else the sorted
class names. A given map may hold integers or integer strings (SSv2's `labels.json`).

Videos are decoded with PyAV, resampled to `--fps` (each output time takes the frame on screen at that
time), resized so the short side is `--min_resize` (0: keep), and stored as JPEG frames. A video that
cannot be decoded is reported and skipped. Shards are written under a temporary name, read back (every
record's CRCs and the count) and only then renamed, all together: a failed write (disk full) or a shard
that does not read back stops the conversion with a message naming the file, and leaves the files
already in the output folder untouched. Exit codes: 0 done, 1 no video written, 2 bad input or
arguments, 3 a file could not be written.
"""
import argparse
import csv
import dataclasses
import errno
import fractions
import json
import multiprocessing
import os
import sys
import time
from typing import Iterator, Optional, Sequence

import numpy as np

_TIME_EPS = 1e-3  # Fraction of an output frame period treated as "same time".
# Largest frame accepted (8K UHD is 7680 x 4320): a damaged header claiming 65000 x 65000 pixels
# would otherwise make the decoder allocate gigabytes per frame.
MAX_SIDE, MAX_PIXELS = 16384, 8192 * 8192


@dataclasses.dataclass(frozen=True)
class VideoItem:
  path: str
  label: str
  start: Optional[float] = None
  end: Optional[float] = None


@dataclasses.dataclass
class Converted:
  """What a worker returns for one video: its JPEG frames or the reason it was skipped."""
  item: VideoItem
  labels: Sequence[int] = ()
  jpegs: Sequence[bytes] = ()
  error: Optional[str] = None


def list_videos(input_path: str) -> list[VideoItem]:
  """Reads a folder-per-class tree or a CSV. Raises ValueError naming the input when it is empty."""
  if os.path.isdir(input_path):
    classes = sorted(d for d in os.listdir(input_path)
                     if os.path.isdir(os.path.join(input_path, d)) and not d.startswith("."))
    items = []
    for name in classes:
      folder = os.path.join(input_path, name)
      files = sorted(f for f in os.listdir(folder)
                     if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)))
      if not files:
        print(f"warning: class folder {folder} holds no file", file=sys.stderr)
      items.extend(VideoItem(os.path.join(folder, f), name) for f in files)
    if not items:
      raise ValueError(f"--input={input_path}: no video found (expected one sub-folder per class "
                       "holding the videos)")
    return items
  if not os.path.isfile(input_path):
    raise ValueError(f"--input={input_path}: neither a folder nor a CSV file")
  root = os.path.dirname(os.path.abspath(input_path))
  items = []
  with open(input_path, newline="") as f:
    for line_no, row in enumerate(csv.reader(f), start=1):
      row = [c.strip() for c in row]
      if not row or not any(row) or (line_no == 1 and row[0].lower() == "path"):
        continue
      if len(row) not in (2, 4):
        raise ValueError(f"{input_path} line {line_no}: expected path,label[,start,end], got {row}")
      path = row[0] if os.path.isabs(row[0]) else os.path.join(root, row[0])
      start, end = (float(row[2]), float(row[3])) if len(row) == 4 else (None, None)
      items.append(VideoItem(path, row[1], start, end))
  if not items:
    raise ValueError(f"--input={input_path}: the CSV lists no video")
  return items


LABEL_SEPARATOR = ";"


def label_parts(label: str) -> list[str]:
  return [p.strip() for p in label.split(LABEL_SEPARATOR)]


def build_label_map(labels: Sequence[str], given: Optional[str], output_dir: str) -> dict:
  """{class name: index}; see the module docstring for the order of precedence."""
  existing = os.path.join(output_dir, "label_map.json")
  for source in (given, existing if os.path.exists(existing) else None):
    if source:
      with open(source) as f:
        label_map = json.load(f)
      if not isinstance(label_map, dict) or not all(
          isinstance(v, int) or (isinstance(v, str) and v.isdigit()) for v in label_map.values()):
        raise ValueError(f"{source}: expected a JSON object {{class name: integer index}}")
      return {k: int(v) for k, v in label_map.items()}
  names = sorted({p for label in labels for p in label_parts(label)})
  if all(n.lstrip("-").isdigit() for n in names):
    return {n: int(n) for n in sorted(names, key=int)}
  return {n: i for i, n in enumerate(names)}


def _frame_times(container_stream, frame) -> Optional[float]:
  if frame.pts is not None and container_stream.time_base is not None:
    return float(frame.pts * container_stream.time_base)
  return frame.time


def decode_resampled(path: str, fps: float, min_resize: int, start: Optional[float] = None,
                     end: Optional[float] = None) -> Iterator[np.ndarray]:
  """Yields uint8 [h, w, 3] frames at `fps`: output time τ_k = t0 + k / fps shows the last source
  frame whose time is <= τ_k (t0 = the first frame at or after `start`)."""
  import av  # pylint: disable=g-import-not-at-top
  with av.open(path) as container:
    if not container.streams.video:
      raise ValueError("no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
      raise ValueError("the video stream's codec is unknown to FFmpeg")
    _check_size(stream.codec_context.width, stream.codec_context.height, "the container announces")
    stream.thread_type = "AUTO"
    if start:
      container.seek(int(start / stream.time_base), stream=stream, backward=True)
    period = 1.0 / fps
    source_period = float(1 / stream.average_rate) if stream.average_rate else period
    size = None
    prev, t0, k, last_t = None, None, 0, None
    for frame in container.decode(stream):
      t = _frame_times(stream, frame)
      t = last_t + source_period if t is None and last_t is not None else (t or 0.0)
      if start is not None and t < start - _TIME_EPS * source_period:
        continue
      if end is not None and t >= end:
        break
      if size is None:
        _check_size(frame.width, frame.height, "the first frame has")
        size = _target_size(frame.width, frame.height, min_resize)
      if t0 is None:
        t0 = t
      while prev is not None and t0 + k * period < t - _TIME_EPS * period:
        yield prev
        k += 1
      prev = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
      last_t = t
    if prev is None:
      raise ValueError("no video frame could be decoded")
    announced = _announced_end(stream)
    wanted_end = announced if end is None or announced is None else min(announced, end)
    if wanted_end is not None and last_t + source_period < wanted_end - 2 * source_period:
      # FFmpeg decodes what it can of a damaged file without an error: check the duration.
      raise ValueError(f"frames stop at {last_t + source_period:.2f} s but the container announces "
                       f"{announced:.2f} s (truncated or corrupt file)")
    stop = last_t + source_period if end is None else min(last_t + source_period, end)
    while t0 + k * period < stop - _TIME_EPS * period:
      yield prev
      k += 1


def _check_size(width: int, height: int, what: str) -> None:
  if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
    raise ValueError(f"{what} {width}x{height} pixels, which exceeds the limit of {MAX_SIDE} per "
                     f"side and {MAX_PIXELS} in all (a damaged header?)")


def _announced_end(stream) -> Optional[float]:
  """End time of the stream according to the container, in seconds (None if unknown)."""
  if not stream.duration or stream.time_base is None:
    return None
  return float((stream.duration + (stream.start_time or 0)) * stream.time_base)


def _target_size(width: int, height: int, min_resize: int) -> tuple[int, int]:
  if not min_resize:
    return width, height
  scale = min_resize / min(width, height)
  return max(1, round(width * scale)), max(1, round(height * scale))


def encode_jpegs(frames: Iterator[np.ndarray], qscale: int) -> list[bytes]:
  """JPEG-encodes uint8 [h, w, 3] frames with PyAV's MJPEG encoder (no TensorFlow in workers).

  `qscale` is ffmpeg's `-q:v`: 1 (best) to 31; 2 gives about the size and error of JPEG quality 90.
  """
  import av  # pylint: disable=g-import-not-at-top
  encoder, out = None, []
  for frame in frames:
    if encoder is None:
      encoder = av.CodecContext.create("mjpeg", "w")
      encoder.height, encoder.width = frame.shape[:2]
      encoder.pix_fmt = "yuvj420p"  # Full-range BT.601 4:2:0, the JFIF convention.
      encoder.time_base = fractions.Fraction(1, 25)
      encoder.qmin = encoder.qmax = qscale
    packets = encoder.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
        format="yuvj420p"))
    out.extend(bytes(p) for p in packets)  # MJPEG has no delay: one packet per frame.
  return out


def convert_video(item: VideoItem, label_indices: list[int], fps: float, min_resize: int,
                  jpeg_qscale: int) -> Converted:
  """Decodes, resamples and JPEG-encodes one video (runs in the worker processes)."""
  try:
    jpegs = encode_jpegs(decode_resampled(item.path, fps, min_resize, item.start, item.end),
                         jpeg_qscale)
  except Exception as e:  # pylint: disable=broad-except
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    return Converted(item, error=f"{type(e).__name__}: {message}")
  return Converted(item, labels=label_indices, jpegs=jpegs)


def _record(result: Converted, fps: float) -> bytes:
  from vivit_jax.data import tfrecord  # pylint: disable=g-import-not-at-top
  item = result.item
  context = {tfrecord.FILENAME_KEY: item.path, "video/fps": float(fps)}
  if item.start is not None:
    context["clip/start/timestamp"] = int(round(item.start * 1e6))
    context["clip/end/timestamp"] = int(round(item.end * 1e6))
  return tfrecord.make_clip_example(result.jpegs, result.labels, label_text=item.label,
                                    context=context)


def _convert_job(args) -> Converted:
  return convert_video(*args)


def convert(items: Sequence[VideoItem], label_map: dict, output_dir: str, split: str,
            num_shards: int, *, fps: float = 25.0, min_resize: int = 256, workers: int = 1,
            jpeg_qscale: int = 2, seed: int = 0, progress: bool = True) -> dict:
  """Converts `items` into `split` shards in `output_dir`; returns the summary (also written).

  Raises:
    OSError: a shard could not be written (disk full, ...), naming it; no shard is replaced.
    CorruptRecordError: a written shard does not read back; no shard is replaced.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from vivit_jax.data import tfrecord  # pylint: disable=g-import-not-at-top
  if num_shards < 1:
    raise ValueError(f"--num_shards={num_shards} must be >= 1")
  if fps <= 0:
    raise ValueError(f"--fps={fps} must be > 0")
  os.makedirs(output_dir, exist_ok=True)
  start_time = time.time()
  # Mix classes across shards (hosts read whole shards), deterministically.
  order = np.random.default_rng(seed).permutation(len(items))
  items = [items[i] for i in order]
  skipped, jobs = [], []
  for item in items:
    unknown = [p for p in label_parts(item.label) if p not in label_map]
    if unknown:
      skipped.append((item.path, f"label {unknown[0]!r} not in the label map"))
    else:
      jobs.append((item, [label_map[p] for p in label_parts(item.label)], fps, min_resize,
                   jpeg_qscale))
  names = [f"{split}-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
  tmp_paths = [os.path.join(output_dir, f"{n}.tmp-{os.getpid()}") for n in names]
  writers = []
  shard_counts = [0] * num_shards
  written = frames = 0
  current = tmp_paths[0]  # the file being written, for the message of a failed write
  try:
    for tmp in tmp_paths:
      current = tmp
      writers.append(tf.io.TFRecordWriter(tmp))
    if workers > 1:
      pool = multiprocessing.get_context("spawn").Pool(workers)
      results = pool.imap(_convert_job, jobs)
    else:
      pool, results = None, map(_convert_job, jobs)
    for result in tqdm(results, total=len(jobs), desc=f"{split}", unit="video",
                       disable=not progress):
      if result.error is not None:
        skipped.append((result.item.path, result.error))
        print(f"warning: skipping {result.item.path}: {result.error}", file=sys.stderr)
        continue
      shard = written % num_shards
      current = tmp_paths[shard]
      writers[shard].write(_record(result, fps))
      shard_counts[shard] += 1
      written += 1
      frames += len(result.jpegs)
    if pool is not None:
      pool.close()
      pool.join()
    for writer, tmp in zip(writers, tmp_paths):
      current = tmp
      writer.close()
    # Every shard is read back (CRCs, record count) before any replaces an existing file.
    for tmp, count in zip(tmp_paths, shard_counts):
      if tfrecord.verify_file(tmp) != count:
        raise tfrecord.CorruptRecordError(f"{tmp}: {count} records written, not all read back")
    for tmp, name in zip(tmp_paths, names):
      current = tmp
      os.replace(tmp, os.path.join(output_dir, name))
  except (OSError, tf.errors.OpError) as e:
    reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
    raise OSError(getattr(e, "errno", None) or errno.EIO,
                  f"cannot write {current}: {reason}; conversion stopped, the files already in "
                  f"{output_dir} are untouched") from e
  finally:
    for writer, tmp in zip(writers, tmp_paths):
      try:
        writer.close()
      except (OSError, tf.errors.OpError):
        pass  # the failure is being reported already
      if os.path.exists(tmp):
        os.remove(tmp)
  _write_json(os.path.join(output_dir, "label_map.json"), label_map)
  summary = {
      "split": split, "videos": len(items), "written": written, "skipped": len(skipped),
      "frames": frames, "fps": fps, "min_resize": min_resize, "shards": shard_counts,
      "seconds": round(time.time() - start_time, 2),
      "skipped_videos": [{"path": p, "reason": r} for p, r in skipped],
  }
  _write_json(os.path.join(output_dir, f"{split}-summary.json"), summary)
  return summary


def _write_json(path: str, obj) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=1)
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input", required=True, help="folder with one sub-folder per class, or CSV")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--split", required=True, help="shard name prefix, e.g. train")
  parser.add_argument("--num_shards", type=int, required=True)
  parser.add_argument("--fps", type=float, default=25.0)
  parser.add_argument("--min_resize", type=int, default=256, help="short side in pixels; 0: keep")
  parser.add_argument("--label_map", default=None, help="JSON {class name: index}")
  parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
  parser.add_argument("--jpeg_qscale", type=int, default=2,
                      help="JPEG quantiser scale, 1 (best) to 31, as ffmpeg's -q:v")
  parser.add_argument("--seed", type=int, default=0, help="order of videos across shards")
  args = parser.parse_args(argv)
  try:
    items = list_videos(args.input)
    label_map = build_label_map([i.label for i in items], args.label_map, args.output_dir)
    summary = convert(items, label_map, args.output_dir, args.split, args.num_shards, fps=args.fps,
                      min_resize=args.min_resize, workers=args.workers,
                      jpeg_qscale=args.jpeg_qscale, seed=args.seed)
  except ValueError as e:  # bad input or arguments
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:  # disk full, permissions: the message names the file
    print(f"error: {e.strerror or e}", file=sys.stderr)
    return 3
  print(f"{args.split}: {summary['written']} of {summary['videos']} videos written "
        f"({summary['frames']} frames) into {args.num_shards} shards in {args.output_dir} in "
        f"{summary['seconds']} s; {summary['skipped']} skipped")
  for entry in summary["skipped_videos"]:
    print(f"  skipped {entry['path']}: {entry['reason']}")
  return 0 if summary["written"] else 1


if __name__ == "__main__":
  sys.exit(main())
