r"""The embedded default: a small factorised-encoder ViViT on the synthetic motion dataset.

8 classes (4 directions × 2 speeds) of a shape moving over 16 frames of 32×32; the dataset is
generated on first use under `$VIVIT_DATA_DIR/synthetic_motion` (default
`~/.cache/vivit_jax/synthetic_motion`). Trains from scratch on a CPU in minutes.

  python -m vivit_jax.main --config=configs/synthetic.py --workdir=runs/demo
  python -m vivit_jax.main --config=configs/synthetic.py:runlocal --workdir=/tmp/demo_smoke
"""
import ml_collections

from vivit_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The demo; `arg='runlocal'` gives a 10-step smoke test of it."""
  config = ml_collections.ConfigDict()
  config.experiment_name = "vivit_synthetic_motion"
  config.dataset_name = "synthetic_motion"
  config.dataset_configs = config_lib.synthetic_dataset()  # 8 frames at stride 2, 32×32

  config.model_name = "vivit_classification"
  config.model = ml_collections.ConfigDict({
      "hidden_size": 64,
      "patches": {"size": (8, 8, 2)},  # 4 × 4 × 4 tubelets
      "attention_config": {"type": "factorized_encoder"},
      "spatial_transformer": {"num_heads": 4, "mlp_dim": 128, "num_layers": 2},
      "temporal_transformer": {"num_heads": 4, "mlp_dim": 128, "num_layers": 2},
      "representation_size": None,
      "classifier": "token",
      "dropout_rate": 0.0,
      "attention_dropout_rate": 0.0,
      "stochastic_droplayer_rate": 0.0,
      "temporal_encoding_config": {"method": "3d_conv", "kernel_init_method": None},
      "attention_implementation": "auto",
      "remat": "none",
  })

  # From scratch, AdamW trains a small transformer far faster than SGD.
  config.optimizer = "adamw"
  config.optimizer_configs = ml_collections.ConfigDict({
      "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.05})
  config.max_grad_norm = 1.0
  config.label_smoothing = None
  config.batch_size = 32
  config.eval_batch_size = 50
  config.num_training_epochs = 8
  config.rng_seed = 0
  config.lr_configs = ml_collections.ConfigDict({
      "learning_rate_schedule": "compound",
      "factors": "constant * cosine_decay * linear_warmup",
      "warmup_steps": 50,
      "base_learning_rate": 2e-3,
  })
  config.init_from = ml_collections.ConfigDict()
  config_lib.set_run_fields(config, checkpoint_steps=200, log_summary_steps=25,
                            log_eval_steps=200)
  return config_lib.apply_config_arg(config, arg)
