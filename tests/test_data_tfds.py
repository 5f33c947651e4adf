"""TFDS as a data source: the synthetic set built by its TFDS builder, read back via `tfds_name`."""
import json

import numpy as np
import pytest

from tests import data_fixtures as fx
from vivit_jax import config_check
from vivit_jax.data import build_dataset
from vivit_jax.data import synthetic
from vivit_jax.data import synthetic_tfds

SMALL = dict(num_train=12, num_validation=6, num_test=7)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
  """The same small synthetic set as DMVR TFRecords and as a TFDS dataset."""
  root = tmp_path_factory.mktemp("tfds")
  records = synthetic.default_dataset_configs(str(root / "records"))
  records.synthetic.update(SMALL)
  tfds_dc = synthetic_tfds.dataset_configs(str(root / "tfds"))
  tfds_dc.synthetic.update(SMALL)
  assert synthetic.ensure_dataset(records, process_index=0)
  assert synthetic.ensure_dataset(tfds_dc, process_index=0)  # Through the TFDS builder.
  assert not synthetic.ensure_dataset(tfds_dc, process_index=0)  # Prepared once.
  return records, tfds_dc


def _tfrecord_clip(example_id: int, count: int, shards: int) -> int:
  """Clip number of a record of the TFRecord set: shard s holds clips s, s + shards, ..."""
  per_shard = [len(range(s, count, shards)) for s in range(shards)]
  for s, n in enumerate(per_shard):
    if example_id < n:
      return s + example_id * shards
    example_id -= n
  raise AssertionError(example_id)


def test_prepared_on_disk(both):
  _, dc = both
  folder = f"{dc.tfds_data_dir}/synthetic_motion"
  marker = json.loads(open(f"{folder}/{synthetic.MARKER}").read())
  assert marker["counts"] == {"train": 12, "validation": 6, "test": 7}
  info = json.loads(open(f"{folder}/1.0.0/dataset_info.json").read())
  assert info["name"] == "synthetic_motion"
  assert sorted(json.loads(open(f"{folder}/1.0.0/features.json").read())["featuresDict"][
      "features"]) == ["label", "video"]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_same_examples_as_the_tfrecord_path(both, split):
  records, dc = (d.copy_and_resolve_references() for d in both)
  for d in (records, dc):
    d.num_test_clips = 2  # Two temporal views: the test split's sampling, on both paths.
  a = fx.collect(build_dataset(records, split, 4))
  b = fx.collect(build_dataset(dc, split, 4))
  assert len(a) == len(b) == 2  # 6 or 7 examples, each exactly once, the last batch padded.
  count = SMALL[f"num_{split}"]
  ids_a = np.concatenate([x["example_id"] for x in a])
  ids_b = np.concatenate([x["example_id"] for x in b])
  assert list(ids_b) == list(range(count)) + [-1] * (8 - count)  # TFDS record k is clip k.
  by_clip = {_tfrecord_clip(int(e), count, 2): i for i, e in enumerate(ids_a) if e >= 0}
  inputs_a = np.concatenate([x["inputs"] for x in a])
  inputs_b = np.concatenate([x["inputs"] for x in b])
  labels_b = np.concatenate([x["label"] for x in b])
  for k in range(count):
    np.testing.assert_array_equal(inputs_b[k], inputs_a[by_clip[k]])
    assert labels_b[k].argmax() == k % 8 and labels_b[k].sum() == 1
  assert inputs_b.shape[1:] == ((2, 8, 32, 32, 3) if split == "test" else (8, 32, 32, 3))
  np.testing.assert_array_equal(np.concatenate([x["batch_mask"] for x in b]),
                                [1.0] * count + [0.0] * (8 - count))


def test_train_stream_and_split_slices(both):
  _, dc = both
  first = next(iter(build_dataset(dc, "train", 4, seed=3)))
  again = next(iter(build_dataset(dc, "train", 4, seed=3, start_step=0)))
  np.testing.assert_array_equal(first["inputs"], again["inputs"])  # A function of (seed, step).
  assert first["inputs"].shape == (4, 8, 32, 32, 3) and first["batch_mask"].tolist() == [1] * 4
  dc = dc.copy_and_resolve_references()
  dc.tfds_splits = {"validation": "train[:25%]", "test": "train[75%:]"}
  ids = np.concatenate([x["example_id"] for x in fx.collect(build_dataset(dc, "validation", 4))])
  labels = np.concatenate([x["label"] for x in fx.collect(build_dataset(dc, "test", 4))])
  assert list(ids) == [0, 1, 2, -1] and list(labels[:3].argmax(-1)) == [1, 2, 3]  # Clips 9, 10, 11.


