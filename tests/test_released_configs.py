"""Each released Scenic ViViT checkpoint has a config that builds exactly its parameter tree.

The expected tree of a released file is written out here from Scenic's naming, independently of
`vivit_jax.models` (`scenic_tree`), with the sizes of the Scenic config that trained it.
`scenic_tree` is first checked against the trees Scenic itself wrote
(`scenic_ref/vivit/*/param_tree.txt`), then compared with each config's model, built with
`jax.eval_shape` (nothing allocated: the L models stay abstract). Models 3 and 4 have no released file: their K400 configs are checked against the paper's
parameter counts (Table 2).
"""
import importlib.util
import json
import math

from flax.core import meta
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from tests.test_configs import CONFIG_DIR
from tests.test_model_sizes import PAPER
from vivit_jax.checkpoints import flatten
from vivit_jax.models import build_model

BUCKET = "gs://scenic-bucket/vivit"
# config file → (checkpoint, reported top-1 %, layout of the released file).
RELEASED = {
    "k400_st": (f"{BUCKET}/kinetics_400/vivit_base_16x2_unfactorized/checkpoint", 79.9,
                dict(kind="spacetime", hidden=768, heads=12, mlp=3072, layers=12, classes=400)),
    "k400_fe": (f"{BUCKET}/kinetics_400/vivit_base_16x2_fe/checkpoint", 78.4,
                dict(kind="factorized_encoder", hidden=768, heads=12, mlp=3072, layers=12,
                     temporal_layers=4, classes=400)),
    "k400_fe_large": (f"{BUCKET}/kinetics_400/vivit_large_16x2_fe/checkpoint", 80.3,
                      dict(kind="factorized_encoder", hidden=1024, heads=16, mlp=4096, layers=24,
                           temporal_layers=24, classes=400)),
    "k600_fe": (f"{BUCKET}/kinetics_600/vivit_large_16x2_fe/checkpoint", 81.6,
                dict(kind="factorized_encoder", hidden=1024, heads=16, mlp=4096, layers=24,
                     temporal_layers=24, classes=600)),
    "epic_kitchens_fe": (f"{BUCKET}/epic_kitchens/vivit_large_16x2_fe/checkpoint", 43.6,
                         dict(kind="factorized_encoder", hidden=1024, heads=16, mlp=4096,
                              layers=24, temporal_layers=4, classes=300 + 97)),
}
RELEASE_INPUT = dict(frames=32, crop=224, patch=(16, 16, 2))  # Every release: 32 × 224², 16×16×2.


