"""Checks an experiment config before anything runs.

`validate_config(config)` raises ValueError naming the bad field (`model.classifier`,
`lr_configs.factors`, ...) and the valid values; an unknown field gets a did-you-mean
suggestion. Valid values come from the modules that use them (models, optim, schedules,
sharding, evaluate, data, checkpoints), so this file never keeps a second copy of a list.
New top-level fields must be added to `TOP_LEVEL_FIELDS`.
"""
import difflib
from typing import Any, Iterable, Sequence

import ml_collections

from vivit_jax import config_facts, evaluate, optim, schedules, sharding
from vivit_jax.checkpoints import surgery, vit
from vivit_jax.data import fields, synthetic_device
from vivit_jax.models import ATTENTION_TYPES, CLASSIFIERS, build_model

MODEL_NAMES = ("vivit_classification", "vivit_multihead_classification")

TOP_LEVEL_FIELDS = (
    # Scenic's fields. experiment_name and dataset_name are labels, logged at the start.
    "experiment_name", "dataset_name", "dataset_configs", "data_dtype_str", "model_name",
    "model", "model_dtype_str", "trainer_name", "optimizer", "optimizer_configs",
    "l2_decay_factor", "max_grad_norm", "label_smoothing", "num_training_epochs",
    "num_training_steps", "batch_size", "eval_batch_size", "rng_seed", "init_from", "lr_configs",
    "write_summary", "checkpoint", "checkpoint_steps", "log_summary_steps", "log_eval_steps",
    "mixup", "xprof",
    # This project's.
    "mesh", "sharding_rules", "gradient_accumulation_steps", "max_checkpoints_to_keep",
    "eval_average", "eval_checkpoint_path",
)
# Scenic fields with no counterpart here, refused when set to anything but "off".
REFUSED_FIELDS = {
    "steps_per_eval": "every example of the validation split is evaluated exactly once",
    "steps_per_test": "every example of the test split is evaluated exactly once",
    "debug_train": "there is no debug mode; use a `:runlocal` config for a quick run",
    "debug_eval": "there is no debug mode; use a `:runlocal` config for a quick run",
    "multicrop_clips_per_device": "the test batch is eval_batch_size videos with all their "
                                  "views",
    "multicrop_softmax_logits": "use eval_average='softmax'",
    "confusion_matrix_metrics": "no confusion matrix is computed",
}
TRAINER_NAMES = ("vivit_trainer",)  # the one trainer (Scenic's name for it)
MODEL_FIELDS = (
    "hidden_size", "patches", "attention_config", "spatial_transformer", "temporal_transformer",
    "num_heads", "mlp_dim", "num_layers", "representation_size", "classifier", "dropout_rate",
    "attention_dropout_rate", "stochastic_droplayer_rate", "temporal_encoding_config",
    "attention_implementation", "remat", "model_dtype_str", "return_prelogits",
    "return_preclassifier",
)
TRANSFORMER_FIELDS = ("num_layers", "mlp_dim", "num_heads")
INIT_FROM_FIELDS = (
    "checkpoint_path", "checkpoint_format", "model_config", "restore_positional_embedding",
    "restore_input_embedding", "positional_embed_size_change", "restore_output_proj",
    "init_spatial_transformer", "init_temporal_transformer", "init_temporal_layer_norm",
    "classifier_type",
)
# Fields people put at the wrong level: where Scenic keeps them.
MOVED = {
    "class_splits": "dataset_configs.class_splits", "split_names": "dataset_configs.split_names",
    "num_classes": "dataset_configs.num_classes", "num_frames": "dataset_configs.num_frames",
    "base_learning_rate": "lr_configs.base_learning_rate",
    "warmup_steps": "lr_configs.warmup_steps",
    "momentum": "optimizer_configs.momentum", "weight_decay": "optimizer_configs.weight_decay",
    "hidden_size": "model.hidden_size", "classifier": "model.classifier",
}


def _fail(path: str, value: Any, valid: Iterable | str) -> None:
  valid = valid if isinstance(valid, str) else f"valid: {list(valid)}"
  raise ValueError(f"config.{path}={value!r}; {valid}")


def _check_known(prefix: str, keys: Iterable[str], valid: Sequence[str]) -> None:
  for key in keys:
    if key in valid:
      continue
    message = f"config.{prefix}{key} is not a known field"
    if not prefix and key in MOVED:
      message += f"; it belongs in config.{MOVED[key]}"
    else:
      close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
      if close:
        message += f"; did you mean config.{prefix}{close[0]}?"
    raise ValueError(f"{message} Valid fields here: {sorted(valid)}")


