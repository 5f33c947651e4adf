"""Evaluation sums, summaries and eval_results.json against hand-computed numbers."""
import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vivit_jax import evaluate


def _softmax(x):
  e = np.exp(np.asarray(x, np.float64) - np.max(x))
  return e / e.sum()


def test_multi_view_averaging_logits_vs_softmax():
  # Video 0, label 1: view A is sure of class 1, view B of class 0 with a very low class 1.
  # Mean logits [1.5, -2.5, 0] pick class 0; mean probabilities pick class 1.
  views = jnp.array([[[0.0, 5.0, 0.0], [3.0, -10.0, 0.0]],
                     [[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])   # video 1, label 0: both right
  labels = jnp.array([1, 0])
  by_logits = evaluate.summarize(evaluate.eval_step_metrics(views, labels, None))
  by_probs = evaluate.summarize(
      evaluate.eval_step_metrics(views, labels, None, average="softmax"))
  assert by_logits["top1"] == 0.5 and by_probs["top1"] == 1.0
  mean_probs = (_softmax([0, 5, 0]) + _softmax([3, -10, 0])) / 2
  assert mean_probs[1] > mean_probs[0]  # the premise of the example
  ce_logits_0 = math.log(sum(math.exp(v) for v in (1.5, -2.5, 0.0))) + 2.5
  ce_logits_1 = math.log(math.exp(2) + 2) - 2
  assert by_logits["loss"] == pytest.approx((ce_logits_0 + ce_logits_1) / 2, rel=1e-5)
  ce_probs_1 = -math.log(_softmax([2, 0, 0])[0])
  assert by_probs["loss"] == pytest.approx((-math.log(mean_probs[1]) + ce_probs_1) / 2, rel=1e-5)
  with pytest.raises(ValueError, match=r"average='max'.*logits.*softmax"):
    evaluate.eval_step_metrics(views, labels, None, average="max")


def test_mean_class_accuracy_with_known_confusion():
  # Labels 0 0 0 1 1 2, predictions 0 0 1 1 0 0; class 3 has no videos.
  labels = jnp.array([0, 0, 0, 1, 1, 2])
  preds = jnp.array([0, 0, 1, 1, 0, 0])
  logits = jax.nn.one_hot(preds, 4) * 3.0
  sums = evaluate.eval_step_metrics(logits, labels, jnp.ones(6))
  np.testing.assert_array_equal(sums["class_count"], [3, 2, 1, 0])
  np.testing.assert_array_equal(sums["class_correct"], [2, 1, 0, 0])
  result = evaluate.summarize(sums)
  assert result["num_videos"] == 6
  assert result["top1"] == pytest.approx(3 / 6)
  assert result["top5"] == 1.0  # 4 classes: top-5 holds all of them
  assert result["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_sums_over_padded_batches_count_each_video_once():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 2, 10)).astype(np.float32)
  labels = rng.integers(0, 10, size=7)
  step = jax.jit(evaluate.eval_step_metrics)
  whole = step(jnp.asarray(logits), jnp.asarray(labels), jnp.ones(7))
  total = None
  for start in range(0, 7, 3):  # batches of 3: the last has 1 video and 2 padding rows
    lg = np.full((3, 2, 10), 50.0, np.float32)  # padding rows hold junk
    lb = np.zeros(3, np.int64)
    mask = np.zeros(3, np.float32)
    n = min(3, 7 - start)
    lg[:n], lb[:n], mask[:n] = logits[start:start + n], labels[start:start + n], 1
    sums = step(jnp.asarray(lg), jnp.asarray(lb), jnp.asarray(mask))
    total = sums if total is None else jax.tree_util.tree_map(jnp.add, total, sums)
  for key in whole:
    np.testing.assert_allclose(total[key], whole[key], rtol=1e-5, err_msg=key)
  assert float(total["count"]) == 7
  assert evaluate.summarize(total) == pytest.approx(evaluate.summarize(whole))


def test_epic_kitchens_heads_and_action():
  noun_pred, verb_pred = np.array([0, 1, 2]), np.array([0, 1, 1])
  noun_true, verb_true = np.array([0, 1, 0]), np.array([0, 0, 1])
  logits = np.concatenate([np.eye(3)[noun_pred] * 4, np.eye(2)[verb_pred] * 4], axis=-1)
  labels = np.concatenate([np.eye(3)[noun_true], np.eye(2)[verb_true]], axis=-1)
  fn = functools.partial(evaluate.eval_step_metrics, class_splits=(3, 2),
                         split_names=("noun", "verb"))
  result = evaluate.summarize(fn(jnp.asarray(logits)[:, None], jnp.asarray(labels), None))
  assert result["noun_top1"] == pytest.approx(2 / 3)
  assert result["verb_top1"] == pytest.approx(2 / 3)
  assert result["action_top1"] == result["top1"] == pytest.approx(1 / 3)
  assert result["top5"] == 1.0  # 6 pairs: the true pair is in the top 5 unless it is last
  assert result["mean_class_accuracy"] is None
  assert result["noun_mean_class_accuracy"] == pytest.approx((1 / 2 + 1) / 2)


def test_eval_results_json_on_disk(tmp_path):
  workdir = str(tmp_path)
  result = {"num_videos": 6, "top1": 0.5, "top5": 1.0, "mean_class_accuracy": 0.4,
            "loss": float("nan")}
  path = evaluate.write_eval_results(workdir, result, split="validation", num_views=1, step=10)
  evaluate.write_eval_results(workdir, {**result, "top1": 0.75}, split="test", num_views=12,
                              step=20)
  assert path == os.path.join(workdir, "eval_results.json")
  data = json.load(open(path))
  assert {k: data[k] for k in ("split", "step", "num_views", "num_videos", "top1", "top5",
                               "mean_class_accuracy", "loss")} == {
      "split": "test", "step": 20, "num_views": 12, "num_videos": 6, "top1": 0.75, "top5": 1.0,
      "mean_class_accuracy": 0.4, "loss": None}
  assert data["by_split"]["validation"]["top1"] == 0.5
  assert data["by_split"]["test"]["num_views"] == 12
  assert os.listdir(workdir) == ["eval_results.json"]  # no temporary file left
