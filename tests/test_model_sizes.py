"""ViViT-B/16x2 at 32×224×224, 400 classes: parameters and GFLOPs of the paper's Table 2.

Counted without allocating: `jax.eval_shape` for parameters, XLA's cost analysis of the lowered
forward pass for compute (the paper's GFLOPs are multiply-accumulates, XLA counts 2 per MAC).
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vivit_jax import models
from vivit_jax.models import paper

PAPER = paper.TABLE2_B16X2


def vivit_b16x2(kind: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.hidden_size = 768
  c.patches = ml_collections.ConfigDict({"size": (16, 16, 2)})
  c.temporal_encoding_config = ml_collections.ConfigDict(
      {"method": "3d_conv", "kernel_init_method": "central_frame_initializer"})
  c.attention_config = ml_collections.ConfigDict({"type": kind})
  c.classifier = "token" if kind in ("spacetime", "factorized_encoder") else "gap"
  if kind == "factorized_encoder":
    c.spatial_transformer = ml_collections.ConfigDict(dict(num_layers=12, mlp_dim=3072, num_heads=12))
    c.temporal_transformer = ml_collections.ConfigDict(dict(num_layers=4, mlp_dim=3072, num_heads=12))
  else:
    c.num_layers, c.mlp_dim, c.num_heads = 12, 3072, 12
  return c


@pytest.mark.parametrize("kind", list(PAPER))
def test_paper_table2(kind):
  model = models.build_model(vivit_b16x2(kind), 400)
  video = jax.ShapeDtypeStruct((1, 32, 224, 224, 3), jnp.float32)
  params = jax.eval_shape(lambda v: model.init(jax.random.PRNGKey(0), v, train=False), video)
  count = sum(int(np.prod(l.shape)) for l in jax.tree.leaves(params))
  gflops = jax.jit(lambda p, v: model.apply(p, v, train=False)).lower(
      params, video).cost_analysis()["flops"] / 2e9
  paper_params, paper_gflops = PAPER[kind]
  assert abs(count / 1e6 - paper_params) <= 0.1, count
  assert abs(gflops - paper_gflops) <= 0.03 * paper_gflops, gflops
