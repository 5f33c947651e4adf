"""Shared helpers for the checkpoint tests: fixture configs, tiny models, inputs."""
import json
import pathlib

import jax
import ml_collections
import numpy as np
from flax.core import meta

from vivit_jax.models import build_model

VIT_CASE = "vit_init/vit_checkpoints/vit_token_16px"
SURGERY = "vit_init/vivit_from_vit/{}__central_frame_initializer__tile__from_vit_token_16px"


def read_config(path: pathlib.Path) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads(pathlib.Path(path).read_text()))


def surgery_case(scenic_ref: pathlib.Path, variant: str):
  """(config with an absolute checkpoint_path, fixture npz) of a Scenic init-from-ViT case."""
  base = scenic_ref / SURGERY.format(variant)
  config = read_config(str(base) + ".config.json")
  config.init_from.checkpoint_path = str(scenic_ref / config.init_from.checkpoint_path)
  return config, np.load(str(base) + ".npz")


def fixture_prefix(npz, prefix: str) -> dict[str, np.ndarray]:
  """`fresh/...` or `result/...` entries of a surgery fixture as a flat dict."""
  return {k[len(prefix) + 1:]: npz[k] for k in npz.files if k.startswith(prefix + "/")}


def fresh_params(model_config, num_classes: int, video_shape, *, seed: int = 0, boxed=False):
  model = build_model(model_config, num_classes)
  params = jax.jit(lambda r: model.init(r, np.zeros(video_shape, np.float32), train=False))(
      jax.random.PRNGKey(seed))["params"]
  return model, (params if boxed else meta.unbox(params))


def param_shapes(model_config, num_classes: int, video_shape, *, boxed: bool = False):
  """`jax.ShapeDtypeStruct`s of the model's parameters (nothing is compiled or computed)."""
  model = build_model(model_config, num_classes)
  shapes = jax.eval_shape(lambda r: model.init(r, np.zeros(video_shape, np.float32), train=False),
                          jax.random.PRNGKey(0))["params"]
  return model, (shapes if boxed else meta.unbox(shapes))


def video(shape, seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


def vivit_config(**model_overrides) -> ml_collections.ConfigDict:
  """A tiny Model 1 config (fixture sizes: d=48, 4 heads, 2 layers, tubelets 4x4x2, 8x16x16)."""
  model = dict(attention_config=dict(type="spacetime"), classifier="token", hidden_size=48,
               mlp_dim=96, num_heads=4, num_layers=2, patches=dict(size=(4, 4, 2)),
               temporal_encoding_config=dict(method="3d_conv",
                                             kernel_init_method="central_frame_initializer"),
               representation_size=None, dropout_rate=0.0, attention_dropout_rate=0.0)
  model.update(model_overrides)
  return ml_collections.ConfigDict(dict(
      model=model, dataset_configs=dict(num_frames=8, crop_size=16, num_classes=5),
      init_from=dict(checkpoint_path="", positional_embed_size_change="tile")))


def random_like(shapes, seed: int = 0):
  """Random numpy values for a tree of ShapeDtypeStructs (a stand-in for a fresh init)."""
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda s: rng.normal(0, 0.02, s.shape).astype(s.dtype), shapes)
