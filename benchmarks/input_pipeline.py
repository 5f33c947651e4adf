r"""Training input throughput: sample-then-decode (ours) vs decode-every-frame (baseline).

  PYTHONPATH=. python benchmarks/input_pipeline.py [--videos=24] [--frames=250] [--batches=12]

Writes (once, cached in --data_dir) Kinetics-like TFRecords: `--videos` clips of `--frames` frames
(10 s at 25 fps) of 340x256 JPEGs, then times `build_dataset(split='train')` with 32 frames at
stride 2, 224 crops, scale jitter, flip and colour augmentation, in clips/s, for both pipelines in
the same run (`--rounds` rounds in alternating order; medians reported). The baseline is the same pipeline with `decode_all_frames=True` (every frame decoded,
then the window taken), which is what a reader that decodes the whole video does.

Also measured: the cost of checking every record's CRC (each clip read checks the masked CRC-32C of
its record, a few MB), as the time to check one record over the time per clip at the measured rate
(issue target: < 5%), median over the same rounds.
"""
import argparse
import json
import os
import time

import numpy as np

from vivit_jax.data import build_dataset
from vivit_jax.data import tfrecord


def _video(rng: np.random.Generator, num_frames: int, h: int = 256, w: int = 340) -> np.ndarray:
  """Smooth moving colour gradients plus light noise: JPEG sizes close to natural video."""
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  phase = rng.uniform(0, 2 * np.pi, 3)
  frames = np.empty((num_frames, h, w, 3), np.uint8)
  for t in range(num_frames):
    channels = [127 + 100 * np.sin(xs / (30 + 10 * c) + ys / 47 + phase[c] + 0.08 * t)
                for c in range(3)]
    image = np.stack(channels, -1) + rng.normal(0, 6, (h, w, 3))
    frames[t] = np.clip(image, 0, 255).astype(np.uint8)
  return frames


def make_data(data_dir: str, num_videos: int, num_frames: int) -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = os.path.join(data_dir, f"bench-{num_videos}x{num_frames}-00000-of-00001")
  if os.path.exists(path):
    return path
  os.makedirs(data_dir, exist_ok=True)
  rng = np.random.default_rng(0)

  def records():
    for i in range(num_videos):
      frames = _video(rng, num_frames)
      yield tfrecord.make_clip_example(
          [tf.io.encode_jpeg(f, quality=90).numpy() for f in frames], [i % 10])
      print(f"  wrote video {i + 1}/{num_videos}", end="\r", flush=True)

  tfrecord.write_records_atomically(path, records())
  print()
  return path


def clips_per_second(dataset_configs, batch_size: int, num_batches: int, warmup: int) -> float:
  it = iter(build_dataset(dataset_configs, "train", batch_size, seed=0))
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = next(it)
  elapsed = time.perf_counter() - start
  assert batch["inputs"].shape == (batch_size, 32, 224, 224, 3)
  return num_batches * batch_size / elapsed


def crc_seconds_per_record(path: str) -> float:
  """Time to check the data CRC of one record (what each clip read adds), mean over the file."""
  index = tfrecord.index_files([path])
  reader = tfrecord.RecordReader(index)
  records = [reader.read(i) for i in range(len(index))]  # read (and checked) once, out of the timing
  reader.close()
  start = time.perf_counter()
  for record in records:
    tfrecord.masked_crc(record)
  return (time.perf_counter() - start) / len(records)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default="/tmp/vivit_bench_videos")
  parser.add_argument("--videos", type=int, default=24)
  parser.add_argument("--frames", type=int, default=250)
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--batches", type=int, default=12)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--json", default=None, help="also write the figures here")
  args = parser.parse_args()
  path = make_data(args.data_dir, args.videos, args.frames)
  import ml_collections  # pylint: disable=g-import-not-at-top
  data_cfg = ml_collections.ConfigDict({
      "base_dir": "", "tables": {"train": path}, "num_classes": 10, "num_frames": 32,
      "stride": 2, "min_resize": 256, "crop_size": 224, "zero_centering": True,
      "random_flip": True, "decode_all_frames": False,
      "augmentation_params": {"do_jitter_scale": True, "scale_min_factor": 0.9,
                              "scale_max_factor": 1.33, "prob_scale_jitter": 1.0,
                              "do_color_augment": True, "prob_color_augment": 0.8,
                              "prob_color_drop": 0.1},
  })
  # Rounds alternate the order (ours first, then baseline first) so that a change in the load of a
  # shared machine hits both pipelines alike; the figures are medians over rounds.
  runs = {"sample_then_decode": [], "decode_every_frame": []}
  crc_fractions = []
  for r in range(args.rounds):
    order = list(runs) if r % 2 == 0 else list(runs)[::-1]
    for name in order:
      data_cfg.decode_all_frames = name == "decode_every_frame"
      runs[name].append(clips_per_second(data_cfg, args.batch_size, args.batches, args.warmup))
    crc_fractions.append(crc_seconds_per_record(path) * runs["sample_then_decode"][-1])
    print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.2f} clips/s" for n, v in runs.items())
          + f", CRC check {100 * crc_fractions[-1]:.2f}% of the time per clip")
  results = {name: float(np.median(v)) for name, v in runs.items()}
  results["speedup"] = results["sample_then_decode"] / results["decode_every_frame"]
  results["crc_fraction_of_clip_time"] = float(np.median(crc_fractions))
  results["record_mb"] = os.path.getsize(path) / args.videos / 1e6
  results.update(runs=runs, videos=args.videos, frames=args.frames, batch_size=args.batch_size,
                 batches=args.batches, cpu_count=os.cpu_count())
  for name in runs:
    print(f"{name:>20}: {results[name]:7.2f} clips/s (median of {args.rounds})")
  print(f"{'speedup':>20}: {results['speedup']:7.2f}x  ({args.frames}-frame 340x256 videos, 32 "
        f"frames at stride 2, 224 crop, {os.cpu_count()} CPUs)")
  print(f"{'CRC check':>20}: {100 * results['crc_fraction_of_clip_time']:7.2f}% of the time per "
        f"clip ({results['record_mb']:.1f} MB records; median of {args.rounds})")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
