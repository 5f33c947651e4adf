r"""ViViT-L/16x2 Factorised Encoder on Something-Something v2.

SSv2 classes depend on direction ("pushing left to right"), so there is NO horizontal flip.
Heavier regularisation than Kinetics: RandAugment, mixup, label smoothing, stochastic depth.

  python -m vivit_jax.main --config=configs/ssv2_fe.py --workdir=runs/ssv2_fe \
      --config.init_from.checkpoint_path=/path/to/kinetics_or_imagenet_checkpoint
  python -m vivit_jax.main --config=configs/ssv2_fe.py:runlocal --workdir=/tmp/ssv2_fe_smoke
"""
import ml_collections

from vivit_jax import config_lib

SSV2_SIZES = {"train": 168913, "validation": 24777, "test": 24777}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full experiment; `arg='runlocal'` gives the smoke test of the same config."""
  config = ml_collections.ConfigDict()
  config.experiment_name = "vivit_large_fe_ssv2"
  config.dataset_name = "video_tfrecord_dataset"
  # SSv2 has no separate labelled test set: the validation set is tested.
  tables = {"train": "something-something-v2-train.rgb.tfrecord@128",
            "validation": "something-something-v2-validation.rgb.tfrecord@128",
            "test": "something-something-v2-validation.rgb.tfrecord@128"}
  config.dataset_configs = config_lib.video_dataset(
      "ssv2", 174, SSV2_SIZES, tables=tables, num_frames=32, stride=1, min_resize=288,
      crop_size=256, random_flip=False)
  config.dataset_configs.augmentation_params = config_lib.augmentation(
      color=False, rand_augment_magnitude=20)
  config.model_name = "vivit_classification"
  config.model = config_lib.vivit_model("L", "factorized_encoder", temporal_layers=4,
                                        droplayer=0.3)
  config_lib.set_training(config, base_learning_rate=0.4, epochs=35,
                          label_smoothing=0.3, mixup_alpha=0.3)
  config.init_from = config_lib.init_from_vit(None, size_change="resize")
  config_lib.set_run_fields(config, checkpoint_steps=500)
  return config_lib.apply_config_arg(config, arg)
