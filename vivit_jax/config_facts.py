"""Facts a config implies, owned here: the output width, the heads, the clip shape, the params.

The trainer, the config checker and the converter all ask these functions, so the rules (e.g.
Epic-Kitchens' width is the sum of its `class_splits`) live in one place.
"""
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.core import meta

from vivit_jax.data import fields
from vivit_jax.models import build_model


class Heads(NamedTuple):
  """The multi-head (Epic-Kitchens) layout of the output: None, None for one head."""
  class_splits: tuple[int, ...] | None
  split_names: tuple[str, ...] | None


def heads(config: ml_collections.ConfigDict) -> Heads:
  """`dataset_configs.class_splits` and `split_names`, checked against each other."""
  data_cfg = config.get("dataset_configs") or {}
  splits, names = data_cfg.get("class_splits"), data_cfg.get("split_names")
  if not splits:
    return Heads(None, None)
  splits = tuple(splits)
  if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in splits):
    raise ValueError(f"config.dataset_configs.class_splits={list(splits)}; must be positive "
                     "integers (one output width per head)")
  if names and len(names) != len(splits):
    raise ValueError(f"config.dataset_configs.split_names={list(names)}; needs one name per "
                     f"class split ({len(splits)})")
  return Heads(splits, tuple(names) if names else None)


def num_classes(config: ml_collections.ConfigDict) -> int:
  """The output width: `dataset_configs.num_classes` (with class splits: their sum)."""
  data_cfg = config.get("dataset_configs")
  if data_cfg is None:
    raise ValueError("config.dataset_configs is required (num_classes, tables, ...)")
  splits = heads(config).class_splits
  n = data_cfg.get("num_classes")
  if n is None:
    if splits:
      return sum(splits)
    raise ValueError("config.dataset_configs.num_classes is required (an integer >= 1)")
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"config.dataset_configs.num_classes={n!r}; must be an integer >= 1")
  if splits and sum(splits) != n:
    raise ValueError(f"config.dataset_configs.class_splits={list(splits)}; must sum to "
                     f"dataset_configs.num_classes={n}")
  return n


def input_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
  """One clip `[t, h, w, 3]` from `dataset_configs.num_frames` and `crop_size` (int or (h, w))."""
  data_cfg = config.get("dataset_configs") or {}
  frames, crop = data_cfg.get("num_frames"), data_cfg.get("crop_size")
  if frames is None or crop is None:
    raise ValueError("config.dataset_configs.num_frames and .crop_size are required (they fix "
                     "the number of tokens)")
  h, w = (crop, crop) if isinstance(crop, int) else tuple(crop)
  return (int(frames), int(h), int(w), 3)


# `data_dtype_str`: how clips travel to the devices. 'uint8' is pixels in [0, 255], normalised on
# the devices (a quarter of float32's bytes; our configs' default); the float types arrive
# normalised by the host, as in Scenic (whose default, float32, is the default here too).
DATA_DTYPES = {"uint8": np.uint8, "float32": jnp.float32, "bfloat16": jnp.bfloat16}


def data_dtype(config: ml_collections.ConfigDict):
  """`data_dtype_str`: the dtype clips travel to the devices in (the model casts them after)."""
  name = config.get("data_dtype_str") or "float32"
  if name not in DATA_DTYPES:
    raise ValueError(f"config.data_dtype_str={name!r}; valid: {list(DATA_DTYPES)} ('uint8': "
                     "pixels, normalised on the devices)")
  return DATA_DTYPES[name]


def uint8_pixels(config: ml_collections.ConfigDict) -> bool:
  """Whether the data source hands over uint8 pixels (`data_dtype_str='uint8'`)."""
  return data_dtype(config) == np.uint8


def batch_dtypes(config: ml_collections.ConfigDict) -> dict:
  """`{key: dtype}` of a batch as it travels to the devices: what the step is compiled for."""
  inputs = jnp.uint8 if fields.is_device_dataset(config) else data_dtype(config)  # pixels
  return {"inputs": inputs, "label": jnp.float32, "batch_mask": jnp.float32}


def model(config: ml_collections.ConfigDict):
  """The config's ViViT (`build_model`) for its output width and dtype."""
  return build_model(config.model, num_classes(config),
                     dtype=config.get("model_dtype_str") or "float32")


def init_fn(vivit, shape: Sequence[int]):
  """`rng -> boxed params` of `vivit` for clips of `shape` (jit or eval_shape it)."""
  def init(rng):
    video = jnp.zeros((1,) + tuple(shape), jnp.float32)
    return vivit.init({"params": rng}, video, train=False)["params"]
  return init


def abstract_params(config: ml_collections.ConfigDict, *, boxed: bool = False):
  """Shapes and dtypes of the config's parameters, without computing any."""
  tree = jax.eval_shape(init_fn(model(config), input_shape(config)), jax.random.PRNGKey(0))
  return tree if boxed else meta.unbox(tree)
