r"""ViViT-L/16x2 Factorised Encoder on Kinetics-400, as Scenic's released model.

Scenic: 80.3% top-1 with 4×3 views, from an ImageNet-21k ViT-L/16. Scenic's config for it
(kinetics400/vivit_large_factorised_encoder.py) has 24 temporal layers and base learning rate 0.1.

  python -m vivit_jax.main --config=configs/k400_fe_large.py --workdir=runs/k400_fe_large \
      --config.init_from.checkpoint_path=/path/to/vit_l16_imagenet21k
  python -m vivit_jax.main --config=configs/k400_fe_large.py --workdir=runs/eval --mode=eval \
      --config.eval_checkpoint_path=/ckpts/kinetics_400/vivit_large_16x2_fe/checkpoint
  python -m vivit_jax.main --config=configs/k400_fe_large.py:runlocal --workdir=/tmp/k400_l_smoke
"""
import ml_collections

from vivit_jax import config_lib

# Kinetics shrinks as videos leave YouTube: set these to your copy's sizes.
KINETICS_400_SIZES = {"train": 214834, "validation": 17637, "test": 34579}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full experiment; `arg='runlocal'` gives the smoke test of the same config."""
  config = ml_collections.ConfigDict()
  config.experiment_name = "vivit_large_fe_kinetics400"
  config.dataset_name = "video_tfrecord_dataset"
  config.dataset_configs = config_lib.video_dataset(
      "kinetics400", 400, KINETICS_400_SIZES, num_frames=32, stride=2)
  config.dataset_configs.augmentation_params = config_lib.augmentation(color=True)
  config.model_name = "vivit_classification"
  config.model = config_lib.vivit_model("L", "factorized_encoder", temporal_layers=24)
  # Keeps the matmul outputs, recomputes the rest: what the backward pass keeps of 8 clips
  # drops from 61 to 21 GiB for 0.25% more FLOPs (`--dry_run`; docs/benchmarks.md).
  config.model.remat = "dots_saveable"
  config_lib.set_training(config, base_learning_rate=1e-1, epochs=30)
  config.init_from = config_lib.init_from_vit("path_to_checkpoint_of_vit_l_16")
  config_lib.set_run_fields(config, checkpoint_steps=500)
  return config_lib.apply_config_arg(config, arg)
