"""Every config file parses, validates and builds its model (shapes only); bad values are named."""
import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import pytest

from vivit_jax import config_check, config_lib
from vivit_jax.models import build_model

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = ("k400_fe", "k400_st", "k600_fe", "ssv2_fe", "epic_kitchens_fe", "mit_fe",
                "synthetic", "ucf101_fe", "hmdb51_fe", "k400_fe_large", "k400_fsa", "k400_fdpa")


def load(name: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIG_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_every_config_file_is_tested():
  assert sorted(p.stem for p in CONFIG_DIR.glob("*.py")) == sorted(CONFIG_FILES)


@pytest.mark.parametrize("arg", [None, "runlocal"])
@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_validates_and_builds(name, arg):
  config = load(name, arg)
  config_check.validate_config(config)
  dc = config.dataset_configs
  model = build_model(config.model, dc.num_classes, dtype=config.get("model_dtype_str"))
  video = jax.ShapeDtypeStruct((2, dc.num_frames, dc.crop_size, dc.crop_size, 3), jnp.float32)

  def init_and_apply(v):
    variables = model.init(jax.random.PRNGKey(0), v, train=False)
    return model.apply(variables, v, train=False), variables

  logits, variables = jax.eval_shape(init_and_apply, video)  # traced only: nothing allocated
  assert logits.shape == (2, dc.num_classes)
  num_params = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(variables))
  if arg == "runlocal":
    assert num_params < 200_000
    assert config.num_training_steps <= 20
    if name in ("ucf101_fe", "hmdb51_fe"):  # The synthetic set, read through its TFDS builder.
      assert dc.tfds_name == "synthetic_motion" and "tables" not in dc
      assert dc.tfds_data_dir == config_lib.synthetic_tfds_dir()
    else:
      assert dc.base_dir == config_lib.synthetic_base_dir()
    assert not config.init_from.get("checkpoint_path")
  elif name != "synthetic":
    assert num_params > 80e6  # ViViT-B or -L


def test_benchmark_specifics():
  k400 = load("k400_fe")
  assert k400.model.temporal_transformer.num_layers == 4 and k400.model.hidden_size == 768
  assert k400.lr_configs.base_learning_rate == 5e-2 and k400.dataset_configs.num_classes == 400
  assert load("k400_st").model.attention_config.type == "spacetime"
  assert load("k600_fe").dataset_configs.num_classes == 600
  assert load("mit_fe").dataset_configs.num_classes == 339
  for arg in (None, "runlocal"):
    assert load("ssv2_fe", arg).dataset_configs.random_flip is False
    ek = load("epic_kitchens_fe", arg)
    assert ek.model_name == "vivit_multihead_classification"
    assert list(ek.dataset_configs.split_names) == ["noun", "verb"]
  ek = load("epic_kitchens_fe")
  assert list(ek.dataset_configs.class_splits) == [300, 97]
  assert ek.dataset_configs.num_classes == 397
  assert load("k400_fe").mesh is None  # sharding.default_mesh's rule
  assert load("k400_fe").model.attention_implementation == "auto"


def test_finetuning_configs():
  ucf = load("ucf101_fe")
  assert ucf.dataset_configs.tfds_name == "ucf101/ucf101_1_256"
  assert dict(ucf.dataset_configs.tfds_splits) == {"train": "train", "validation": "test",
                                                   "test": "test"}
  hmdb = load("hmdb51_fe")
  for config, classes, train in ((ucf, 101, 9537), (hmdb, 51, 3570)):
    assert config.dataset_configs.num_classes == classes
    assert config.dataset_configs.examples_per_subset.train == train
    assert config.init_from.checkpoint_path.endswith("kinetics_400/vivit_base_16x2_fe/checkpoint")
    assert config.init_from.restore_output_proj is False  # A fresh head for the new classes.
    assert config.model.temporal_transformer.num_layers == 4 and config.model.hidden_size == 768


def test_data_dir_env_var(monkeypatch, tmp_path):
  monkeypatch.setenv("VIVIT_DATA_DIR", str(tmp_path))
  assert load("synthetic").dataset_configs.base_dir == str(tmp_path / "synthetic_motion")
  assert load("k400_fe").dataset_configs.base_dir == str(tmp_path / "kinetics400")


