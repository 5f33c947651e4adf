"""Optimizer and schedules against hand-computed numbers."""
import math

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vivit_jax import optim
from vivit_jax.models import build_model
from vivit_jax.schedules import build_lr_schedule, steps_per_epoch_of, total_training_steps


def _config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict({
      "optimizer": "momentum",
      "optimizer_configs": {"momentum": 0.0},
      "num_training_steps": 100,
      "lr_configs": {"base_learning_rate": 1.0},
  })
  for key, value in overrides.items():
    c[key] = value
  return c


def _lr(**lr_configs):
  return build_lr_schedule(ml_collections.ConfigDict(lr_configs), total_steps=110,
                           steps_per_epoch=5)


def test_compound_cosine_with_warmup_matches_scenic_formula():
  lr = _lr(learning_rate_schedule="compound", factors="constant * cosine_decay * linear_warmup",
           base_learning_rate=0.1, warmup_steps=10, steps_per_cycle=110)
  # Warmup: 0.1·step/10 (the cosine has not started). Cycle after warmup: 110 - 10 = 100 steps.
  expected = {0: 0.0, 5: 0.05, 10: 0.1, 60: 0.05,
              109: 0.1 * 0.5 * (1 + math.cos(math.pi * 0.99))}
  for step, value in expected.items():
    assert float(lr(step)) == pytest.approx(value, abs=1e-7), step
  assert float(jax.jit(lr)(jnp.int32(60))) == pytest.approx(0.05, abs=1e-7)


def test_warmup_epochs_and_default_cycle_from_epochs():
  config = _config(num_training_steps=None, num_training_epochs=22, batch_size=8,
                   dataset_configs={"examples_per_subset": {"train": 47}})
  assert steps_per_epoch_of(config) == 5  # 47 // 8, as Scenic
  assert total_training_steps(config, steps_per_epoch=5) == 110
  lr = _lr(learning_rate_schedule="compound", factors="constant*cosine_decay*linear_warmup",
           base_learning_rate=0.1, warmup_epochs=2)  # 2 epochs × 5 steps, cycle = 110
  assert [round(float(lr(s)), 7) for s in (5, 10, 60)] == [0.05, 0.1, 0.05]


def test_rsqrt_linear_decay_and_constant():
  rsqrt = _lr(learning_rate_schedule="compound", factors="constant * rsqrt_decay",
              base_learning_rate=2.0, timescale=100)
  assert float(rsqrt(300)) == pytest.approx(2.0 * 10 / 20)  # sqrt(100)/sqrt(300+100)
  linear = _lr(learning_rate_schedule="compound", factors="constant * linear_decay",
               base_learning_rate=2.0, total_steps=100)
  assert float(linear(25)) == pytest.approx(1.5)
  assert float(linear(150)) == 0.0
  constant = _lr(base_learning_rate=0.3)  # no schedule: Scenic's scalar learning rate
  assert float(constant(1234)) == pytest.approx(0.3)


def test_bad_schedule_fields_name_the_field():
  with pytest.raises(ValueError, match=r"lr_configs.factors.*'cosine'.*cosine_decay"):
    _lr(learning_rate_schedule="compound", factors="constant * cosine", base_learning_rate=1)
  with pytest.raises(ValueError, match=r"learning_rate_schedule='step'.*compound"):
    _lr(learning_rate_schedule="step", base_learning_rate=1)
  with pytest.raises(ValueError, match="warmup_steps and lr_configs.warmup_epochs"):
    _lr(learning_rate_schedule="compound", factors="linear_warmup", warmup_steps=1,
        warmup_epochs=1)


def test_clipping_scales_to_max_grad_norm():
  tx, _ = optim.build_optimizer(_config(max_grad_norm=1.0), steps_per_epoch=None)
  params = {"w": jnp.zeros((2,))}
  grads = {"w": jnp.array([6.0, 8.0])}  # global norm 10
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)


def _tiny_params():
  mc = ml_collections.ConfigDict({
      "hidden_size": 8, "patches": {"size": (4, 4, 2)}, "classifier": "token",
      "attention_config": {"type": "factorized_encoder"},
      "spatial_transformer": {"num_layers": 1, "mlp_dim": 16, "num_heads": 2},
      "temporal_transformer": {"num_layers": 1, "mlp_dim": 16, "num_heads": 2}})
  model = build_model(mc, num_classes=3)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 8, 8, 3)),
                                            train=False))["params"]
  return boxed


