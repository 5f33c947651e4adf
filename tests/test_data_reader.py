"""Reader and pipeline: file specs, frame layouts, sampling, host sharding, exactly-once evaluation,
deterministic training with resume, Epic-Kitchens labels, bad records."""
import os

import numpy as np
import pytest

from tests import data_fixtures as fx
from vivit_jax.data import build_dataset
from vivit_jax.data import tfrecord


def _ids(batches):
  return [int(i) for b in batches for i, m in zip(b["example_id"], b["batch_mask"]) if m > 0]


def test_file_spec_expansion(tmp_path):
  paths = fx.write_table(str(tmp_path), "train", [[fx.clip_record(4, 0)]] * 3)
  assert tfrecord.expand_file_spec(str(tmp_path), "train@3") == paths
  assert tfrecord.expand_file_spec(str(tmp_path), "train-*") == paths
  assert tfrecord.expand_file_spec("", [paths[2], paths[0]]) == [paths[2], paths[0]]
  assert tfrecord.expand_file_spec(str(tmp_path), f"{paths[1]},train-00000-of-00003") == [
      paths[1], paths[0]]
  with pytest.raises(FileNotFoundError,
                     match=r"'train@4'.*4 of 4 shards missing.*train-00000-of-00004"):
    tfrecord.expand_file_spec(str(tmp_path), "train@4")
  with pytest.raises(ValueError, match="positive shard count"):
    tfrecord.expand_file_spec(str(tmp_path), "train@x")
  with pytest.raises(FileNotFoundError, match="no file matches"):
    tfrecord.expand_file_spec(str(tmp_path), "val-*")


def test_both_frame_layouts_give_the_same_clips(tmp_path):
  for layout, legacy in (("seq", False), ("legacy", True)):
    fx.write_table(str(tmp_path / layout), "val", [[fx.clip_record(t, t % 5, legacy)
                                                    for t in (6, 9, 12)]])
  out = {}
  for layout in ("seq", "legacy"):
    dc = fx.dataset_configs(str(tmp_path / layout), {"validation": "val@1"})
    out[layout] = fx.collect(build_dataset(dc, "validation", 3))
  assert len(out["seq"]) == 1
  for key in ("inputs", "label", "batch_mask"):
    np.testing.assert_array_equal(out["seq"][0][key], out["legacy"][0][key])
  # Central 4-frame windows of 6, 9 and 12 frames.
  np.testing.assert_array_equal(fx.frame_index(out["seq"][0]["inputs"]),
                                [[1, 2, 3, 4], [2, 3, 4, 5], [4, 5, 6, 7]])


def test_sampled_indices_per_mode(tmp_path):
  # T = 20 and T = 5 (shorter than the window: wraps around); 4 frames at stride 3 (span 10).
  fx.write_table(str(tmp_path), "v", [[fx.clip_record(20, 1), fx.clip_record(5, 2)]])
  dc = fx.dataset_configs(str(tmp_path), {"train": "v@1", "validation": "v@1", "test": "v@1"},
                          stride=3, num_test_clips=3)
  val = fx.collect(build_dataset(dc, "validation", 2))[0]
  np.testing.assert_array_equal(fx.frame_index(val["inputs"]), [[5, 8, 11, 14], [0, 3, 1, 4]])
  test = fx.collect(build_dataset(dc, "test", 2))[0]
  assert test["inputs"].shape == (2, 3, 4, fx.FRAME_H, fx.FRAME_H, 3)
  np.testing.assert_array_equal(fx.frame_index(test["inputs"][0]),
                                [[0, 3, 6, 9], [5, 8, 11, 14], [10, 13, 16, 19]])
  np.testing.assert_array_equal(fx.frame_index(test["inputs"][1]), [[0, 3, 1, 4]] * 3)
  starts = {20: set(), 5: set()}
  for batch in fx.collect(build_dataset(dc, "train", 2, seed=3), 30):
    for clip, label in zip(fx.frame_index(batch["inputs"]), batch["label"].argmax(-1)):
      t = 20 if label == 1 else 5
      np.testing.assert_array_equal(clip, (clip[0] + np.arange(4) * 3) % t)
      starts[t].add(int(clip[0]))
  assert starts[20] <= set(range(11)) and len(starts[20]) >= 5  # Random over [0, T - span].
  assert starts[5] <= set(range(5)) and len(starts[5]) >= 3  # Short video: any start, wrapped.


def test_hosts_get_disjoint_files_that_cover_all(tmp_path):
  shards = [[fx.clip_record(4, 0) for _ in range(n)] for n in (3, 1, 4, 2, 3)]
  fx.write_table(str(tmp_path), "t", shards)
  dc = fx.dataset_configs(str(tmp_path), {"train": "t@5", "validation": "t@5"})
  seen = []
  for host in range(2):
    ds = build_dataset(dc, "train", 2, process_index=host, process_count=2)
    seen.append(set(_ids(fx.collect(ds, ds.num_examples))))  # Two epochs' worth.
    assert len(seen[-1]) == ds.num_examples
  # Host 0 reads files 0, 2, 4 (records 0-2, 4-7, 10-12), host 1 files 1, 3.
  assert seen[0] == {0, 1, 2, 4, 5, 6, 7, 10, 11, 12} and seen[1] == {3, 8, 9}
  with pytest.raises(ValueError, match="gets no file.*at least 6 shards"):
    build_dataset(dc, "train", 2, process_index=5, process_count=6)


