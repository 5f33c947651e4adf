"""Seeded fuzzing of the front doors: >= 200 malformed inputs each to the video converter, the
TFRecord reader and every checkpoint loader (Scenic msgpack, ViT npz, HF folder, Orbax folder).

Every input must end in a clear error (our error types, naming the file) or a reported skip: no
crash, no hang (a deadline per part), no pickle executed (malicious pickles are among the inputs),
nothing written outside the output folder, and the good inputs beside the bad ones are kept. The
counts of inputs and outcomes are printed (`pytest -s` shows them).
"""
import collections
import contextlib
import io
import json
import os
import pathlib
import re
import shutil
import signal
import struct

import av
import numpy as np
import pytest
import tensorflow as tf
from flax import serialization

from tests import data_fixtures as fx
from vivit_jax import checkpoints
from vivit_jax.data import build_dataset
from vivit_jax.data import tfrecord
from vivit_jax.tools import make_tfrecords

SEED = 20261126
N = 200  # malformed inputs per front door (at least)
CLEAR = (checkpoints.CheckpointFormatError, checkpoints.CheckpointMismatchError)


@contextlib.contextmanager
def deadline(seconds: int):
  """A hang becomes a test failure (SIGALRM interrupts Python code)."""
  def on_alarm(signum, frame):
    raise TimeoutError(f"no answer within {seconds} s: a hang")
  previous = signal.signal(signal.SIGALRM, on_alarm)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def mutants(rng: np.random.Generator, data: bytes, n: int, keep: int = 0) -> list[tuple[str, bytes]]:
  """`n` malformed copies of `data` (the first `keep` bytes untouched): (kind, bytes)."""
  out = [("empty", data[:keep])]
  body = len(data) - keep
  while len(out) < n:
    kind = ("bit_flips", "truncated", "garbage_run", "inserted", "random_bytes")[len(out) % 5]
    b = bytearray(data)
    pos = keep + int(rng.integers(body))
    if kind == "bit_flips":
      for _ in range(int(rng.integers(1, 9))):
        p = keep + int(rng.integers(body))
        b[p] ^= 1 << int(rng.integers(8))
    elif kind == "truncated":
      b = b[:pos]
    elif kind == "garbage_run":
      k = int(rng.integers(1, 65))
      b[pos:pos + k] = rng.bytes(k)
    elif kind == "inserted":
      b[pos:pos] = rng.bytes(int(rng.integers(1, 17)))
    else:
      b = b[:keep] + rng.bytes(int(rng.integers(1, 2 * body + 2)))
    if bytes(b) != data:
      out.append((kind, bytes(b)))
  return out


