r"""ViViT-L/16x2 Factorised Encoder on Kinetics-600, as Scenic's released model.

Scenic: 81.6% top-1 with 4×3 views. Scenic's Large FE Kinetics configs (and so, presumably,
the released checkpoint) use 24 temporal layers; the paper's ablations use 4.

  python -m vivit_jax.main --config=configs/k600_fe.py --workdir=runs/k600_fe \
      --config.init_from.checkpoint_path=/path/to/vit_l16_imagenet21k
  python -m vivit_jax.main --config=configs/k600_fe.py:runlocal --workdir=/tmp/k600_fe_smoke
"""
import ml_collections

from vivit_jax import config_lib

KINETICS_600_SIZES = {"train": 363213, "validation": 27676, "test": 55377}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full experiment; `arg='runlocal'` gives the smoke test of the same config."""
  config = ml_collections.ConfigDict()
  config.experiment_name = "vivit_large_fe_kinetics600"
  config.dataset_name = "video_tfrecord_dataset"
  config.dataset_configs = config_lib.video_dataset(
      "kinetics600", 600, KINETICS_600_SIZES, num_frames=32, stride=2)
  config.dataset_configs.augmentation_params = config_lib.augmentation(color=True)
  config.model_name = "vivit_classification"
  config.model = config_lib.vivit_model("L", "factorized_encoder", temporal_layers=24)
  config_lib.set_training(config, base_learning_rate=5e-2, epochs=30)
  config.init_from = config_lib.init_from_vit("path_to_checkpoint_of_vit_l_16")
  config_lib.set_run_fields(config, checkpoint_steps=500)
  return config_lib.apply_config_arg(config, arg)