def test_evaluation_sees_every_example_exactly_once(tmp_path):
  shards = [[fx.clip_record(4, i % 5) for i in range(n)] for n in (7, 5, 6, 5)]  # 23 examples.
  fx.write_table(str(tmp_path), "val", shards)
  dc = fx.dataset_configs(str(tmp_path), {"validation": "val@4", "test": "val@4"})
  for split, hosts in (("validation", 1), ("validation", 2), ("test", 3)):
    ids, counts = [], set()
    for host in range(hosts):
      ds = build_dataset(dc, split, 4, process_index=host, process_count=hosts)
      batches = fx.collect(ds)
      counts.add(len(batches))
      assert len(batches) == len(ds)
      for b in batches:
        assert b["inputs"].shape[0] == 4 and b["batch_mask"].dtype == np.float32
        np.testing.assert_array_equal(b["example_id"][b["batch_mask"] == 0], -1)
        np.testing.assert_array_equal(b["label"][b["batch_mask"] == 0], 0)
      ids += _ids(batches)
      assert _ids(fx.collect(ds)) == _ids(batches)  # Re-iterable, same order.
    assert sorted(ids) == list(range(23)), (split, hosts)
    assert len(counts) == 1  # Every host yields as many batches (hosts stay in step).


def test_train_is_deterministic_and_resumes_at_a_step(tmp_path):
  fx.write_table(str(tmp_path), "t", [[fx.clip_record(8 + i, i % 5) for i in range(7)]] * 2)
  dc = fx.dataset_configs(str(tmp_path), {"train": "t@2"}, augmentation_params={
      "do_jitter_scale": True, "do_color_augment": True, "prob_color_augment": 1.0},
                          min_resize=28, random_flip=True)
  first = fx.collect(build_dataset(dc, "train", 3, seed=7), 6)
  again = fx.collect(build_dataset(dc, "train", 3, seed=7), 6)
  other = fx.collect(build_dataset(dc, "train", 3, seed=8), 6)
  resumed = fx.collect(build_dataset(dc, "train", 3, seed=7, start_step=4), 2)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
  assert not np.array_equal(first[0]["inputs"], other[0]["inputs"])
  for a, b in zip(first[4:], resumed):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["example_id"], b["example_id"])
  # 14 records: the first 14 clips of the stream are one epoch, each record once.
  assert sorted(_ids(first)[:14]) == list(range(14))
  assert _ids(first)[:14] != list(range(14))  # Shuffled.


def test_class_splits_concatenate_one_hots(tmp_path):
  fx.write_table(str(tmp_path), "ek", [[fx.clip_record(4, [3, 1]), fx.clip_record(4, [0, 2])]])
  dc = fx.dataset_configs(str(tmp_path), {"validation": "ek@1"}, num_classes=8,
                          class_splits=[5, 3])
  labels = fx.collect(build_dataset(dc, "validation", 2))[0]["label"]
  np.testing.assert_array_equal(labels, [[0, 0, 0, 1, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0, 0, 1]])
  # The same labels from two separate context keys.
  frames = fx.jpegs(fx.index_frames(4))
  fx.write_table(str(tmp_path), "ek2", [[
      tfrecord.make_clip_example(frames, [], context={"noun/label/index": n, "verb/label/index": v})
      for n, v in ((3, 1), (0, 2))]])
  dc.tables.validation = "ek2@1"
  dc.label_keys = ["noun/label/index", "verb/label/index"]
  np.testing.assert_array_equal(fx.collect(build_dataset(dc, "validation", 2))[0]["label"], labels)
  # Without class_splits, several values are a multi-hot target.
  dc = fx.dataset_configs(str(tmp_path), {"validation": "ek@1"}, num_classes=5)
  np.testing.assert_array_equal(fx.collect(build_dataset(dc, "validation", 2))[0]["label"],
                                [[0, 1, 0, 1, 0], [1, 0, 1, 0, 0]])
  with pytest.raises(ValueError, match=r"class_splits=\[5, 2\] must sum to num_classes=8"):
    build_dataset(fx.dataset_configs(str(tmp_path), {"validation": "ek@1"}, num_classes=8,
                                     class_splits=[5, 2]), "validation", 2)


def _bad_records():
  good = fx.clip_record(6, 1)
  corrupt = fx.jpegs(fx.index_frames(6))
  corrupt[2] = corrupt[2][:40] + b"\x00garbage" * 10
  return [
      good,
      tfrecord.make_clip_example(corrupt, [2]),
      tfrecord.make_clip_example(fx.jpegs(fx.index_frames(6)), []),  # No label.
      tfrecord.make_clip_example([], [3]),  # No frames.
      fx.clip_record(6, 9),  # Label out of range.
      b"not a protobuf at all \xff\xfe",
      fx.clip_record(6, 4),
  ]


