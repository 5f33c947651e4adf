"""Converter: MP4s written with PyAV → TFRecords → the pipeline, and bad inputs."""
import errno
import json
import os
import pathlib
import subprocess
import sys

import av
import numpy as np
import pytest
import tensorflow as tf

from tests import data_fixtures as fx
from vivit_jax.data import build_dataset
from vivit_jax.data import tfrecord
from vivit_jax.tools import make_tfrecords

REPO_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
H, W = 48, 64


def moving_pattern(num_frames: int) -> np.ndarray:
  """uint8 [T, H, W, 3]: a bright bar moving right, the green level = 8 * frame index + 4."""
  frames = np.zeros((num_frames, H, W, 3), np.uint8)
  for k in range(num_frames):
    frames[k, :, :, 1] = 8 * k + 4
    frames[k, :, (2 * k) % W: (2 * k) % W + 4, 0] = 255
  return frames


def write_mp4(path, frames: np.ndarray, fps: int, faststart: bool = False) -> None:
  options = {"movflags": "faststart"} if faststart else {}  # Index first: truncation decodes.
  with av.open(str(path), "w", options=options) as container:
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    stream.options = {"qscale": "2"}
    stream.codec_context.qmax = 3
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def green_index(pixels: np.ndarray) -> np.ndarray:
  """Frame index from the green level of frames [..., h, w, 3] in [0, 255]."""
  return np.round((pixels[..., 1].mean(axis=(-2, -1)) - 4) / 8).astype(int)


def _decoded(record: bytes) -> np.ndarray:
  example = tf.train.SequenceExample.FromString(record)
  frames = example.feature_lists.feature_list[tfrecord.FRAMES_KEY].feature
  return np.stack([tf.io.decode_jpeg(f.bytes_list.value[0]).numpy() for f in frames])


def test_folder_roundtrip_through_the_pipeline(tmp_path):
  src = {"walk": [("a.mp4", 30)], "jump": [("b.mp4", 24), ("c.mp4", 12)]}
  for label, videos in src.items():
    (tmp_path / "in" / label).mkdir(parents=True)
    for name, n in videos:
      write_mp4(tmp_path / "in" / label / name, moving_pattern(n), fps=30)
  out = tmp_path / "out"
  rc = make_tfrecords.main([f"--input={tmp_path / 'in'}", f"--output_dir={out}", "--split=val",
                            "--num_shards=2", "--fps=30", "--min_resize=48", "--workers=1"])
  assert rc == 0
  assert sorted(os.listdir(out)) == ["label_map.json", "val-00000-of-00002",
                                     "val-00001-of-00002", "val-summary.json"]
  assert json.loads((out / "label_map.json").read_text()) == {"jump": 0, "walk": 1}
  summary = json.loads((out / "val-summary.json").read_text())
  assert (summary["written"], summary["skipped"], summary["frames"]) == (3, 0, 66)
  # Every frame is there, in order, and matches the source within JPEG (and MPEG-4) tolerance.
  by_name = {}
  for shard in sorted(out.glob("val-0000*")):
    for record in tfrecord.iterate_records(str(shard)):
      example = tf.train.SequenceExample.FromString(record)
      context = example.context.feature
      name = os.path.basename(context["video/filename"].bytes_list.value[0].decode())
      by_name[name] = (_decoded(record), context["clip/label/index"].int64_list.value[0])
  for label, videos in src.items():
    for name, n in videos:
      frames, index = by_name[name]
      assert frames.shape == (n, H, W, 3) and index == {"jump": 0, "walk": 1}[label]
      np.testing.assert_array_equal(green_index(frames.astype(float)), np.arange(n))
      assert np.abs(frames.astype(float) - moving_pattern(n)).mean() < 4.0
  # Read back through the pipeline: central 8-frame windows at stride 2, one central crop.
  dc = fx.dataset_configs(str(out), {"train": "val@2", "validation": "val@2", "test": "val@2"},
                          num_classes=2, num_frames=8, stride=2, min_resize=48, crop_size=32,
                          zero_centering=True, num_test_clips=2, do_three_spatial_crops=True)
  batch = fx.collect(build_dataset(dc, "validation", 4))[0]
  assert batch["inputs"].shape == (4, 8, 32, 32, 3) and batch["batch_mask"].tolist() == [1, 1, 1, 0]
  assert -1.0 <= batch["inputs"].min() and batch["inputs"].max() <= 1.0
  starts = {30: 7, 24: 4, 12: 0}
  for clip in batch["inputs"][:3]:  # The first index tells which video it is.
    idx = green_index((clip + 1.0) * 127.5)
    n = {7: 30, 4: 24}.get(int(idx[0]), 12)
    np.testing.assert_array_equal(idx, (starts[n] + 2 * np.arange(8)) % n)
  test = fx.collect(build_dataset(dc, "test", 3))[0]
  assert test["inputs"].shape == (3, 6, 8, 32, 32, 3)  # 2 clips x 3 crops.
  for views in test["inputs"]:
    idx = green_index((views + 1.0) * 127.5)  # [6, 8]
    n = {15: 30, 9: 24, 0: 12}[int(idx[3, 0])]  # Second clip starts at T - span (or 0).
    for view, start in zip(idx, [0] * 3 + [max(n - 15, 0)] * 3):
      np.testing.assert_array_equal(view, (start + 2 * np.arange(8)) % n)
  for batch in fx.collect(build_dataset(dc, "train", 3, seed=1), 4):
    assert batch["inputs"].shape == (3, 8, 32, 32, 3)
    for clip, label in zip(batch["inputs"], batch["label"].argmax(-1)):
      idx = green_index((clip + 1.0) * 127.5)
      n = 30 if label == 1 else (24 if idx.max() >= 12 else 12)  # A 24-frame window reaches 14.
      np.testing.assert_array_equal(idx, (idx[0] + 2 * np.arange(8)) % n)
      assert idx[0] <= (n - 15 if n >= 15 else n - 1)  # Random start within [0, T - span].