def _block(prefix: str, d: int, heads: int, mlp: int) -> dict:
  """One Scenic `Encoder1DBlock`: LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1,
  MlpBlock_0."""
  tree = {f"{prefix}/LayerNorm_{i}/{p}": (d,) for i in (0, 1) for p in ("bias", "scale")}
  tree.update({f"{prefix}/MlpBlock_0/Dense_0/kernel": (d, mlp),
               f"{prefix}/MlpBlock_0/Dense_0/bias": (mlp,),
               f"{prefix}/MlpBlock_0/Dense_1/kernel": (mlp, d),
               f"{prefix}/MlpBlock_0/Dense_1/bias": (d,)})
  att = f"{prefix}/MultiHeadDotProductAttention_0"
  for name in ("query", "key", "value"):
    tree[f"{att}/{name}/kernel"] = (d, heads, d // heads)
    tree[f"{att}/{name}/bias"] = (heads, d // heads)
  tree[f"{att}/out/kernel"] = (heads, d // heads, d)
  tree[f"{att}/out/bias"] = (d,)
  return tree


def _encoder(name: str, d: int, heads: int, mlp: int, layers: int, tokens: int) -> dict:
  tree = {f"{name}/posembed_input/pos_embedding": (1, tokens, d),
          f"{name}/encoder_norm/bias": (d,), f"{name}/encoder_norm/scale": (d,)}
  for i in range(layers):
    tree.update(_block(f"{name}/encoderblock_{i}", d, heads, mlp))
  return tree


def scenic_tree(kind: str, hidden: int, heads: int, mlp: int, layers: int, classes: int, *,
                frames: int, crop: int, patch: tuple, temporal_layers: int = 0) -> dict:
  """{path: shape} of a Scenic ViViT (Model 1 or 2, CLS token) checkpoint's params."""
  fh, fw, ft = patch
  t, n = frames // ft, (crop // fh) * (crop // fw)
  tree = {"embedding/kernel": (ft, fh, fw, 3, hidden), "embedding/bias": (hidden,),
          "output_projection/kernel": (hidden, classes), "output_projection/bias": (classes,)}
  if kind == "spacetime":
    tree["cls"] = (1, 1, hidden)
    tree.update(_encoder("Transformer", hidden, heads, mlp, layers, t * n + 1))
  else:
    tree["cls_SpatialTransformer"] = (1, 1, hidden)
    tree["cls_TemporalTransformer"] = (1, 1, hidden)
    tree.update(_encoder("SpatialTransformer", hidden, heads, mlp, layers, n + 1))
    tree.update(_encoder("TemporalTransformer", hidden, heads, mlp, temporal_layers, t + 1))
  return tree


def _scenic_written(folder) -> dict:
  rows = [line.split("\t") for line in (folder / "param_tree.txt").read_text().splitlines()]
  return {path: tuple(json.loads(shape.replace("(", "[").replace(",)", "]").replace(")", "]")))
          for path, shape, _ in rows}


@pytest.mark.parametrize("name", ["spacetime_token", "factorized_encoder_token"])
def test_expected_tree_matches_what_scenic_wrote(scenic_ref, name):
  folder = scenic_ref / "vivit" / name
  config = json.loads((folder / "config.json").read_text())
  m, dc = config["model"], config["dataset_configs"]
  fe = m["attention_config"]["type"] == "factorized_encoder"
  sizes = m["spatial_transformer"] if fe else m
  expected = scenic_tree(
      m["attention_config"]["type"], m["hidden_size"], sizes["num_heads"], sizes["mlp_dim"],
      sizes["num_layers"], dc["num_classes"], frames=dc["num_frames"], crop=dc["crop_size"],
      patch=tuple(m["patches"]["size"]),
      temporal_layers=m["temporal_transformer"]["num_layers"] if fe else 0)
  assert expected == _scenic_written(folder)


def load(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIG_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def model_tree(config) -> dict:
  """{path: shape} of the config's model at its own input size (shapes only)."""
  dc = config.dataset_configs
  num_classes = sum(dc.class_splits) if dc.get("class_splits") else dc.num_classes
  model = build_model(config.model, num_classes, dtype=config.get("model_dtype_str"))
  video = jax.ShapeDtypeStruct((1, dc.num_frames, dc.crop_size, dc.crop_size, 3), jnp.float32)
  params = jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v, train=False), video)
  return {k: tuple(v.shape) for k, v in flatten(meta.unbox(params)["params"]).items()}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_config_builds_the_released_tree(name):
  checkpoint, _, layout = RELEASED[name]
  config = load(name)
  expected = scenic_tree(**{k: v for k, v in layout.items() if k != "kind"}, kind=layout["kind"],
                         **RELEASE_INPUT)
  found = model_tree(config)
  assert sorted(found) == sorted(expected), sorted(set(found) ^ set(expected))[:10]
  assert {k: v for k, v in found.items() if v != expected[k]} == {}


def test_checkpoints_page_has_a_row_per_release():
  page = (CONFIG_DIR.parent / "docs" / "checkpoints.md").read_text()
  for name, (checkpoint, top1, _) in RELEASED.items():
    rows = [line for line in page.splitlines() if checkpoint in line and line.startswith("|")]
    assert len(rows) == 1, checkpoint
    assert f"configs/{name}.py" in rows[0] and f"{top1}%" in rows[0], rows[0]
    assert "--mode=eval" in rows[0] and "--config.eval_checkpoint_path=" in rows[0], rows[0]


@pytest.mark.parametrize("name,kind", [("k400_fsa", "factorized_self_attention_block"),
                                       ("k400_fdpa", "factorized_dot_product_attention")])
def test_model_3_and_4_configs_are_the_paper_ablation_models(name, kind):
  config = load(name)
  assert config.model.attention_config.type == kind
  assert (config.dataset_configs.num_frames, config.dataset_configs.crop_size) == (32, 224)
  count = sum(math.prod(s) for s in model_tree(config).values())
  assert abs(count / 1e6 - PAPER[kind][0]) <= 0.1, count  # Table 2, millions of parameters.
