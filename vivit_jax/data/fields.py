"""The fields `config.dataset_configs` may hold (docs/data.md says what each does).

Owned here, beside the readers, so that the config checker refuses a field no reader uses,
and free of TensorFlow, so that checking a config costs no TensorFlow import.
"""
import dataclasses
from typing import Optional

LABEL_KEY = "clip/label/index"  # DMVR's label feature
# Clips made on the devices by a jitted function, no input pipeline (data/synthetic_device.py).
DEVICE_DATASET = "synthetic_device"
DEVICE_PATTERN_FIELD = "synthetic_device_pattern"
# A dataset prepared with TensorFlow Datasets instead of `tables` (data/tfds_source.py).
TFDS_FIELDS = ("tfds_name", "tfds_data_dir", "tfds_splits", "tfds_video_key", "tfds_label_key")

DATASET_CONFIG_FIELDS = (
    # Where the data is.
    "base_dir", "tables", "examples_per_subset", "synthetic",
    # Labels.
    "num_classes", "class_splits", "split_names", "label_keys", "one_hot_labels",
    # Clips.
    "num_frames", "stride", "test_stride", "min_resize", "crop_size", "zero_centering",
    "num_test_clips", "do_three_spatial_crops", "random_flip", "decode_all_frames",
    "augmentation_params",
    # Feeding the devices.
    "prefetch_to_device",
    # dataset_name='synthetic_device' (data/synthetic_device.py): 'motion' or 'random'.
    "synthetic_device_pattern",
) + TFDS_FIELDS

# Scenic fields with no counterpart here: the reason, and what to use instead.
REFUSED_DATASET_FIELDS = {
    "do_multicrop_test": "the test split is always evaluated with num_test_clips x (3 if "
                         "do_three_spatial_crops else 1) views per video, at the end of training",
    "log_test_epochs": "the test split is evaluated once, at the end of training; use "
                       "log_eval_steps for periodic validation",
    "test_batch_size": "the test split uses eval_batch_size videos (each with all its views) "
                       "per batch",
}


def is_device_dataset(config) -> bool:
  """`config.dataset_name == 'synthetic_device'`: batches made on the devices, no TensorFlow."""
  return config.get("dataset_name") == DEVICE_DATASET


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """The `dataset_configs` fields the per-clip processing reads (see docs/data.md)."""
  num_classes: int
  class_splits: Optional[tuple[int, ...]]
  label_keys: tuple[str, ...]
  num_frames: int
  stride: int
  test_stride: int
  min_resize: int
  crop_size: int
  zero_centering: bool
  num_test_clips: int
  do_three_spatial_crops: bool
  random_flip: bool
  decode_all_frames: bool
  aug: dict
  uint8_pixels: bool = False  # clips leave as uint8 pixels, normalised on the devices

  @property
  def num_views(self) -> int:
    return self.num_test_clips * (3 if self.do_three_spatial_crops else 1)

  @classmethod
  def from_configs(cls, data_cfg) -> "ClipConfig":
    """Reads and checks `dataset_configs`; errors name the field and the valid values."""

    def need(key):
      if data_cfg.get(key) is None:
        raise ValueError(f"dataset_configs.{key} is required")
      return data_cfg.get(key)

    def positive(key, default=None):
      value = need(key) if default is None else data_cfg.get(key)
      value = default if value is None else value
      if not isinstance(value, (int, float)) or int(value) != value or value < 1:
        raise ValueError(f"dataset_configs.{key}={value!r} must be a positive integer")
      return int(value)

    class_splits = data_cfg.get("class_splits")
    num_classes = positive("num_classes")
    if class_splits is not None:
      class_splits = tuple(int(c) for c in class_splits)
      if sum(class_splits) != num_classes:
        raise ValueError(f"dataset_configs.class_splits={list(class_splits)} must sum to "
                         f"num_classes={num_classes}")
    label_keys = data_cfg.get("label_keys") or (LABEL_KEY,)
    label_keys = (label_keys,) if isinstance(label_keys, str) else tuple(label_keys)
    crop_size = positive("crop_size")
    min_resize = positive("min_resize", crop_size)
    if min_resize < crop_size:
      raise ValueError(f"dataset_configs.min_resize={min_resize} must be >= crop_size={crop_size}")
    aug = dict(data_cfg.get("augmentation_params") or {})
    known = {"do_jitter_scale", "scale_min_factor", "scale_max_factor", "prob_scale_jitter",
             "do_color_augment", "prob_color_augment", "prob_color_drop", "do_rand_augment",
             "rand_augment_num_layers", "rand_augment_magnitude", "do_random_erasing",
             "prob_random_erasing"}
    unknown = sorted(set(aug) - known)
    if unknown:
      raise ValueError(f"dataset_configs.augmentation_params has unknown keys {unknown}; "
                       f"valid keys: {sorted(known)}")
    stride = positive("stride", 1)
    return cls(
        num_classes=num_classes, class_splits=class_splits, label_keys=label_keys,
        num_frames=positive("num_frames"), stride=stride,
        test_stride=positive("test_stride", stride), min_resize=min_resize, crop_size=crop_size,
        zero_centering=zero_centering(data_cfg),
        num_test_clips=positive("num_test_clips", 1),
        do_three_spatial_crops=bool(data_cfg.get("do_three_spatial_crops", False)),
        random_flip=bool(data_cfg.get("random_flip", True)),
        decode_all_frames=bool(data_cfg.get("decode_all_frames", False)), aug=aug)


def zero_centering(data_cfg) -> bool:
  """`dataset_configs.zero_centering`: pixels to [-1, 1] (default, as Scenic) or [0, 1]."""
  return bool(data_cfg.get("zero_centering", True))


def check_tfds_fields(dataset_configs) -> None:
  """Checks the TFDS fields without opening the dataset (for `config_check`)."""
  data_cfg = dataset_configs
  if not isinstance(data_cfg.tfds_name, str) or not data_cfg.tfds_name:
    raise ValueError(f"config.dataset_configs.tfds_name={data_cfg.tfds_name!r}; must be a TFDS name "
                     "like 'ucf101/ucf101_1_256'")
  if data_cfg.get("tables") is not None:
    raise ValueError("config.dataset_configs has both tables and tfds_name; set one (tables: "
                     "DMVR TFRecords, tfds_name: a TFDS-prepared dataset)")
  splits = dict(data_cfg.get("tfds_splits") or {})
  unknown = sorted(set(splits) - {"train", "validation", "test"})
  if unknown:
    raise ValueError(f"config.dataset_configs.tfds_splits has keys {unknown}; valid keys: "
                     "['test', 'train', 'validation'] (values: TFDS split names)")
  for split, value in splits.items():
    if not isinstance(value, str):
      raise ValueError(f"config.dataset_configs.tfds_splits.{split}={value!r}; must be a TFDS "
                       "split name string like 'train' or 'train[:90%]'")
