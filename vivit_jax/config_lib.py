"""Building blocks of the benchmark configs in `configs/` (Scenic field names throughout).

Each `configs/<benchmark>.py` states its benchmark's numbers (model size, frames, learning rate,
epochs, regularisation) and calls these helpers for the parts that are the same everywhere.
`runlocal(config)` turns any of them into a smoke test: a tiny model of the same variant, a few
steps, on the synthetic motion dataset (generated on first use), runnable on a laptop CPU.
"""
import os

import ml_collections

# ViT widths (Dosovitskiy et al.): hidden size, heads, MLP width, layers.
VIT_SIZES = {"B": (768, 12, 3072, 12), "L": (1024, 16, 4096, 24)}
SPLITS = ("train", "validation", "test")


def data_root() -> str:
  """`$VIVIT_DATA_DIR`, else `~/.cache/vivit_jax`: where datasets live (one folder each)."""
  return os.environ.get("VIVIT_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "vivit_jax")


def synthetic_base_dir(task: str = "motion") -> str:
  """Where the synthetic set of `task` ('motion' or 'order') lives: `data_root()/synthetic_<task>`."""
  return os.path.join(data_root(), f"synthetic_{task}")


def video_dataset(name: str, num_classes: int, sizes: dict, *, tables: dict | None = None,
                  num_frames: int = 32, stride: int = 2, min_resize: int = 256,
                  crop_size: int = 224, num_test_clips: int = 4,
                  three_spatial_crops: bool = True, random_flip: bool = True
                  ) -> ml_collections.ConfigDict:
  """`dataset_configs` of a DMVR TFRecord video dataset under `data_root()/name`."""
  return ml_collections.ConfigDict({
      "base_dir": os.path.join(data_root(), name),
      "tables": tables or {s: f"{s}.tfrecord@1024" for s in SPLITS},
      "examples_per_subset": dict(sizes),
      "num_classes": num_classes,
      "num_frames": num_frames,
      "stride": stride,
      "min_resize": min_resize,
      "crop_size": crop_size,
      "one_hot_labels": True,
      "zero_centering": True,
      "random_flip": random_flip,
      # Multi-view test: num_test_clips temporal × (3 if three_spatial_crops else 1) spatial.
      "do_multicrop_test": True,
      "log_test_epochs": 5,
      "num_test_clips": num_test_clips,
      "test_batch_size": 8,
      "do_three_spatial_crops": three_spatial_crops,
      "prefetch_to_device": 2,
  })


def augmentation(*, color: bool, rand_augment_magnitude: int | None = None
                 ) -> ml_collections.ConfigDict:
  """Scale jitter (0.9 to 1.33), then colour jitter or RandAugment (2 layers)."""
  aug = ml_collections.ConfigDict({
      "do_jitter_scale": True, "scale_min_factor": 0.9, "scale_max_factor": 1.33,
      "prob_scale_jitter": 1.0, "do_color_augment": color, "prob_color_augment": 0.8,
      "prob_color_drop": 0.1})
  if rand_augment_magnitude is not None:
    aug.do_rand_augment = True
    aug.rand_augment_num_layers = 2
    aug.rand_augment_magnitude = rand_augment_magnitude
  return aug


def vivit_model(size: str, attention_type: str, *, temporal_layers: int = 4,
                droplayer: float = 0.0) -> ml_collections.ConfigDict:
  """ViViT-{B,L}/16x2 of `attention_type`, tubelets 16×16×2 initialised from the central frame."""
  hidden, heads, mlp, layers = VIT_SIZES[size]
  model = ml_collections.ConfigDict({
      "hidden_size": hidden,
      "patches": {"size": (16, 16, 2)},
      "attention_config": {"type": attention_type},
      "representation_size": None,
      "classifier": "token",
      "attention_dropout_rate": 0.0,
      "dropout_rate": 0.0,
      "stochastic_droplayer_rate": droplayer,
      "temporal_encoding_config": {"method": "3d_conv",
                                   "kernel_init_method": "central_frame_initializer"},
  })
  if attention_type == "factorized_encoder":
    model.spatial_transformer = {"num_heads": heads, "mlp_dim": mlp, "num_layers": layers}
    model.temporal_transformer = {"num_heads": heads, "mlp_dim": mlp,
                                  "num_layers": temporal_layers}
  else:
    model.update({"num_heads": heads, "mlp_dim": mlp, "num_layers": layers})
  return model


def set_training(config: ml_collections.ConfigDict, *, base_learning_rate: float, epochs: float,
                 train_size: int, label_smoothing: float | None = None,
                 mixup_alpha: float | None = None, batch_size: int = 64) -> None:
  """SGD with momentum 0.9, clipping at 1, cosine decay after 2.5 warmup epochs (the paper's)."""
  config.optimizer = "momentum"
  config.optimizer_configs = ml_collections.ConfigDict({"momentum": 0.9})
  config.l2_decay_factor = 0
  config.max_grad_norm = 1
  config.label_smoothing = label_smoothing
  if mixup_alpha:
    config.mixup = ml_collections.ConfigDict({"alpha": mixup_alpha})
  config.num_training_epochs = epochs
  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  config.rng_seed = 0
  steps_per_epoch = train_size // batch_size
  config.lr_configs = ml_collections.ConfigDict({
      "learning_rate_schedule": "compound",
      "factors": "constant * cosine_decay * linear_warmup",
      "warmup_steps": int(2.5 * steps_per_epoch),
      "steps_per_cycle": int(epochs * steps_per_epoch),
      "base_learning_rate": base_learning_rate,
  })


def init_from_vit(checkpoint_path: str | None, *, size_change: str = "tile"
                  ) -> ml_collections.ConfigDict:
  """`init_from` an ImageNet-21k ViT (Scenic or big_vision file) with a CLS token."""
  return ml_collections.ConfigDict({
      "checkpoint_path": checkpoint_path,
      "checkpoint_format": "scenic",
      "model_config": {"model": {"classifier": "token"}},
      "restore_positional_embedding": True,
      "restore_input_embedding": True,
      "positional_embed_size_change": size_change,
  })


def set_run_fields(config: ml_collections.ConfigDict, *, checkpoint_steps: int = 1000,
                   log_summary_steps: int = 100, log_eval_steps: int | None = None) -> None:
  """Logging, checkpointing and the device mesh (pure data parallelism by default)."""
  config.write_summary = True
  config.checkpoint = True
  config.checkpoint_steps = checkpoint_steps
  config.max_checkpoints_to_keep = 3
  config.log_summary_steps = log_summary_steps
  config.log_eval_steps = log_eval_steps
  config.mesh = (("data", -1), ("fsdp", 1), ("tensor", 1))
  config.model_dtype_str = "float32"
  config.data_dtype_str = "float32"
  # Trainer options beyond Scenic's; present (typed, unset) so `--config.x=...` can set them.
  config.eval_average = "logits"
  config.gradient_accumulation_steps = 1
  config.eval_checkpoint_path = ml_collections.config_dict.placeholder(str)


def synthetic_dataset(task: str = "motion") -> ml_collections.ConfigDict:
  """A synthetic set (32×32, 16 frames) at `synthetic_base_dir(task)`: the motion set (8 classes)
  or the order set (6 classes, `vivit_jax.data.synthetic`)."""
  from vivit_jax.data import synthetic  # local: pulls in TensorFlow
  return synthetic.default_dataset_configs(synthetic_base_dir(task), task)


def runlocal(config: ml_collections.ConfigDict, *, steps: int = 10
             ) -> ml_collections.ConfigDict:
  """The same experiment shrunk to a smoke test on the synthetic motion set.

  Keeps the model variant, classifier, multi-head layout, optimizer, schedule factors,
  regularisation, flip and number of test views; replaces the data, the model widths, the
  number of steps and the pretrained initialisation.
  """
  dc = config.dataset_configs
  local = synthetic_dataset()
  local.random_flip = dc.get("random_flip", True)
  local.num_test_clips = min(2, dc.get("num_test_clips", 1))
  local.do_three_spatial_crops = dc.get("do_three_spatial_crops", False)
  local.augmentation_params = dc.get("augmentation_params", local.augmentation_params)
  if dc.get("class_splits"):
    # One label per synthetic clip: both heads learn it (the same key read twice).
    from vivit_jax.data import tfrecord  # local: pulls in TensorFlow
    n = local.num_classes
    local.label_keys = (tfrecord.LABEL_KEY,) * len(dc.class_splits)
    local.class_splits = [n] * len(dc.class_splits)
    local.split_names = list(dc.get("split_names") or [])
    local.num_classes = n * len(dc.class_splits)
  config.dataset_configs = local

  model = config.model
  model.hidden_size = 32
  model.patches.size = (8, 8, 2)
  small = {"num_heads": 2, "mlp_dim": 64, "num_layers": 1}
  if model.attention_config.type == "factorized_encoder":
    model.spatial_transformer = dict(small)
    model.temporal_transformer = dict(small)
  else:
    model.update(small)

  config.init_from = ml_collections.ConfigDict()
  config.num_training_steps = steps
  config.num_training_epochs = None
  config.batch_size = config.eval_batch_size = 8
  lr = config.lr_configs
  if lr.get("warmup_steps"):
    lr.warmup_steps = 2
  if lr.get("steps_per_cycle"):
    lr.steps_per_cycle = steps
  config.checkpoint_steps = steps
  config.log_summary_steps = 2
  config.log_eval_steps = steps
  return config


CONFIG_ARGS = ("runlocal",)


def finish(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies the `get_config` argument: None/'' (the full experiment) or 'runlocal'."""
  if not arg:
    return config
  if arg == "runlocal":
    return runlocal(config)
  raise ValueError(f"config argument {arg!r} (after ':' in --config); valid: '' (the full "
                   f"experiment) or {list(CONFIG_ARGS)}")
