r"""ViViT-L/16x2 Factorised Encoder on Moments in Time (339 classes, 3-second clips).

Scenic ships no Moments in Time config; the numbers follow the paper's training
hyperparameters for MiT (base learning rate 0.25, 10 epochs, Kinetics-style augmentation).

  python -m vivit_jax.main --config=configs/mit_fe.py --workdir=runs/mit_fe \
      --config.init_from.checkpoint_path=/path/to/vit_l16_imagenet21k
  python -m vivit_jax.main --config=configs/mit_fe.py:runlocal --workdir=/tmp/mit_fe_smoke
"""
import ml_collections

from vivit_jax import config_lib

# Set to your copy's sizes (the public release has about 800k training clips).
MIT_SIZES = {"train": 802264, "validation": 33900, "test": 33900}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full experiment; `arg='runlocal'` gives the smoke test of the same config."""
  config = ml_collections.ConfigDict()
  config.experiment_name = "vivit_large_fe_moments_in_time"
  config.dataset_name = "video_tfrecord_dataset"
  # MiT clips are 3 s at 30 fps (90 frames): 32 frames at stride 2 cover most of one.
  config.dataset_configs = config_lib.video_dataset(
      "moments_in_time", 339, MIT_SIZES, num_frames=32, stride=2)
  config.dataset_configs.augmentation_params = config_lib.augmentation(color=True)
  config.model_name = "vivit_classification"
  config.model = config_lib.vivit_model("L", "factorized_encoder", temporal_layers=4)
  config_lib.set_training(config, base_learning_rate=0.25, epochs=10)
  config.init_from = config_lib.init_from_vit("path_to_checkpoint_of_vit_l_16")
  config_lib.set_run_fields(config, checkpoint_steps=1000)
  return config_lib.apply_config_arg(config, arg)
