r"""ViViT-B/16x2 Factorised Encoder (Model 2) on Kinetics-400, as Scenic's released model.

Paper / Scenic: 78.4% top-1 with 4×3 views, from an ImageNet-21k ViT-B/16.

  python -m vivit_jax.main --config=configs/k400_fe.py --workdir=runs/k400_fe \
      --config.init_from.checkpoint_path=/path/to/vit_b16_imagenet21k
  python -m vivit_jax.main --config=configs/k400_fe.py:runlocal --workdir=/tmp/k400_fe_smoke
"""
import ml_collections

from vivit_jax import config_lib

# Kinetics shrinks as videos leave YouTube: set these to your copy's sizes.
KINETICS_400_SIZES = {"train": 214834, "validation": 17637, "test": 34579}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full experiment; `arg='runlocal'` gives the smoke test of the same config."""
  config = ml_collections.ConfigDict()
  config.experiment_name = "vivit_base_fe_kinetics400"
  config.dataset_name = "video_tfrecord_dataset"
  config.dataset_configs = config_lib.video_dataset(
      "kinetics400", 400, KINETICS_400_SIZES, num_frames=32, stride=2)
  config.dataset_configs.augmentation_params = config_lib.augmentation(color=True)
  config.model_name = "vivit_classification"
  config.model = config_lib.vivit_model("B", "factorized_encoder", temporal_layers=4)
  config_lib.set_training(config, base_learning_rate=5e-2, epochs=30)
  config.init_from = config_lib.init_from_vit("path_to_checkpoint_of_vit_b_16")
  config_lib.set_run_fields(config, checkpoint_steps=1000)
  return config_lib.apply_config_arg(config, arg)
