r"""ViViT-B/16x2 factorised dot-product attention (Model 4) on Kinetics-400, the paper's ablation.

Paper Table 2 (ViViT-B, tubelets 16×16×2, 32 frames): 88.9M parameters (Model 1's), 277.1 GFLOPs
(checked by tests/test_model_sizes.py); no released checkpoint. Half of the heads attend over
time, half over space. No CLS token: global average pooling.

  python -m vivit_jax.main --config=configs/k400_fdpa.py --workdir=runs/k400_fdpa \
      --config.init_from.checkpoint_path=/path/to/vit_b16_imagenet21k
  python -m vivit_jax.main --config=configs/k400_fdpa.py:runlocal --workdir=/tmp/k400_fdpa_smoke
"""
import ml_collections

from vivit_jax import config_lib

KINETICS_400_SIZES = {"train": 214834, "validation": 17637, "test": 34579}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The full experiment; `arg='runlocal'` gives the smoke test of the same config."""
  config = ml_collections.ConfigDict()
  config.experiment_name = "vivit_base_factorized_dot_product_kinetics400"
  config.dataset_name = "video_tfrecord_dataset"
  config.dataset_configs = config_lib.video_dataset(
      "kinetics400", 400, KINETICS_400_SIZES, num_frames=32, stride=2)
  config.dataset_configs.augmentation_params = config_lib.augmentation(color=True)
  config.model_name = "vivit_classification"
  config.model = config_lib.vivit_model("B", "factorized_dot_product_attention")
  config.model.classifier = "gap"
  config_lib.set_training(config, base_learning_rate=1e-1, epochs=30)
  config.init_from = config_lib.init_from_vit("path_to_checkpoint_of_vit_b_16")
  config_lib.set_run_fields(config, checkpoint_steps=1000)
  return config_lib.apply_config_arg(config, arg)
