"""The synthetic motion set as a TensorFlow Datasets builder (`synthetic_motion`).

The same clips as the TFRecord files of `vivit_jax.data.synthetic` (clip i of a split is a function
of (seed, split, i), the same JPEG bytes), stored the way TFDS stores UCF101: features `video` (a
`tfds.features.Video` of JPEG frames) and `label` (a `ClassLabel` of the 8 motion classes), splits
`train`, `validation` and `test`. It lets the TFDS reading path (`dataset_configs.tfds_name`) run
for real on any machine, without a download.

Prepared on first use by `synthetic.ensure_dataset` when `dataset_configs` has both `tfds_name` and
`synthetic` (the generation settings); by hand:

  python -m vivit_jax.data.synthetic_tfds --data_dir=/tmp/tfds [--num_train=3000]

which writes `DATA_DIR/synthetic_motion/1.0.0/` and then reads it with
`dataset_configs.tfds_name='synthetic_motion'`, `tfds_data_dir=DATA_DIR`.
"""
import argparse
import json
import os
import sys
from typing import Optional

import ml_collections
import tensorflow_datasets as tfds

from vivit_jax.data import synthetic

NAME = "synthetic_motion"


# Not registered by name: readers open the prepared files (`tfds.builder` falls back to them), so
# reading needs no import of this module, and running it as `__main__` registers nothing twice.
class SyntheticMotion(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """8 classes of a shape moving in one of 4 directions at one of 2 speeds (see `synthetic`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "The clips of vivit_jax.data.synthetic."}

  def __init__(self, *, settings: Optional[dict] = None, **kwargs):
    """`settings`: overrides of `synthetic.default_generation_settings()` (used when preparing)."""
    self.settings = synthetic.default_generation_settings()
    self.settings.update(dict(settings or {}))
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.settings
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video((s.num_frames, s.frame_size, s.frame_size, 3),
                                         encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=list(synthetic.task_of(s)[1])),
        }),
        supervised_keys=("video", "label"),
        # Clip order as generated: record k of a split is clip k, as in `split_clips`.
        disable_shuffling=True,
        description=__doc__.splitlines()[0])

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the clips are rendered.
    return {split: self._generate_examples(split)
            for split in ("train", "validation", "test")}

  def _generate_examples(self, split: str):
    settings = self.settings
    for i, label, jpegs in synthetic.split_clips(settings, split):
      yield i, {"video": jpegs, "label": label}


def prepare(data_dir: str, settings: Optional[ml_collections.ConfigDict] = None) -> dict:
  """Builds the TFDS set under `data_dir`; the completion marker (with the settings) comes last.

  Returns:
    {split: number of clips}.
  """
  builder = SyntheticMotion(data_dir=data_dir, settings=settings.to_dict() if settings else None)
  # TFDS writes into a temporary folder and renames it when complete: nothing half-written remains.
  # Called only when the marker is missing, so a set left without one (a run killed after TFDS
  # finished) is generated again rather than trusted.
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
  counts = {name: info.num_examples for name, info in builder.info.splits.items()}
  marker = os.path.join(data_dir, NAME, synthetic.MARKER)
  with open(marker + ".tmp", "w") as f:
    json.dump({"settings": builder.settings.to_dict(), "counts": counts}, f, indent=1,
              sort_keys=True)
  os.replace(marker + ".tmp", marker)
  return counts


def marker_dir(dataset_configs) -> str:
  """The folder whose completion marker says the set under `tfds_data_dir` is ready."""
  data_dir = dataset_configs.get("tfds_data_dir")
  if not data_dir:
    raise ValueError("dataset_configs.tfds_data_dir is required with dataset_configs.synthetic "
                     "and tfds_name")
  name = dataset_configs.get("tfds_name")
  if name.split("/")[0] != NAME:
    raise ValueError(f"dataset_configs.tfds_name={name!r}: with dataset_configs.synthetic the "
                     f"TFDS set is the synthetic one, {NAME!r}")
  return os.path.join(data_dir, NAME)


def dataset_configs(data_dir: str) -> ml_collections.ConfigDict:
  """The synthetic set's `dataset_configs`, read through TFDS from `data_dir` (no tables)."""
  return as_tfds(synthetic.default_dataset_configs(""), data_dir)


def as_tfds(data_cfg: ml_collections.ConfigDict, data_dir: str) -> ml_collections.ConfigDict:
  """Turns the synthetic set's TFRecord `dataset_configs` into the TFDS ones, in place."""
  del data_cfg.base_dir, data_cfg.tables
  data_cfg.tfds_name = NAME
  data_cfg.tfds_data_dir = data_dir
  return data_cfg


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", required=True)
  for key, value in synthetic.default_generation_settings().items():
    parser.add_argument(f"--{key}", type=type(value), default=value)
  args = parser.parse_args(argv)
  settings = synthetic.default_generation_settings()
  settings.update({k: getattr(args, k) for k in settings.keys()})
  counts = prepare(args.data_dir, settings)
  print(f"Wrote {counts} to {os.path.join(args.data_dir, NAME)}")
  return 0


if __name__ == "__main__":
  # TFDS locates a builder's package files by module name, which `__main__` does not have.
  from vivit_jax.data import synthetic_tfds  # pylint: disable=g-import-not-at-top,import-self
  sys.exit(synthetic_tfds.main())