class _Boom:
  """Unpickling this creates a folder: the proof that a pickle was executed."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.mkdir, (self.marker,)


def _tree(root: pathlib.Path, skip: pathlib.Path | None = None) -> dict:
  return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
          if skip is None or skip not in p.parents and p != skip}


def _report(name: str, outcomes: collections.Counter) -> None:
  total = sum(outcomes.values())
  print(f"\nfuzz {name}: {total} inputs: " +
        ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1])))


# ----------------------------------------------------------------------------- the converter

def _write_video(path, container: str, codec: str, num_frames: int, size=(32, 24)) -> None:
  w, h = size
  with av.open(str(path), "w", format=container) as out:
    stream = out.add_stream(codec, rate=25)
    stream.width, stream.height = w, h
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    for k in range(num_frames):
      frame = np.full((h, w, 3), 10 * k + 5, np.uint8)
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)


def _huge(avi: bytes, which: str) -> bytes:
  """An MJPEG AVI that claims 65000 x 65000 pixels in its headers, its JPEGs, or both."""
  b = bytearray(avi)
  if which in ("headers", "both"):
    i = b.index(b"avih") + 8
    struct.pack_into("<II", b, i + 32, 65000, 65000)  # dwWidth, dwHeight
    i = b.index(b"strf") + 8
    struct.pack_into("<ii", b, i + 4, 65000, 65000)  # biWidth, biHeight
  if which in ("jpegs", "both"):
    i = 0
    while (i := b.find(b"\xff\xc0", i + 1)) > 0:  # SOF0: length, precision, height, width
      struct.pack_into(">HH", b, i + 5, 65000, 65000)
  return bytes(b)


def test_converter_fuzz(tmp_path):
  rng = np.random.default_rng(SEED)
  src, out = tmp_path / "videos", tmp_path / "out"
  src.mkdir()
  goods = []
  for name, container, codec in (("g.mp4", "mp4", "mpeg4"), ("g.webm", "webm", "libvpx"),
                                 ("g.avi", "avi", "mjpeg")):
    _write_video(src / name, container, codec, 6)
    goods.append(src / name)
  _write_video(src / "one_frame.mp4", "mp4", "mpeg4", 1)
  goods.append(src / "one_frame.mp4")
  bad = [("zero_frames", src / "zero.y4m")]  # a raw-video header, then no frame
  bad[0][1].write_bytes(b"YUV4MPEG2 W32 H24 F25:1 Ip A1:1 C420jpeg\n")
  avi = (src / "g.avi").read_bytes()
  for which in ("headers", "jpegs", "both"):
    (src / f"huge_{which}.avi").write_bytes(_huge(avi, which))
    bad.append((f"huge_{which}", src / f"huge_{which}.avi"))
  # Raw video announcing 12000 x 6000 pixels: FFmpeg would allocate 108 MB per frame.
  (src / "huge.y4m").write_bytes(b"YUV4MPEG2 W12000 H6000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" +
                                 bytes(100_000))
  bad.append(("huge_y4m", src / "huge.y4m"))
  for good in goods[:3]:
    for k, (kind, data) in enumerate(mutants(rng, good.read_bytes(), (N + 2) // 3)):
      path = src / f"{good.stem}_{k}_{kind}{good.suffix}"
      path.write_bytes(data)
      bad.append((kind, path))
  items = [make_tfrecords.VideoItem(str(p), "good") for p in goods]
  items += [make_tfrecords.VideoItem(str(p), "bad") for _, p in bad]
  before = _tree(tmp_path)
  with deadline(100):
    summary = make_tfrecords.convert(items, {"good": 0, "bad": 1}, str(out), "fuzz", 2,
                                     min_resize=0, workers=1, progress=False)
  # Nothing written outside the output folder (the inputs are untouched too).
  assert _tree(tmp_path, skip=out) == before
  written = {tf.train.SequenceExample.FromString(r).context.feature[
                 tfrecord.FILENAME_KEY].bytes_list.value[0].decode()
             for shard in sorted(out.glob("fuzz-0*")) for r in tfrecord.iterate_records(str(shard))}
  skipped = {e["path"]: e["reason"] for e in summary["skipped_videos"]}
  assert {str(p) for p in goods} <= written  # the good videos beside the bad ones are kept
  assert len(written) + len(skipped) == len(items) and not written & set(skipped)
  outcomes = collections.Counter()
  for kind, path in bad:
    if str(path) in written:
      outcomes[f"{kind}: written (decodes; no checksum in the video to tell)"] += 1
    else:
      reason = skipped[str(path)]
      assert reason and "\n" not in reason, (path, reason)
      outcomes[f"skipped ({reason.split(':')[0]})"] += 1
  for kind in ("zero_frames", "huge_jpegs", "huge_both", "huge_y4m"):
    assert str(dict(bad)[kind]) in skipped, kind
  assert "12000x6000 pixels, which exceeds the limit" in skipped[str(dict(bad)["huge_y4m"])]
  assert len(bad) >= N
  _report("video converter", outcomes)


# ----------------------------------------------------------------------------- the reader

def _framed(record: bytes) -> bytes:
  length = struct.pack("<Q", len(record))
  return (length + struct.pack("<I", tfrecord.masked_crc(length)) + record +
          struct.pack("<I", tfrecord.masked_crc(record)))


def _bad_records(rng: np.random.Generator, n: int) -> list[tuple[str, bytes]]:
  """Well-framed records with bad content: wrong feature types, empty frames, bad labels."""
  jpeg = fx.jpegs(fx.index_frames(4))

  def example(frames=jpeg, labels=(1,), frame_kind="bytes", label_kind="int64"):
    ex = tf.train.SequenceExample()
    ctx = ex.context.feature
    if label_kind == "int64":
      ctx[tfrecord.LABEL_KEY].int64_list.value.extend(labels)
    elif label_kind == "float":
      ctx[tfrecord.LABEL_KEY].float_list.value.extend(float(v) for v in labels)
    else:
      ctx[tfrecord.LABEL_KEY].bytes_list.value.extend(str(v).encode() for v in labels)
    feature_list = ex.feature_lists.feature_list[tfrecord.FRAMES_KEY]
    for f in frames:
      if frame_kind == "bytes":
        feature_list.feature.add().bytes_list.value.append(f)
      else:
        feature_list.feature.add().int64_list.value.append(len(f))
    return ex.SerializeToString()

  makers = [
      ("frames as int64", lambda: example(frame_kind="int64")),
      ("labels as float", lambda: example(label_kind="float")),
      ("labels as bytes", lambda: example(label_kind="bytes")),
      ("no frames", lambda: example(frames=[])),
      ("empty frame bytes", lambda: example(frames=[b""] * 4)),
      ("no label", lambda: example(labels=())),
      ("label out of range", lambda: example(labels=(int(rng.choice([-1, 5, 7, 2**62])),))),
      ("bit-flipped JPEG", lambda: example(frames=[mutants(rng, jpeg[0], 2, 2)[1][1]] + jpeg[1:])),
      ("frames of two sizes", lambda: example(frames=jpeg[:2] + fx.jpegs(fx.index_frames(2, 8, 8)))),
      ("not a SequenceExample", lambda: rng.bytes(int(rng.integers(1, 200)))),
      ("a tf.train.Example", lambda: tf.train.Example().SerializeToString() + b"\x0a\x00"),
  ]
  return [(kind, make()) for kind, make in (makers[i % len(makers)] for i in range(n))]


def test_reader_fuzz(tmp_path):
  rng = np.random.default_rng(SEED + 1)
  good = [fx.clip_record(4, i % 5) for i in range(4)]
  victim = fx.clip_record(4, 2)
  files, kinds = [], []
  # Byte-level damage (bit flips, truncation, ...) to the second record of a file.
  for k, (kind, data) in enumerate(mutants(rng, _framed(good[0]) + _framed(victim), N // 2,
                                           keep=len(_framed(good[0])))):
    files.append(tmp_path / f"bytes-{k:04d}")
    files[-1].write_bytes(data)
    kinds.append(kind)
  # Record-level damage, with good records before and after.
  for k, (kind, record) in enumerate(_bad_records(rng, N - N // 2 + 10)):
    files.append(tmp_path / f"records-{k:04d}")
    files[-1].write_bytes(_framed(good[1]) + _framed(record) + _framed(good[2]))
    kinds.append(kind)
  dc = fx.dataset_configs("", {"validation": [str(f) for f in files]})
  with deadline(100):
    ds = build_dataset(dc, "validation", 16)
    batches = fx.collect(ds)
  read = collections.defaultdict(set)  # file -> record numbers read
  for b in batches:
    for example_id, mask in zip(b["example_id"], b["batch_mask"]):
      if mask:
        f = int(ds._index.file_ids[example_id])  # pylint: disable=protected-access
        first = int(np.searchsorted(ds._index.file_ids, f))  # pylint: disable=protected-access
        read[f].add(int(example_id) - first)
  outcomes = collections.Counter()
  for f, (path, kind) in enumerate(zip(files, kinds)):
    assert 0 in read[f], (path, kind)  # the good record before the bad one is never lost
    if path.name.startswith("records"):
      assert 2 in read[f], (path, kind)  # nor the one after (the framing is intact)
    if 1 in read[f]:
      outcomes[f"{kind}: read (still a valid clip)"] += 1
      continue
    if path.name.startswith("bytes") and kind == "empty":
      outcomes["empty: the file ends after the good record"] += 1
      continue
    reason = ds.skipped.get(f"{path} record #1") or ds.skipped.get(str(path))
    assert reason and "\n" not in reason, (path, kind, reason)
    assert "unknown reason" not in reason, (path, kind, reason)
    outcomes[f"skipped ({re.sub(r'[0-9]+', 'N', reason.split(' (')[0].split(';')[0])})"] += 1
  assert len(files) >= N
  _report("TFRecord reader", outcomes)


# ----------------------------------------------------------------------------- the loaders

def _vit_flat() -> dict[str, np.ndarray]:
  r = np.random.default_rng(0)
  shapes = {"embedding/kernel": (4, 4, 3, 8), "embedding/bias": (8,), "cls": (1, 1, 8),
            "Transformer/posembed_input/pos_embedding": (1, 5, 8),
            "Transformer/encoderblock_0/LayerNorm_0/scale": (8,),
            "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel": (8, 16),
            "Transformer/encoder_norm/scale": (8,), "head/kernel": (8, 3), "head/bias": (3,)}
  return {k: r.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def _hf_folder(path: pathlib.Path) -> None:
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from tests import ckpt_testlib as lib  # pylint: disable=g-import-not-at-top
  from vivit_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  config = lib.vivit_config(hidden_size=16, mlp_dim=32, num_heads=2, num_layers=1)
  _, shapes = lib.param_shapes(config.model, 3, (1, 8, 16, 16, 3))
  path.mkdir()
  save_file(hf.params_to_state_dict(lib.random_like(shapes), 1),
            str(path / "model.safetensors"))
  (path / "config.json").write_text(json.dumps({
      "model_type": "vivit", "hidden_size": 16, "num_attention_heads": 2,
      "num_hidden_layers": 1, "intermediate_size": 32, "tubelet_size": [2, 4, 4],
      "image_size": 16, "num_frames": 8, "hidden_act": "gelu_fast", "layer_norm_eps": 1e-6,
      "qkv_bias": True, "num_labels": 3}))


def _load_all(load, cases, root: pathlib.Path) -> collections.Counter:
  """Loads every (kind, path) input: a clear error naming it, or (damage the format cannot see)
  a load. The loader writes nothing (the tree under `root` is unchanged)."""
  outcomes = collections.Counter()
  before = _tree(root)
  with deadline(100):
    for kind, path in cases:
      try:
        load(str(path))
      except CLEAR as e:
        assert str(path) in str(e), (kind, str(e))
        # One line, except the mismatch list (one line per parameter).
        assert isinstance(e, checkpoints.CheckpointMismatchError) or "\n" not in str(e), str(e)
        outcomes[f"error {type(e).__name__}"] += 1
      else:
        assert "wrong tree" not in kind and "pickle" not in kind, (kind, path)
        outcomes["loaded (the changed bytes are not covered by a checksum of the format)"] += 1
  assert _tree(root) == before
  return outcomes


# A failed Orbax restore leaves a callback for its closed event loop: noise, not a failure.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_checkpoint_loaders_fuzz(tmp_path):
  rng = np.random.default_rng(SEED + 2)
  marker = tmp_path / "pickle_was_executed"
  report = {}

  # Scenic msgpack: one file.
  flat = _vit_flat()
  good = serialization.msgpack_serialize(
      {"params": checkpoints.unflatten(flat), "global_step": 3})
  inputs = mutants(rng, good, N) + [
      ("wrong tree", serialization.msgpack_serialize(t)) for t in (
          [1, 2], {"params": {}}, {"optimizer": 5}, {"params": "x"}, {"global_step": 1})]
  cases = []
  for k, (kind, data) in enumerate(inputs):
    cases.append((kind, tmp_path / "scenic" / str(k) / "checkpoint"))
    cases[-1][1].parent.mkdir(parents=True)
    cases[-1][1].write_bytes(data)
  report["Scenic msgpack"] = _load_all(checkpoints.load_scenic_checkpoint, cases, tmp_path)
  (tmp_path / "scenic" / "0" / "checkpoint_7").write_bytes(good)  # a good one beside: loads
  np.testing.assert_array_equal(
      checkpoints.load_scenic_checkpoint(str(tmp_path / "scenic" / "0"))["cls"], flat["cls"])

  # ViT npz, with an object array whose pickle would create `marker`.
  def npz(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()

  boom = np.empty(1, object)
  boom[0] = _Boom(str(marker))
  pickled = npz({"x": boom})
  probe = np.empty(1, object)
  probe[0] = _Boom(str(tmp_path / "probe"))
  np.load(io.BytesIO(npz({"x": probe})), allow_pickle=True)["x"]  # a live pickle indeed
  assert (tmp_path / "probe").is_dir()
  inputs = mutants(rng, npz(flat), N) + [
      ("wrong tree", npz({"a": np.zeros(3)})), ("pickled object array", pickled)]
  cases = []
  for k, (kind, data) in enumerate(inputs):
    cases.append((kind, tmp_path / "npz" / f"{k}.npz"))
    cases[-1][1].parent.mkdir(exist_ok=True)
    cases[-1][1].write_bytes(data)
  report["ViT npz"] = _load_all(checkpoints.load_vit_params, cases, tmp_path)

  # Hugging Face folder: the weights, the config, or a pickle instead of safetensors.
  base = tmp_path / "hf_base"
  _hf_folder(base)
  checkpoints.import_hf(str(base))  # the good one loads
  weights = (base / "model.safetensors").read_bytes()
  config = (base / "config.json").read_bytes()
  inputs = [("weights " + k, "model.safetensors", d) for k, d in mutants(rng, weights, N - 50)]
  inputs += [("config " + k, "config.json", d) for k, d in mutants(rng, config, 40)]
  for key, value in (("hidden_size", "abc"), ("hidden_size", -4), ("num_hidden_layers", 7),
                     ("tubelet_size", [2]), ("image_size", "big"), ("hidden_act", "relu"),
                     ("layer_norm_eps", None), ("model_type", "bert"), ("num_frames", [8]),
                     ("intermediate_size", 1e30)):
    inputs.append((f"wrong tree: config {key}={value!r}", "config.json",
                   json.dumps(dict(json.loads(config), **{key: value})).encode()))
  import torch  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  torch.save({"w": _Boom(str(marker))}, buffer)
  inputs.append(("pickle in pytorch_model.bin", "pytorch_model.bin", buffer.getvalue()))
  cases = []
  for k, (kind, name, data) in enumerate(inputs):
    folder = tmp_path / "hf" / str(k)
    shutil.copytree(base, folder)
    if name == "pytorch_model.bin":
      (folder / "model.safetensors").unlink()
    (folder / name).write_bytes(data)
    cases.append((kind, folder))
  report["HF folder"] = _load_all(checkpoints.import_hf, cases, tmp_path)

  # Orbax folder: one file of the checkpoint damaged, or gone.
  base = tmp_path / "orbax_base"
  checkpoints.save_params({"a": {"kernel": flat["embedding/kernel"]}, "b": flat["cls"]}, base)
  files = sorted(p.relative_to(base) for p in base.rglob("*") if p.is_file())
  cases = []
  for k in range(N):
    name = files[k % len(files)]
    folder = tmp_path / "orbax" / str(k)
    shutil.copytree(base, folder)
    if k % 7 == 6:
      (folder / name).unlink()
      cases.append((f"{name} deleted", folder))
    else:
      kind, data = mutants(rng, (base / name).read_bytes(), 2)[int(k % 5 != 0)]
      (folder / name).write_bytes(data)
      cases.append((f"{name} {kind}", folder))
  report["Orbax folder"] = _load_all(checkpoints.load_params, cases, tmp_path)

  assert not marker.exists(), "a pickle was executed"
  for name, outcomes in report.items():
    assert sum(outcomes.values()) >= N, name
    _report(name, outcomes)
