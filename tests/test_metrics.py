"""Loss, train metrics and the metric writer against hand-computed numbers and files on disk."""
import functools
import glob
import json
import math
import os

import jax
import jax.numpy as jnp
import pytest
from tensorboard.backend.event_processing import event_accumulator

from vivit_jax import metrics


def _lse(*xs):
  return math.log(sum(math.exp(x) for x in xs))


def test_loss_with_label_smoothing_and_padding_mask():
  logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  labels = jax.nn.one_hot(jnp.array([0, 2]), 3)
  # Only example 0 counts. Smoothed target [0.8, 0.1, 0.1]: CE = lse - 0.8·2.
  got = metrics.loss_fn(logits, labels, weights=jnp.array([1.0, 0.0]), label_smoothing=0.3)
  assert float(got) == pytest.approx(_lse(2, 0, 0) - 1.6, rel=1e-6)
  both = metrics.loss_fn(logits, labels, weights=jnp.array([1.0, 1.0]))
  assert float(both) == pytest.approx(((_lse(2, 0, 0) - 2) + _lse(0, 1, 0)) / 2, rel=1e-6)
  # Integer labels are the same as their one-hot encoding.
  assert float(metrics.loss_fn(logits, jnp.array([0, 2]), weights=None)) == pytest.approx(
      float(both), rel=1e-6)


def test_multihead_loss_is_mean_over_heads_as_scenic():
  # class_splits [3, 2]: head 1 logits [1, 0, 0] label 0; head 2 logits [0, 2] label 0.
  logits = jnp.array([[1.0, 0.0, 0.0, 0.0, 2.0]])
  labels = jnp.array([[1.0, 0.0, 0.0, 1.0, 0.0]])
  noun, verb = _lse(1, 0, 0) - 1, _lse(0, 2) - 0
  got = metrics.loss_fn(logits, labels, weights=jnp.ones(1), class_splits=[3, 2])
  assert float(got) == pytest.approx((noun + verb) / 2, rel=1e-6)


def test_epic_kitchens_joint_accuracy():
  # 4 examples, heads of 3 nouns and 2 verbs; the 4th is padding.
  noun_pred, verb_pred = [0, 1, 2, 0], [0, 1, 1, 0]
  noun_true, verb_true = [0, 1, 0, 0], [0, 0, 1, 0]   # noun ok: 1 1 0 1, verb ok: 1 0 1 1
  logits = jnp.concatenate([jax.nn.one_hot(jnp.array(noun_pred), 3) * 5,
                            jax.nn.one_hot(jnp.array(verb_pred), 2) * 5], axis=-1)
  labels = jnp.stack([jnp.array(noun_true), jnp.array(verb_true)], axis=-1)  # integer form
  fn = jax.jit(functools.partial(metrics.train_metrics, class_splits=(3, 2),
                                 split_names=("noun", "verb")))
  sums = fn(logits, labels, jnp.array([1.0, 1.0, 1.0, 0.0]))
  out = {k: (float(s), float(c)) for k, (s, c) in sums.items()}
  assert out["noun_accuracy"] == (2.0, 3.0)
  assert out["verb_accuracy"] == (2.0, 3.0)
  assert out["action_accuracy"] == (1.0, 3.0)
  assert "accuracy" not in out and "noun_accuracy_top_5" not in out  # 3 classes: no top-5
  assert out["loss"][0] == pytest.approx((out["noun_loss"][0] + out["verb_loss"][0]) / 2)


def test_top1_top5_and_ties():
  logits = jnp.array([[7.0, 6, 5, 4, 3, 2, 1],      # label 4: rank 5 → top-5 only
                      [7.0, 6, 5, 4, 3, 2, 1],      # label 5: rank 6 → neither
                      [0.0, 0, 0, 0, 0, 0, 0],      # all tied: argmax is class 0, label 3
                      [0.0, 0, 0, 0, 0, 0, 0]])     # label 0
  labels = jax.nn.one_hot(jnp.array([4, 5, 3, 0]), 7)
  out = metrics.train_metrics(logits, labels, jnp.ones(4))
  assert float(out["accuracy"][0]) == 1.0   # only the all-zero row with label 0
  assert float(out["accuracy_top_5"][0]) == 3.0
  assert float(out["accuracy"][1]) == 4.0
  expected_loss = 2 * _lse(7, 6, 5, 4, 3, 2, 1) - 3 - 2 + 2 * math.log(7)
  assert float(out["loss"][0]) == pytest.approx(expected_loss, rel=1e-6)


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
  workdir = str(tmp_path / "run")
  writer = metrics.MetricWriter(workdir, is_primary=True)
  writer.write_scalars(1, {"loss": jnp.float32(2.5), "accuracy": 0.25})
  writer.write_scalars(2, {"loss": float("nan")})
  writer.close()
  lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  assert [json.loads(line) for line in lines] == [
      {"step": 1, "loss": 2.5, "accuracy": 0.25}, {"step": 2, "loss": None}]
  # TensorBoard reads the scalars back (written without TensorFlow: metrics.TensorBoardFile).
  assert len(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))) == 1
  events = event_accumulator.EventAccumulator(workdir)
  events.Reload()
  assert sorted(events.Tags()["scalars"]) == ["accuracy", "loss"]
  assert [(e.step, e.value) for e in events.Scalars("accuracy")] == [(1, 0.25)]
  assert [e.step for e in events.Scalars("loss")] == [1, 2]

  # A resumed run drops the records it will write again; a torn last line is repaired.
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 3, "lo')
  writer = metrics.MetricWriter(workdir, is_primary=True)
  writer.drop_after(1)
  writer.write_scalars(2, {"loss": 1.0})
  writer.close()
  assert metrics.read_metrics(workdir) == [{"step": 1, "loss": 2.5, "accuracy": 0.25},
                                           {"step": 2, "loss": 1.0}]


def test_metric_writer_secondary_process_writes_nothing(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path / "run"), is_primary=False)
  writer.write_scalars(1, {"loss": 1.0})
  writer.close()
  assert not (tmp_path / "run").exists()
