r"""ViViT-B/16x2 Factorised Encoder fine-tuned from Kinetics-400 on HMDB51 (split 1).

Starts from Scenic's released Kinetics-400 ViViT-B/16x2 FE (78.4% top-1 there); every weight but the
classifier is restored, `output_projection` is re-initialised for HMDB51's 51 classes. The paper
(arXiv 2103.15691) reports no HMDB51 result and gives no recipe for it: this uses the paper's
Kinetics recipe for the same model (see configs/ucf101_fe.py), as for UCF101.

tensorflow-datasets (4.9) has no HMDB51 builder, so this reads DMVR TFRecords that
`vivit_jax.tools.make_tfrecords` writes from the videos and the split-1 lists (docs/finetuning.md).
A copy prepared with your own TFDS builder (features 'video' as JPEG frames, 'label') is read as
configs/ucf101_fe.py reads UCF101: `tfds_name` and `tfds_splits` instead of `base_dir` and `tables`.
HMDB51 has no validation split: validation reads the test split.

  python -m vivit_jax.main --config=configs/hmdb51_fe.py --workdir=runs/hmdb51_fe \
      --config.init_from.checkpoint_path=/ckpts/kinetics_400/vivit_base_16x2_fe/checkpoint
  python -m vivit_jax.main --config=configs/hmdb51_fe.py:runlocal --workdir=/tmp/hmdb51_smoke
"""
import ml_collections

from vivit_jax import config_lib

# HMDB51 split 1: 70 training and 30 test videos per class.
HMDB51_SIZES = {"train": 3570, "validation": 1530, "test": 1530}
KINETICS_400_B_FE = "gs://scenic-bucket/vivit/kinetics_400/vivit_base_16x2_fe/checkpoint"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full experiment; `arg='runlocal'` gives the smoke test (synthetic set, read via TFDS)."""
  config = ml_collections.ConfigDict()
  config.experiment_name = "vivit_base_fe_hmdb51_from_k400"
  config.dataset_name = "video_tfrecord_dataset"
  tables = {"train": "train-*-of-*", "validation": "test-*-of-*", "test": "test-*-of-*"}
  config.dataset_configs = config_lib.video_dataset(
      "hmdb51_split1", 51, HMDB51_SIZES, tables=tables, num_frames=32, stride=2)
  config.dataset_configs.augmentation_params = config_lib.augmentation(color=True)
  config.model_name = "vivit_classification"
  config.model = config_lib.vivit_model("B", "factorized_encoder", temporal_layers=4)
  config_lib.set_training(config, base_learning_rate=5e-2, epochs=30)
  config.init_from = config_lib.init_from_vit(KINETICS_400_B_FE)  # a ViViT file: see ucf101_fe.py
  config.init_from.restore_output_proj = False
  config_lib.set_run_fields(config, checkpoint_steps=200)
  config = config_lib.apply_config_arg(config, arg)
  return config_lib.read_synthetic_through_tfds(config) if arg == "runlocal" else config