def test_csv_with_times_fps_and_workers_through_the_cli(tmp_path):
  write_mp4(tmp_path / "v.mp4", moving_pattern(30), fps=30)
  (tmp_path / "list.csv").write_text("path,label,start,end\nv.mp4,7;1,0.2,0.8\nv.mp4,3;0,0,1\n")
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  proc = subprocess.run(
      [sys.executable, "-m", "vivit_jax.tools.make_tfrecords", f"--input={tmp_path / 'list.csv'}",
       f"--output_dir={out}", "--split=train", "--num_shards=1", "--fps=15", "--min_resize=24",
       "--workers=2"], capture_output=True, text=True, env=env, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "train: 2 of 2 videos written (24 frames)" in proc.stdout
  # Integer labels (two per clip, e.g. Epic-Kitchens noun;verb) are used as they are.
  assert json.loads((out / "label_map.json").read_text()) == {"0": 0, "1": 1, "3": 3, "7": 7}
  records = list(tfrecord.iterate_records(str(out / "train-00000-of-00001")))
  lengths = {}
  for record in records:
    example = tf.train.SequenceExample.FromString(record)
    label, second = example.context.feature["clip/label/index"].int64_list.value
    assert second == {7: 1, 3: 0}[label]
    frames = _decoded(record)
    assert frames.shape[1:] == (24, 32, 3)  # Short side resized to 24.
    lengths[label] = green_index(frames.astype(float)).tolist()
  # 15 fps from 30 fps: every other frame; 0.2 s to 0.8 s is source frames 6 to 23.
  assert lengths[3] == list(range(0, 30, 2))
  assert lengths[7] == list(range(6, 24, 2))


def test_bad_videos_are_reported_and_skipped(tmp_path, capsys):
  good = moving_pattern(10)
  (tmp_path / "in" / "a").mkdir(parents=True)
  (tmp_path / "in" / "b").mkdir()
  write_mp4(tmp_path / "in" / "a" / "good.mp4", good, fps=25)
  write_mp4(tmp_path / "in" / "b" / "full.mp4", good, fps=25)
  data = (tmp_path / "in" / "b" / "full.mp4").read_bytes()
  (tmp_path / "in" / "b" / "truncated.mp4").write_bytes(data[: len(data) // 2])
  write_mp4(tmp_path / "in" / "b" / "faststart.mp4", moving_pattern(30), fps=25, faststart=True)
  data = (tmp_path / "in" / "b" / "faststart.mp4").read_bytes()
  (tmp_path / "in" / "b" / "faststart_truncated.mp4").write_bytes(data[: len(data) // 2])
  (tmp_path / "in" / "a" / "notes.mp4").write_text("this is not a video\n")
  out = tmp_path / "out"
  rc = make_tfrecords.main([f"--input={tmp_path / 'in'}", f"--output_dir={out}", "--split=s",
                            "--num_shards=1", "--min_resize=0", "--workers=1"])
  assert rc == 0
  summary = json.loads((out / "s-summary.json").read_text())
  assert (summary["written"], summary["skipped"]) == (3, 3)
  reasons = {os.path.basename(e["path"]): e["reason"] for e in summary["skipped_videos"]}
  assert set(reasons) == {"truncated.mp4", "notes.mp4", "faststart_truncated.mp4"}
  assert "truncated or corrupt" in reasons["faststart_truncated.mp4"]
  printed = capsys.readouterr()
  assert "truncated.mp4" in printed.err and "notes.mp4" in printed.err
  assert "3 of 6 videos written" in printed.out and "3 skipped" in printed.out
  assert [p for p in os.listdir(out) if ".tmp" in p] == []
  # A label missing from a given label map is skipped and counted, too.
  (tmp_path / "map.json").write_text(json.dumps({"a": "0"}))  # SSv2 style: string indices.
  make_tfrecords.main([f"--input={tmp_path / 'in'}", f"--output_dir={tmp_path / 'o2'}",
                       "--split=s", "--num_shards=1", "--workers=1",
                       f"--label_map={tmp_path / 'map.json'}"])
  summary = json.loads((tmp_path / "o2" / "s-summary.json").read_text())
  assert summary["written"] == 1 and summary["skipped"] == 5
  assert any("label 'b' not in the label map" in e["reason"] for e in summary["skipped_videos"])
  # An empty folder is an error naming it.
  (tmp_path / "empty").mkdir()
  assert make_tfrecords.main([f"--input={tmp_path / 'empty'}", f"--output_dir={out}",
                              "--split=s", "--num_shards=1"]) == 2
  assert f"--input={tmp_path / 'empty'}: no video found" in capsys.readouterr().err


def test_interrupted_conversion_leaves_no_shard(tmp_path, monkeypatch):
  (tmp_path / "in" / "a").mkdir(parents=True)
  for i in range(3):
    write_mp4(tmp_path / "in" / "a" / f"{i}.mp4", moving_pattern(4), fps=25)
  calls = []

  def failing(args):
    calls.append(args)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return make_tfrecords.convert_video(*args)

  monkeypatch.setattr(make_tfrecords, "_convert_job", failing)
  with pytest.raises(KeyboardInterrupt):
    make_tfrecords.main([f"--input={tmp_path / 'in'}", f"--output_dir={tmp_path / 'out'}",
                         "--split=s", "--num_shards=1", "--workers=1"])
  assert [p for p in os.listdir(tmp_path / "out") if p.startswith("s-")] == []


def test_disk_full_stops_naming_the_shard_and_keeps_the_old_ones(tmp_path, monkeypatch, capsys):
  (tmp_path / "in" / "a").mkdir(parents=True)
  for i in range(3):
    write_mp4(tmp_path / "in" / "a" / f"{i}.mp4", moving_pattern(4), fps=25)
  out = tmp_path / "out"
  args = [f"--input={tmp_path / 'in'}", f"--output_dir={out}", "--split=s", "--num_shards=2",
          "--workers=1", "--min_resize=0"]
  assert make_tfrecords.main(args) == 0
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  real_write = tf.io.TFRecordWriter.write
  calls = []

  def write(self, record):
    calls.append(1)
    if len(calls) == 2:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_write(self, record)

  monkeypatch.setattr(tf.io.TFRecordWriter, "write", write)
  assert make_tfrecords.main(args) == 3
  err = capsys.readouterr().err
  pid = os.getpid()
  assert f"error: cannot write {out / f's-00001-of-00002.tmp-{pid}'}: No space left on device; " \
         f"conversion stopped, the files already in {out} are untouched" in err, err
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced, no temp
  assert sum(tfrecord.verify_file(str(out / n)) for n in before if n.startswith("s-0")) == 3


def test_a_shard_that_does_not_read_back_replaces_nothing(tmp_path, monkeypatch, capsys):
  (tmp_path / "in" / "a").mkdir(parents=True)
  write_mp4(tmp_path / "in" / "a" / "0.mp4", moving_pattern(4), fps=25)
  out = tmp_path / "out"
  real_close = tf.io.TFRecordWriter.close

  def close(self):  # a disk that silently corrupts what it stores: one byte of the data changes
    real_close(self)
    for tmp in out.glob("*.tmp-*"):
      data = bytearray(tmp.read_bytes())
      data[len(data) // 2] ^= 0xFF
      tmp.write_bytes(bytes(data))

  monkeypatch.setattr(tf.io.TFRecordWriter, "close", close)
  rc = make_tfrecords.main([f"--input={tmp_path / 'in'}", f"--output_dir={out}", "--split=s",
                            "--num_shards=1", "--workers=1"])
  assert rc == 2
  assert f"s-00000-of-00001.tmp-{os.getpid()} record #0: data CRC mismatch" in (
      capsys.readouterr().err)
  assert os.listdir(out) == []