def test_missing_dataset_says_how_to_prepare(tmp_path):
  dc = synthetic_tfds.dataset_configs(str(tmp_path))
  dc.tfds_name = "ucf101/ucf101_1_256"
  dc.num_classes = 101
  with pytest.raises(FileNotFoundError, match=r"'ucf101/ucf101_1_256' is not prepared: .*"
                     r"dataset_info.json not found.*tfds.builder\('ucf101/ucf101_1_256', data_dir='"
                     r".*'\).download_and_prepare\(\)"):
    build_dataset(dc, "test", 2)
  dc.tfds_name = "no_such_dataset"
  with pytest.raises(FileNotFoundError,
                     match=r"no prepared dataset of that name.*download_and_prepare"):
    build_dataset(dc, "test", 2)


def test_wrong_split_feature_or_classes_is_named(both):
  _, good = both
  dc = good.copy_and_resolve_references()
  dc.tfds_splits = {"validation": "val"}
  with pytest.raises(ValueError, match=r"tfds_splits.validation='val'.*'test', 'train', "
                     r"'validation'"):
    build_dataset(dc, "validation", 2)
  dc = good.copy_and_resolve_references()
  dc.tfds_label_key = "labels"
  with pytest.raises(ValueError, match=r"tfds_label_key='labels': synthetic_motion has features "
                     r"\['label', 'video'\]"):
    build_dataset(dc, "test", 2)
  dc = good.copy_and_resolve_references()
  dc.num_classes = 101
  with pytest.raises(ValueError, match=r"'label' has 8 classes but the config expects 101"):
    build_dataset(dc, "test", 2)


def test_config_check_knows_the_tfds_fields(both):
  _, dc = both
  config = _experiment(dc)
  config_check.validate_config(config)
  config.dataset_configs.tfds_splits = {"val": "test"}
  with pytest.raises(ValueError, match=r"tfds_splits has keys \['val'\]"):
    config_check.validate_config(config)
  config = _experiment(dc)
  config.dataset_configs.tables = {"train": "x@1"}
  with pytest.raises(ValueError, match="both tables and tfds_name"):
    config_check.validate_config(config)


def _experiment(dc):
  import importlib.util  # pylint: disable=g-import-not-at-top
  from tests.test_configs import CONFIG_DIR  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("c", CONFIG_DIR / "synthetic.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("runlocal")
  config.dataset_configs = dc.copy_and_resolve_references()
  return config


def test_a_corrupt_record_is_masked_and_named(both, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vivit_jax.data import tfrecord  # pylint: disable=g-import-not-at-top
  _, good = both
  shutil.copytree(good.tfds_data_dir, tmp_path / "tfds")
  dc = good.copy_and_resolve_references()
  dc.tfds_data_dir = str(tmp_path / "tfds")
  shard = (tmp_path / "tfds" / "synthetic_motion" / "1.0.0" /
           "synthetic_motion-test.tfrecord-00000-of-00001")
  records = list(tfrecord.iterate_records(str(shard)))
  example = tf.train.Example.FromString(records[2])
  example.features.feature["video"].bytes_list.value[0] = b"not a jpeg"
  records[2] = example.SerializeToString()
  tfrecord.write_records_atomically(str(shard), records)
  dataset = build_dataset(dc, "test", 4)
  batches = fx.collect(dataset)
  mask = np.concatenate([b["batch_mask"] for b in batches])
  assert mask.tolist() == [1, 1, 0, 1, 1, 1, 1, 0]  # Clip 2 masked, the 8th slot is padding.
  assert dataset.skipped == {f"{shard} record #2": "feature 'video' frame 0: not a decodable "
                             "JPEG (Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, "
                             "BMP, WebP required.)"}


def test_ucf101_config_fits_the_installed_ucf101_builder(tmp_path):
  """configs/ucf101_fe.py names the features and classes TFDS's UCF101 builder has."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tests.test_configs import load  # pylint: disable=g-import-not-at-top
  from vivit_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  dc = load("ucf101_fe").dataset_configs
  builder = tfds.builder(dc.tfds_name, data_dir=str(tmp_path))  # Its code only: nothing prepared.
  check = tfds_source._check_features  # pylint: disable=protected-access
  assert check(builder, dc) == ("video", ("label",), [101])
  assert builder.builder_config.name == "ucf101_1_256" and builder.builder_config.height == 256
