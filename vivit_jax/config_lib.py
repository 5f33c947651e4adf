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
      "num_test_clips": num_test_clips,
      "do_three_spatial_crops": three_spatial_crops,
      "prefetch_to_device": 2,
      # With --config.dataset_name=synthetic_device: 'motion' (default) or 'random'.
      "synthetic_device_pattern": ml_collections.config_dict.placeholder(str),
  })


def tfds_video_dataset(tfds_name: str, num_classes: int, sizes: dict, *, splits: dict,
                       **kwargs) -> ml_collections.ConfigDict:
  """`dataset_configs` of a video dataset prepared with TFDS (docs/finetuning.md); `kwargs` as
  `video_dataset`. `tfds_data_dir` unset: TFDS's default folder ($TFDS_DATA_DIR or
  ~/tensorflow_datasets)."""
  data_cfg = video_dataset("", num_classes, sizes, **kwargs)
  del data_cfg.base_dir, data_cfg.tables
  data_cfg.tfds_name = tfds_name
  data_cfg.tfds_data_dir = ml_collections.config_dict.placeholder(str)
  data_cfg.tfds_splits = dict(splits)
  return data_cfg


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
      "attention_implementation": "auto",  # models/attention.py: fused kernel where it helps
      "remat": "none",  # models/remat.py: 'full' or 'dots_saveable' trade compute for memory
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
                 label_smoothing: float | None = None, mixup_alpha: float | None = None,
                 batch_size: int = 64) -> None:
  """SGD with momentum 0.9, clipping at 1, cosine decay after 2.5 warmup epochs (the paper's).

  The schedule's lengths are not frozen here: warm-up is in epochs and the cosine spans the
  run's total steps, both turned into steps when the run starts, so they follow any override
  of `batch_size`, `num_training_epochs` or `num_training_steps`.
  """
  config.optimizer = "momentum"
  config.optimizer_configs = ml_collections.ConfigDict({"momentum": 0.9})
  config.l2_decay_factor = 0
  config.max_grad_norm = 1
  config.label_smoothing = label_smoothing
  if mixup_alpha:
    config.mixup = ml_collections.ConfigDict({"alpha": mixup_alpha})
  config.num_training_epochs = float(epochs)
  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  config.rng_seed = 0
  config.lr_configs = ml_collections.ConfigDict({
      "learning_rate_schedule": "compound",
      "factors": "constant * cosine_decay * linear_warmup",
      "warmup_epochs": 2.5,
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
  """Run length, logging, checkpointing and the device mesh (`sharding.default_mesh`'s rule)."""
  set_run_length(config, epochs=config.get("num_training_epochs"),
                 steps=config.get("num_training_steps"))
  config.write_summary = True
  config.checkpoint = True
  config.checkpoint_steps = checkpoint_steps
  config.max_checkpoints_to_keep = 3
  config.log_summary_steps = log_summary_steps
  config.log_eval_steps = log_eval_steps
  config.xprof = False
  # Unset: sharding.default_mesh's rule (data parallel; FSDP per host when the state is big).
  config.mesh = ml_collections.config_dict.placeholder(tuple)
  config.model_dtype_str = "float32"
  config.data_dtype_str = "uint8"  # pixels to the devices, normalised there (config_facts.py)
  # Trainer options beyond Scenic's; present (typed, unset) so `--config.x=...` can set them.
  config.eval_average = "logits"
  config.gradient_accumulation_steps = 1
  config.eval_checkpoint_path = placeholder(str)


def set_run_length(config: ml_collections.ConfigDict, *, epochs: float | None = None,
                   steps: int | None = None) -> None:
  """`num_training_epochs` (float) and `num_training_steps` (int), both present and typed.

  Both exist on every config so that either can be set from the command line
  (`resolve_overrides` lets the one given there win over the file's); the unset one is a
  typed placeholder, not None, which the command line could not override.
  """
  for key, kind, value in (("num_training_epochs", float, epochs),
                           ("num_training_steps", int, steps)):
    if key in config:
      del config[key]  # a field keeps its first type: 8 would refuse 0.5 later
    config[key] = placeholder(kind) if value is None else kind(value)


def placeholder(kind: type):
  """An unset field of type `kind` that `--config.<field>=...` can still set."""
  return ml_collections.config_dict.placeholder(kind)


# Values that mean "unset" for a path field on the command line (`--config.x.checkpoint_path=None`).
UNSET = ("", "None", "none")
PATH_SUFFIXES = ("_path", "_dir", "_file")


def resolve_overrides(config: ml_collections.ConfigDict, overrides: dict) -> None:
  """Applies the command line's conventions to a config after `--config.*` overrides.

  Args:
    config: the parsed config (changed in place).
    overrides: `{dotted.field: value}` given on the command line
      (`ml_collections.config_flags.get_override_values`).

  - A path field (`*_path`, `*_dir`, `*_file`) given as `None`, `none` or an empty value is
    unset.
  - A run length given on the command line wins over the other one from the config file:
    `--config.num_training_steps=60` on an epoch-based config trains 60 steps.
  """
  for field, value in overrides.items():
    if field.endswith(PATH_SUFFIXES) and isinstance(value, str) and value.strip() in UNSET:
      *parents, leaf = field.split(".")
      node = config
      for name in parents:
        node = node[name]
      node[leaf] = None
  lengths = [f for f in ("num_training_steps", "num_training_epochs") if f in overrides]
  if len(lengths) == 2:
    raise ValueError("--config.num_training_steps and --config.num_training_epochs are both "
                     "given; give one (the run length)")
  if lengths:
    other = ("num_training_epochs" if lengths[0] == "num_training_steps"
             else "num_training_steps")
    config[other] = None


def synthetic_dataset(task: str = "motion") -> ml_collections.ConfigDict:
  """A synthetic set (32×32, 16 frames) at `synthetic_base_dir(task)`: the motion set (8 classes)
  or the order set (6 classes, `vivit_jax.data.synthetic`)."""
  from vivit_jax.data import synthetic  # local: pulls in TensorFlow
  return synthetic.default_dataset_configs(synthetic_base_dir(task), task)


def synthetic_tfds_dir() -> str:
  """Where `:runlocal` of a TFDS config prepares the synthetic set as a TFDS dataset."""
  return os.path.join(data_root(), "tfds")


def read_synthetic_through_tfds(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """After `runlocal`: the synthetic clips, read through TFDS (as the full config reads UCF101)."""
  from vivit_jax.data import synthetic_tfds  # local: pulls in TensorFlow Datasets
  synthetic_tfds.as_tfds(config.dataset_configs, synthetic_tfds_dir())
  return config


def runlocal(config: ml_collections.ConfigDict, *, steps: int = 10
             ) -> ml_collections.ConfigDict:
  """The same experiment shrunk to a smoke test on the synthetic motion set.

  Keeps the model variant, classifier, multi-head layout, optimizer, schedule factors,
  regularisation, flip and number of test views; replaces the data, the model widths, the
  number of steps and the pretrained initialisation.
  """
  data_cfg = config.dataset_configs
  local = synthetic_dataset()
  local.random_flip = data_cfg.get("random_flip", True)
  local.num_test_clips = min(2, data_cfg.get("num_test_clips", 1))
  local.do_three_spatial_crops = data_cfg.get("do_three_spatial_crops", False)
  local.augmentation_params = data_cfg.get("augmentation_params", local.augmentation_params)
  if data_cfg.get("class_splits"):
    # One label per synthetic clip: both heads learn it (the same key read twice).
    from vivit_jax.data import tfrecord  # local: pulls in TensorFlow
    n = local.num_classes
    local.label_keys = (tfrecord.LABEL_KEY,) * len(data_cfg.class_splits)
    local.class_splits = [n] * len(data_cfg.class_splits)
    local.split_names = list(data_cfg.get("split_names") or [])
    local.num_classes = n * len(data_cfg.class_splits)
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
  set_run_length(config, steps=steps)
  config.batch_size = config.eval_batch_size = 8
  lr = config.lr_configs
  if lr.get("warmup_steps") or lr.get("warmup_epochs"):
    lr.warmup_epochs = None
    lr.warmup_steps = 1  # a smoke test may be shortened to 2 steps from the command line
  lr.steps_per_cycle = None  # the run's steps
  config.checkpoint_steps = steps
  config.log_summary_steps = 2
  config.log_eval_steps = steps
  return config


CONFIG_ARGS = ("runlocal",)


def apply_config_arg(config: ml_collections.ConfigDict, arg: str | None
                     ) -> ml_collections.ConfigDict:
  """Applies the `get_config` argument: None/'' (the full experiment) or 'runlocal'."""
  if not arg:
    return config
  if arg == "runlocal":
    return runlocal(config)
  raise ValueError(f"config argument {arg!r} (after ':' in --config); valid: '' (the full "
                   f"experiment) or {list(CONFIG_ARGS)}")