def _int(node, key: str, path: str, *, minimum: int = 1, required: bool = False,
         allow: tuple = ()) -> int | None:
  value = node.get(key) if node is not None else None
  if value is None:
    if required:
      raise ValueError(f"config.{path} is required (an integer >= {minimum})")
    return None
  if value in allow:
    return value
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    _fail(path, value, f"must be an integer >= {minimum}")
  return value


def _number(node, key: str, path: str, *, low: float = 0.0, high: float | None = None,
            high_open: bool = False) -> None:
  value = node.get(key) if node is not None else None
  if value is None:
    return
  bad = isinstance(value, bool) or not isinstance(value, (int, float)) or value < low
  bad = bad or (high is not None and (value >= high if high_open else value > high))
  if bad:
    bound = "" if high is None else f" and {'<' if high_open else '<='} {high}"
    _fail(path, value, f"must be a number >= {low}{bound}")


def _transformer(node, path: str, hidden: int) -> None:
  if node is None:
    raise ValueError(f"config.{path}.({', '.join(TRANSFORMER_FIELDS)}) is required")
  _check_known(f"{path}.", node.keys(), TRANSFORMER_FIELDS)
  for key in TRANSFORMER_FIELDS:
    _int(node, key, f"{path}.{key}", required=True)
  if hidden % node.num_heads:
    _fail(f"{path}.num_heads", node.num_heads, f"must divide model.hidden_size={hidden}")


def _check_model(config, num_classes: int) -> None:
  model = config.get("model")
  if model is None:
    raise ValueError("config.model is required (hidden_size, patches, attention_config, ...)")
  _check_known("model.", model.keys(), MODEL_FIELDS)
  hidden = _int(model, "hidden_size", "model.hidden_size", required=True)
  kind = (model.get("attention_config") or {}).get("type", "spacetime")
  if kind not in ATTENTION_TYPES:
    _fail("model.attention_config.type", kind, ATTENTION_TYPES)
  if model.get("classifier", "gap") not in CLASSIFIERS:
    _fail("model.classifier", model.classifier, CLASSIFIERS)
  if kind == "factorized_encoder":
    for part in ("spatial_transformer", "temporal_transformer"):
      _transformer(model.get(part), f"model.{part}", hidden)
  else:
    _transformer(ml_collections.ConfigDict({k: model.get(k) for k in TRANSFORMER_FIELDS}),
                 "model", hidden)
  size = (model.get("patches") or {}).get("size")
  if size is None or not all(isinstance(s, int) and s > 0 for s in size):
    _fail("model.patches.size", size, "must be positive integers (fh, fw, ft)")
  for key in ("dropout_rate", "attention_dropout_rate", "stochastic_droplayer_rate"):
    _number(model, key, f"model.{key}", high=1.0, high_open=True)
  # The model's own checks (dtype, classifier × attention type, attention implementation).
  build_model(model, num_classes, dtype=config.get("model_dtype_str"))


def _num_classes(config) -> int:
  num_classes = config_facts.num_classes(config)
  splits = config_facts.heads(config).class_splits
  model_name = config.get("model_name")
  if splits and model_name == "vivit_classification":
    _fail("model_name", model_name, "dataset_configs.class_splits needs "
          "'vivit_multihead_classification'")
  if not splits and model_name == "vivit_multihead_classification":
    raise ValueError("config.model_name='vivit_multihead_classification' needs "
                     "dataset_configs.class_splits (e.g. [300, 97]) and split_names")
  return num_classes


