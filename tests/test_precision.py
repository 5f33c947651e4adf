"""Mixed precision (`model_dtype_str='bfloat16'`): what stays float32, and that it trains as well."""
import importlib.util

import jax
import numpy as np
import pytest

from tests.test_models import VARIANTS, _random_params, tiny_config
from tests import train_procs
from vivit_jax import models, train

# Ops whose accuracy bfloat16 would ruin: softmax (exp, max), LayerNorm statistics (sum, rsqrt),
# the pooling and the loss.
_FLOAT32_OPS = {"exp", "log", "reduce_max", "reduce_sum", "rsqrt", "logistic"}


def _eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _eqns(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _eqns(sub)


def _dtypes(eqn):
  return {str(v.aval.dtype) for v in eqn.invars if hasattr(v, "aval")}


@pytest.mark.parametrize("kind,classifier,method,extra", VARIANTS)
def test_bfloat16_keeps_statistics_softmax_and_head_in_float32(kind, classifier, method, extra):
  model = models.build_model(tiny_config(kind, classifier, method, **extra), 5,
                             dtype="bfloat16")
  video = np.zeros((2, 8, 16, 16, 3), np.float32)
  params = _random_params(model, video)
  forward = jax.make_jaxpr(lambda p: model.apply({"params": p}, video, train=False))(params)
  eqns = list(_eqns(forward.jaxpr))
  for eqn in eqns:
    if eqn.primitive.name in _FLOAT32_OPS:
      assert _dtypes(eqn) == {"float32"}, (eqn.primitive.name, _dtypes(eqn), str(eqn)[:200])
  matmuls = [e for e in eqns if e.primitive.name in ("dot_general", "conv_general_dilated")]
  f32_matmuls = [e for e in matmuls if _dtypes(e) == {"float32"}]
  # Only the head (pre_logits, output_projection) runs in float32; the embedding, attention
  # and MLPs in bfloat16.
  assert len(f32_matmuls) == (2 if extra.get("representation_size") else 1), f32_matmuls
  assert f32_matmuls[-1].outvars[0].aval.shape == (2, 5)
  assert all(_dtypes(e) == {"bfloat16"} for e in matmuls if e not in f32_matmuls)
  assert forward.out_avals[0].dtype == np.float32
  leaves = jax.tree.leaves(params)
  assert leaves and all(leaf.dtype == np.float32 for leaf in leaves)


def _demo_config(data_dir, dtype):
  spec = importlib.util.spec_from_file_location("synthetic_cfg",
                                                train_procs.REPO / "configs" / "synthetic.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  data = config.dataset_configs
  data.base_dir = str(data_dir)
  data.synthetic.num_train, data.synthetic.num_validation, data.synthetic.num_test = 1024, 64, 256
  data.examples_per_subset = {"train": 1024, "validation": 64, "test": 256}
  config.num_training_epochs = None
  config.num_training_steps = 256  # 8 epochs, as the demo
  config.log_eval_steps = 0
  config.checkpoint = False
  config.model_dtype_str = dtype
  return config


@pytest.mark.slow
def test_synthetic_demo_learns_as_well_in_bfloat16(tmp_path):
  top1 = {}
  for dtype in ("float32", "bfloat16"):
    _, summary = train.train_and_evaluate(_demo_config(tmp_path / "data", dtype),
                                          str(tmp_path / dtype), devices=jax.devices()[:1])
    top1[dtype] = summary["test"]["top1"]
  # Measured: 100.00% both. At 160 steps, where the curve is still steep, runs gave 97.3% /
  # 99.6% and 97.3% / 91.4%: compare converged runs, not points on the slope.
  assert min(top1.values()) >= 0.95, top1
  assert top1["bfloat16"] >= top1["float32"] - 0.02, top1