def test_bad_records_are_named_counted_and_masked(tmp_path):
  paths = fx.write_table(str(tmp_path), "val", [_bad_records(), [fx.clip_record(6, 0)] * 3])
  with open(paths[1], "r+b") as f:  # Truncate the last record of shard 1.
    f.truncate(os.path.getsize(paths[1]) - 20)
  dc = fx.dataset_configs(str(tmp_path), {"validation": "val@2", "train": "val@2"})
  ds = build_dataset(dc, "validation", 4)
  batches = fx.collect(ds)
  assert ds.num_examples == 9 and len(batches) == 3
  assert _ids(batches) == [0, 6, 7, 8]
  reasons = {k: v for k, v in ds.skipped.items()}
  assert ds.num_skipped == 6 == len(reasons)
  s0 = paths[0]
  assert "not a decodable JPEG" in reasons[f"{s0} record #1"] and "frame 2" in reasons[
      f"{s0} record #1"]
  assert "missing label key 'clip/label/index'" in reasons[f"{s0} record #2"]
  assert "missing key 'image/encoded'" in reasons[f"{s0} record #3"]
  assert "label 9" in reasons[f"{s0} record #4"] and "[0, 5)" in reasons[f"{s0} record #4"]
  assert "not a tf.train.SequenceExample" in reasons[f"{s0} record #5"]
  assert "truncated" in reasons[paths[1]]
  # Training goes on too: bad records become masked zero clips, the step → clips map is kept.
  train = fx.collect(build_dataset(dc, "train", 3, seed=1), 6)
  masks = np.concatenate([b["batch_mask"] for b in train])
  assert masks.sum() == 2 * 4 and (masks == 0).sum() == 2 * 5
  for b in train:
    assert not b["inputs"][b["batch_mask"] == 0].any()


@pytest.mark.parametrize("split,overrides,message", [
    ("val", {}, r"split='val' not in \('train', 'validation', 'test'\)"),
    ("train", {}, "tables has no entry for split 'train'"),
    ("validation", {"augmentation_params": {"do_flip": 1}},
     "augmentation_params has unknown keys.*do_flip"),
    ("validation", {"min_resize": 16}, "min_resize=16 must be >= crop_size=24"),
    ("validation", {"num_frames": None}, "num_frames is required"),
], ids=["bad_split", "missing_table", "unknown_augmentation", "min_resize", "num_frames"])
def test_config_errors_name_the_field(tmp_path, split, overrides, message):
  fx.write_table(str(tmp_path), "v", [[fx.clip_record(4, 0)]])
  with pytest.raises(ValueError, match=message):
    build_dataset(fx.dataset_configs(str(tmp_path), {"validation": "v@1"}, **overrides), split, 2)


def _record_spans(path):
  """(header offset, data offset, data length) of every record of a well-formed file."""
  index = tfrecord.index_files([path])
  return [(int(o) - 12, int(o), int(n)) for o, n in zip(index.offsets, index.lengths)]


def test_records_are_checked_against_their_crcs(tmp_path):
  paths = fx.write_table(str(tmp_path), "val", [[fx.clip_record(6, i) for i in range(4)]] * 2)
  spans = _record_spans(paths[0])
  with open(paths[0], "r+b") as f:  # 64 bytes flipped in the middle of record 1's data.
    middle = spans[1][1] + spans[1][2] // 2
    f.seek(middle)
    flipped = bytes(b ^ 0xFF for b in f.read(64))
    f.seek(middle)
    f.write(flipped)
  with open(paths[1], "r+b") as f:  # One bit of record 2's length header.
    f.seek(spans[2][0] + 1)
    byte = f.read(1)
    f.seek(spans[2][0] + 1)
    f.write(bytes([byte[0] ^ 0x01]))
  dc = fx.dataset_configs(str(tmp_path), {"validation": "val@2", "train": "val@2"})
  ds = build_dataset(dc, "validation", 3)
  assert ds.num_examples == 6  # shard 1 ends before its bad header: records 0, 1
  assert _ids(fx.collect(ds)) == [0, 2, 3, 4, 5]
  assert ds.skipped == {
      f"{paths[0]} record #1": "data CRC mismatch",
      paths[1]: f"length header CRC mismatch (record #2 at byte {spans[2][0]}); rest of file "
                "skipped"}
  with pytest.raises(tfrecord.CorruptRecordError, match=r"val-00000-of-00002 record #1: data CRC "
                     "mismatch"):
    list(tfrecord.iterate_records(paths[0]))
  # Training goes on and never sees the damaged record.
  train = fx.collect(build_dataset(dc, "train", 3, seed=2), 4)
  masks = np.concatenate([b["batch_mask"] for b in train])
  assert (masks == 0).sum() == 2  # 12 clips = 2 epochs of 6 records
  assert sorted(set(_ids(train))) == [0, 2, 3, 4, 5]
