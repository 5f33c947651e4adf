"""The sharded trainer computes what one device computes, with parameters really split."""
import json

import jax
import numpy as np
import pytest

from tests import train_helpers as th
from vivit_jax import sharding, train


def test_mesh_from_config_and_errors():
  mesh = sharding.make_mesh((("data", -1), ("fsdp", 2), ("tensor", 2)))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  with pytest.raises(ValueError, match=r"unknown axis 'model'.*'data', 'fsdp', 'tensor'"):
    sharding.make_mesh((("model", 2),))
  with pytest.raises(ValueError, match="needs 12 devices; 8 are available"):
    sharding.make_mesh((("data", 3), ("fsdp", 4)))
  rules = dict(sharding.logical_rules((("embed", None), ("act_embed", "tensor"))))
  assert rules["embed"] is None and rules["act_embed"] == "tensor"
  assert rules["mlp"] == "tensor" and rules["batch"] == ("data", "fsdp")
  with pytest.raises(ValueError, match="sharding_rules.*unknown mesh axis 'model'"):
    sharding.logical_rules((("embed", "model"),))


def test_data_fsdp_tensor_mesh_matches_one_device(tmp_path):
  steps = 3
  # Mixup/CutMix and label smoothing ride along: their randomness must not depend on the mesh.
  extra = {"mixup": {"alpha": 0.4, "cutmix_alpha": 1.0}, "label_smoothing": 0.1}
  one, _ = train.train_and_evaluate(
      th.tiny_config(num_training_steps=steps, mesh=(("data", -1),), **extra),
      str(tmp_path / "one"), mode="train", data_fn=th.fake_data_fn, devices=jax.devices()[:1])
  eight, eight_summary = train.train_and_evaluate(
      th.tiny_config(num_training_steps=steps, mesh=(("data", 2), ("fsdp", 2), ("tensor", 2)),
                     **extra),
      str(tmp_path / "eight"), mode="train", data_fn=th.fake_data_fn)
  assert eight_summary["flops_per_step"] > 0  # XLA cost analysis of the step, logged at start

  losses_one, losses_eight = th.read_losses(tmp_path / "one"), th.read_losses(tmp_path / "eight")
  assert sorted(losses_one) == list(range(1, steps + 1))
  np.testing.assert_allclose([losses_eight[s] for s in losses_one],
                             [losses_one[s] for s in losses_one], rtol=1e-5, atol=1e-6)
  assert len(set(losses_one.values())) == steps  # it is really training
  rows = [json.loads(x) for x in (tmp_path / "eight" / "metrics.jsonl").read_text().splitlines()]
  # Step 1 has zero logits (zero-initialised head): any smoothing gives log(C) there.
  assert all(abs(r["train_objective"] - r["train_loss"]) > 1e-4 for r in rows if r["step"] > 1)

  p1, p8 = one["params"], eight["params"]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=1e-4, atol=1e-5), p1, p8)
  specs = sharding.shard_description(p8)
  mlp = "SpatialTransformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"
  query = "SpatialTransformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"
  assert specs[mlp] == str(jax.sharding.PartitionSpec('fsdp', 'tensor'))
  assert specs[query] == str(jax.sharding.PartitionSpec('fsdp', 'tensor', None))
  kernel = p8["SpatialTransformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
  assert kernel.shape == (16, 32)
  # 8 devices, each holding a [8, 16] quarter (replicated twice over `data`).
  assert {s.data.shape for s in kernel.addressable_shards} == {(8, 16)}
  assert len(kernel.sharding.device_set) == 8
  # The optimizer's momentum is laid out like its parameter.
  mu = [x for x in jax.tree.leaves(eight["opt_state"]) if x.shape == (16, 32)]
  assert mu and all(x.sharding.spec == kernel.sharding.spec for x in mu)
