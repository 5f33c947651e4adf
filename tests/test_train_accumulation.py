"""Gradient accumulation through the train loop: the optimizer applies every k-th step."""
import jax
import numpy as np

from tests import train_helpers as th
from vivit_jax import checkpoints, train


def _params_by_step(workdir, steps):
  return {s: checkpoints.load_params(str(workdir / "checkpoints" / str(s))) for s in steps}


def test_two_micro_batches_per_update(tmp_path):
  config = th.tiny_config(num_training_steps=4, checkpoint_steps=1, gradient_accumulation_steps=2,
                          **{"model.dropout_rate": 0.0})
  train.train_and_evaluate(config, str(tmp_path), mode="train", data_fn=th.fake_data_fn,
                           devices=jax.devices()[:1])
  p = _params_by_step(tmp_path, [1, 2, 3, 4])
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  assert same(p[2], p[3])          # step 3 only accumulates
  assert not same(p[1], p[2])      # step 2 applies the update of steps 1+2
  assert not same(p[3], p[4])
  # Step 1 only accumulated: its parameters are the initial ones, which a k=1 run moves at once.
  single = th.tiny_config(num_training_steps=1, checkpoint_steps=1, **{"model.dropout_rate": 0.0})
  train.train_and_evaluate(single, str(tmp_path / "k1"), mode="train", data_fn=th.fake_data_fn,
                           devices=jax.devices()[:1])
  assert not same(p[1], _params_by_step(tmp_path / "k1", [1])[1])