def test_weight_decay_mask_skips_bias_scale_posemb_cls():
  boxed = _tiny_params()
  for params in (boxed, flax.core.meta.unbox(boxed)):
    mask = optim.weight_decay_mask(params)
    flat = {optim.param_path(p): bool(v) for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
    decayed = sorted(k for k, v in flat.items() if v)
    assert decayed == sorted(
        f"{t}/encoderblock_0/{m}/kernel" for t in ("SpatialTransformer", "TemporalTransformer")
        for m in ("MlpBlock_0/Dense_0", "MlpBlock_0/Dense_1",
                  "MultiHeadDotProductAttention_0/key", "MultiHeadDotProductAttention_0/out",
                  "MultiHeadDotProductAttention_0/query", "MultiHeadDotProductAttention_0/value")
    ) + ["embedding/kernel", "output_projection/kernel"]
    assert not flat["cls_SpatialTransformer"]
    assert not flat["SpatialTransformer/posembed_input/pos_embedding"]


def test_decoupled_weight_decay_only_on_masked_params():
  config = _config(optimizer="adamw", optimizer_configs={"weight_decay": 0.1},
                   lr_configs={"base_learning_rate": 0.5})
  tx, _ = optim.build_optimizer(config, steps_per_epoch=None)
  params = {"dense": {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), 3.0)}}
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)  # Adam direction is 0 for 0 grads
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates["dense"]["kernel"], -0.5 * 0.1 * 3.0, rtol=1e-6)
  np.testing.assert_allclose(updates["dense"]["bias"], 0.0)


def test_l2_decay_factor_equals_scenic_l2_in_the_loss():
  params = {"k": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([4.0, 5.0])}
  x = jnp.array([1.0, 2.0])

  def loss(p):
    return jnp.sum(jnp.tanh(x @ p["k"] + p["b"]))

  lam = 0.3
  tx, _ = optim.build_optimizer(_config(l2_decay_factor=lam), steps_per_epoch=None)
  updates, _ = tx.update(jax.grad(loss)(params), tx.init(params), params)
  # Scenic: loss + 0.5·λ·Σ w² over ndim > 1 (the bias is left out); SGD with lr 1.
  penalised = jax.grad(lambda p: loss(p) + 0.5 * lam * jnp.sum(p["k"] ** 2))(params)
  for key in params:
    np.testing.assert_allclose(updates[key], -penalised[key], rtol=1e-6)


def _linear_loss(params, x, y):
  return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def test_gradient_accumulation_equals_big_batch_step():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=(8,)).astype(np.float32)
  init = {"w": jnp.array([0.1, -0.2, 0.3]), "b": jnp.array(0.05)}
  base = dict(optimizer_configs={"momentum": 0.9}, max_grad_norm=0.5,
              lr_configs={"base_learning_rate": 0.1})

  def run(k, batches):
    tx, _ = optim.build_optimizer(_config(gradient_accumulation_steps=k, **base), None)

    @jax.jit
    def step(params, state, xb, yb):
      updates, state = tx.update(jax.grad(_linear_loss)(params, xb, yb), state, params)
      return optax.apply_updates(params, updates), state

    params, state, history = init, tx.init(init), []
    for xb, yb in batches:
      params, state = step(params, state, xb, yb)
      history.append(params)
    return params, history

  big, _ = run(1, [(x, y), (x[::-1], y[::-1])])
  micro = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)]
  micro += [(x[::-1][i:i + 2], y[::-1][i:i + 2]) for i in range(0, 8, 2)]
  small, history = run(4, micro)
  for key in init:
    np.testing.assert_allclose(small[key], big[key], rtol=1e-5, atol=1e-7)
  # Between accumulation boundaries the parameters do not move.
  np.testing.assert_array_equal(history[2]["w"], init["w"])
  assert not np.allclose(history[3]["w"], init["w"])


def test_accumulation_schedule_counts_loop_steps():
  lr_configs = {"learning_rate_schedule": "compound", "factors": "constant * linear_warmup",
                "base_learning_rate": 1.0, "warmup_steps": 8}
  tx, lr = optim.build_optimizer(
      _config(gradient_accumulation_steps=2, lr_configs=lr_configs), steps_per_epoch=None)
  params = {"w": jnp.zeros(())}
  state, total = tx.init(params), 0.0
  for _ in range(6):  # 3 updates, at loop steps 0, 2, 4
    updates, state = tx.update({"w": jnp.ones(())}, state, params)
    total += float(updates["w"])
  assert total == pytest.approx(-(float(lr(0)) + float(lr(2)) + float(lr(4))))
  assert total == pytest.approx(-(0 + 0.25 + 0.5))


def test_bad_optimizer_fields_name_the_field():
  with pytest.raises(ValueError, match=r"optimizer='lamb'.*momentum.*adamw"):
    optim.build_optimizer(_config(optimizer="lamb"), None)
  with pytest.raises(ValueError, match=r"optimizer_configs.beta1 .*'momentum'"):
    optim.build_optimizer(_config(optimizer_configs={"beta1": 0.9}), None)
  with pytest.raises(ValueError, match="gradient_accumulation_steps=0"):
    optim.build_optimizer(_config(gradient_accumulation_steps=0), None)
  with pytest.raises(ValueError, match="num_training_steps or num_training_epochs"):
    optim.build_optimizer(_config(num_training_steps=None), None)