def _check_dataset(config) -> None:
  data_cfg = config.dataset_configs
  _check_refused("dataset_configs.", data_cfg, fields.REFUSED_DATASET_FIELDS, off_is_fine=False)
  _check_known("dataset_configs.", data_cfg.keys(), fields.DATASET_CONFIG_FIELDS)
  if data_cfg.get("one_hot_labels") is False:
    _fail("dataset_configs.one_hot_labels", False, "labels are always one-hot (or multi-hot) "
          "here; set True or remove it")
  _int(data_cfg, "prefetch_to_device", "dataset_configs.prefetch_to_device", minimum=0)
  config_facts.data_dtype(config)
  for key in ("tables", "examples_per_subset"):
    table = data_cfg.get(key)
    if table is None:
      continue
    for split, value in dict(table).items():
      ok = isinstance(value, str) if key == "tables" else (
          isinstance(value, int) and not isinstance(value, bool) and value >= 0)
      if not ok:
        _fail(f"dataset_configs.{key}.{split}", value,
              "must be a file pattern string" if key == "tables" else
              "must be a non-negative integer")
  if data_cfg.get("base_dir") is not None and not isinstance(data_cfg.base_dir, str):
    _fail("dataset_configs.base_dir", data_cfg.base_dir, "must be a path string")
  for key in ("num_frames", "crop_size", "min_resize", "stride", "num_test_clips"):
    _int(data_cfg, key, f"dataset_configs.{key}")
  synthetic_device.check_config(config)
  if data_cfg.get("tfds_name") is not None:
    fields.check_tfds_fields(data_cfg)
  if data_cfg.get("tables") is not None or data_cfg.get("tfds_name") is not None:
    fields.ClipConfig.from_configs(data_cfg)


def _check_training(config) -> None:
  _int(config, "batch_size", "batch_size", required=True)
  _int(config, "eval_batch_size", "eval_batch_size")
  steps = _int(config, "num_training_steps", "num_training_steps")
  _number(config, "num_training_epochs", "num_training_epochs")
  per_epoch = schedules.steps_per_epoch_of(config)
  if steps is None:
    if not config.get("num_training_epochs"):
      raise ValueError("config.num_training_steps or config.num_training_epochs is required")
    if per_epoch is None:
      raise ValueError("config.num_training_epochs needs dataset_configs.examples_per_subset."
                       "train (or set num_training_steps)")
  optim.check_optimizer_config(config)
  lr = config.get("lr_configs")
  if lr is None:
    raise ValueError("config.lr_configs is required (at least base_learning_rate)")
  _check_known("lr_configs.", lr.keys(), schedules.LR_CONFIG_FIELDS)
  schedules.build_lr_schedule(lr, steps_per_epoch=per_epoch,
                              total_steps=schedules.total_training_steps(config, per_epoch))
  _number(config, "label_smoothing", "label_smoothing", high=1.0, high_open=True)
  for key in ("alpha", "cutmix_alpha"):
    _number(config.get("mixup"), key, f"mixup.{key}")
  for key in ("log_summary_steps", "log_eval_steps", "checkpoint_steps", "rng_seed"):
    _int(config, key, key, minimum=0)
  _int(config, "max_checkpoints_to_keep", "max_checkpoints_to_keep")
  if config.get("eval_average", "logits") not in evaluate.AVERAGES:
    _fail("eval_average", config.eval_average, evaluate.AVERAGES)


def _check_mesh(config) -> None:
  sharding.mesh_shape(config.get("mesh"))
  sharding.logical_rules(config.get("sharding_rules"))


def _check_init_from(config) -> None:
  init_from = config.get("init_from")
  if not init_from:
    return
  _check_known("init_from.", init_from.keys(), INIT_FROM_FIELDS)
  if not init_from.get("checkpoint_path"):
    return
  vit.check_format(init_from.get("checkpoint_format", "scenic"))
  how = init_from.get("positional_embed_size_change", "tile")
  if how not in surgery.POSEMB_SIZE_CHANGES:
    _fail("init_from.positional_embed_size_change", how, surgery.POSEMB_SIZE_CHANGES)


def _check_refused(prefix: str, node, refused: dict, *, off_is_fine: bool) -> None:
  for key, why in refused.items():
    if key in node.keys() and not (off_is_fine and not node.get(key)):
      raise ValueError(f"config.{prefix}{key}={node.get(key)!r} is a Scenic field that "
                       f"vivit_jax does not implement: {why}. Remove it.")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for the first bad field found; returns None for a good config."""
  _check_refused("", config, REFUSED_FIELDS, off_is_fine=True)
  _check_known("", [k for k in config.keys() if k not in REFUSED_FIELDS], TOP_LEVEL_FIELDS)
  if config.get("trainer_name") not in (None,) + TRAINER_NAMES:
    _fail("trainer_name", config.trainer_name, TRAINER_NAMES)
  if config.get("model_name") is not None and config.model_name not in MODEL_NAMES:
    _fail("model_name", config.model_name, MODEL_NAMES)
  num_classes = _num_classes(config)
  _check_dataset(config)
  _check_model(config, num_classes)
  _check_training(config)
  _check_mesh(config)
  _check_init_from(config)