def test_unknown_config_argument():
  with pytest.raises(ValueError, match=r"'tiny'.*runlocal"):
    load("k400_fe", "tiny")


def _set(config, dotted: str, value):
  *parents, leaf = dotted.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


BAD_VALUES = [
    ("model.attention_config.type", "spacetim",
     r"model.attention_config.type='spacetim'.*'factorized_encoder'"),
    ("model.classifier", "tok", r"model.classifier='tok'.*'gap'"),
    ("model.hiden_size", 768, r"config.model.hiden_size .*did you mean config.model.hidden_size"),
    ("model.spatial_transformer.num_heads", 5,
     r"model.spatial_transformer.num_heads=5.*divide model.hidden_size=768"),
    ("optimizer", "adam_w", r"optimizer='adam_w'.*'adamw'"),
    ("optimizer_configs.beta1", 0.9, r"optimizer_configs.beta1 .*'momentum'"),
    ("lr_configs.factors", "constant * cosine", r"lr_configs.factors.*'cosine'.*cosine_decay"),
    ("lr_configs.warmup_step", 10, r"did you mean config.lr_configs.warmup_steps"),
    ("mesh", (("data", -1), ("model", 2)), r"config.mesh=.*'model'.*'data', 'fsdp', 'tensor'"),
    ("mesh", (("data", -1), ("fsdp", -1)), r"config.mesh=.*at most one size -1"),
    ("datset_configs", {}, r"config.datset_configs .*did you mean config.dataset_configs"),
    ("num_training_step", 10, r"did you mean config.num_training_steps"),
    ("class_splits", [300, 97], r"config.class_splits .*belongs in config.dataset_configs"),
    # ConfigDict refuses a str for an int field, so these replace the whole table.
    ("dataset_configs.examples_per_subset", {"train": "1000"},
     r"examples_per_subset.train='1000'.*non-negative integer"),
    ("dataset_configs.tables", {"train": 5}, r"dataset_configs.tables.train=5.*file pattern"),
    ("dataset_configs.num_frames", 0, r"dataset_configs.num_frames=0.*integer >= 1"),
    ("dataset_configs.augmentation_params.do_flip", True,
     r"augmentation_params has unknown keys \['do_flip'\]"),
    ("batch_size", 0, r"config.batch_size=0.*integer >= 1"),
    ("label_smoothing", 1.5, r"config.label_smoothing=1.5.*< 1.0"),
    ("eval_average", "mean", r"eval_average='mean'.*'logits', 'softmax'"),
    ("model_name", "vivit", r"model_name='vivit'.*vivit_multihead_classification"),
    ("init_from.positional_embed_size_change", "stretch",
     r"positional_embed_size_change='stretch'.*'resize', 'tile'"),
    ("init_from.checkpoint_format", "pytorch", r"checkpoint_format='pytorch'.*'big_vision'"),
    ("gradient_accumulation_steps", 0, r"gradient_accumulation_steps=0"),
]


@pytest.mark.parametrize("field,value,message", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_is_named(field, value, message):
  config = load("k400_fe")
  _set(config, field, value)
  with pytest.raises(ValueError, match=message):
    config_check.validate_config(config)


def test_class_splits_must_sum_to_num_classes():
  config = load("epic_kitchens_fe")
  config.dataset_configs.class_splits = [300, 96]
  with pytest.raises(ValueError, match=r"class_splits=\[300, 96\].*num_classes=397"):
    config_check.validate_config(config)


def test_class_splits_need_the_multihead_model():
  config = load("epic_kitchens_fe")
  config.model_name = "vivit_classification"
  with pytest.raises(ValueError, match="class_splits needs 'vivit_multihead_classification'"):
    config_check.validate_config(config)


def test_multihead_model_needs_class_splits():
  config = load("k400_fe")
  config.model_name = "vivit_multihead_classification"
  with pytest.raises(ValueError, match="needs dataset_configs.class_splits"):
    config_check.validate_config(config)
