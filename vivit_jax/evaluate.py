"""Evaluation sums (pure jax), their summary, and `WORKDIR/eval_results.json`.

`eval_step_metrics` returns SUMS over the real (unmasked) videos of one batch, so that adding
the outputs of every batch — on any number of hosts, with padded last batches — counts each
video exactly once; `summarize` turns the totals into rates.

Multi-view test: the caller reshapes the model's logits for `b` videos × `v` views (temporal
clips × spatial crops) to `[b, v, C]`; views are averaged as logits (Scenic's default) or as
softmax probabilities (`average='softmax'`).
"""
import json
import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vivit_jax.metrics import TOP_K, correct_top_k, one_hot_labels
from vivit_jax.models import split_logits

AVERAGES = ("logits", "softmax")
RESULTS_FILE = "eval_results.json"
CLASS_RESULTS_FILE = "confusion_matrix.json"


def _head_scores(logits_views: jax.Array, average: str) -> tuple[jax.Array, jax.Array]:
  """`[b, v, c]` → (scores `[b, c]` ranking the classes, log-probabilities `[b, c]`)."""
  if average == "logits":
    scores = logits_views.mean(axis=1)
    return scores, jax.nn.log_softmax(scores)
  probs = jax.nn.softmax(logits_views, axis=-1).mean(axis=1)
  return probs, jnp.log(jnp.maximum(probs, 1e-30))


def _head_sums(prefix: str, scores, log_probs, one_hot, mask) -> dict[str, jax.Array]:
  top1 = correct_top_k(scores, one_hot, 1)
  target = jax.nn.one_hot(jnp.argmax(one_hot, axis=-1), one_hot.shape[-1]) * mask[:, None]
  # argmax breaks ties to the lower index, as correct_top_k does: the diagonal is class_correct.
  predicted = jax.nn.one_hot(jnp.argmax(scores, axis=-1), one_hot.shape[-1])
  return {
      f"{prefix}loss_sum": jnp.sum(-jnp.sum(one_hot * log_probs, axis=-1) * mask),
      f"{prefix}top1_correct": jnp.sum(top1 * mask),
      f"{prefix}top5_correct": jnp.sum(correct_top_k(scores, one_hot, TOP_K) * mask),
      f"{prefix}class_correct": jnp.sum(target * top1[:, None], axis=0),
      f"{prefix}class_count": jnp.sum(target, axis=0),
      f"{prefix}confusion_matrix": target.T @ predicted,  # [true class, predicted class]
  }


def _action_sums(heads, mask) -> dict[str, jax.Array]:
  """Joint (noun, verb) accuracy: ranks the pairs by the product of the heads' probabilities."""
  (_, lp_a, y_a), (_, lp_b, y_b) = heads
  b, ca, cb = lp_a.shape[0], lp_a.shape[-1], lp_b.shape[-1]
  pair = (lp_a[:, :, None] + lp_b[:, None, :]).reshape(b, ca * cb)
  target = jnp.argmax(y_a, axis=-1) * cb + jnp.argmax(y_b, axis=-1)
  pair_one_hot = jax.nn.one_hot(target, ca * cb)
  return {"action_top1_correct": jnp.sum(correct_top_k(pair, pair_one_hot, 1) * mask),
          "action_top5_correct": jnp.sum(correct_top_k(pair, pair_one_hot, TOP_K) * mask)}


def eval_step_metrics(logits_views: jax.Array, labels: jax.Array, batch_mask: jax.Array | None,
                      *, average: str = "logits", class_splits: Sequence[int] | None = None,
                      split_names: Sequence[str] | None = None) -> dict[str, jax.Array]:
  """Sums for one batch of `b` videos with `v` views each.

  Args:
    logits_views: `[b, v, C]` (or `[b, C]` for one view).
    labels: one-hot `[b, C]` (EK: nouns ‖ verbs) or integer `[b]` / `[b, n_heads]`.
    batch_mask: `[b]`, 0 for padding videos; None counts all.
    average: 'logits' or 'softmax' over views.
    class_splits, split_names: multi-head (Epic-Kitchens) layout of C.

  Returns:
    {'count', 'loss_sum', 'top1_correct', 'top5_correct', 'class_correct' [C],
    'class_count' [C], 'confusion_matrix' [C, C] (rows: true class, columns: top-1
    prediction)}; multi-head: those per head prefixed `{name}_` (per-class vectors sized
    per head), 'count', 'loss_sum' (mean over heads) and, for two heads, 'action_top1_correct',
    'action_top5_correct'.
  """
  if average not in AVERAGES:
    raise ValueError(f"average={average!r}; valid: {list(AVERAGES)}")
  if logits_views.ndim == 2:
    logits_views = logits_views[:, None]
  if logits_views.ndim != 3:
    raise ValueError(f"logits_views must be [batch, views, classes], got {logits_views.shape}")
  logits_views = logits_views.astype(jnp.float32)
  mask = (jnp.ones(logits_views.shape[:1]) if batch_mask is None else batch_mask)
  mask = mask.astype(jnp.float32)
  one_hot = one_hot_labels(labels, logits_views[:, 0], class_splits)
  out = {"count": jnp.sum(mask)}
  if not class_splits:
    scores, log_probs = _head_scores(logits_views, average)
    out.update(_head_sums("", scores, log_probs, one_hot, mask))
    return out
  names = list(split_names) if split_names else [str(i + 1) for i in range(len(class_splits))]
  views_by_head = split_logits(logits_views, class_splits, names)
  labels_by_head = split_logits(one_hot, class_splits, names)
  heads = []
  for name in names:
    scores, log_probs = _head_scores(views_by_head[name], average)
    out.update(_head_sums(f"{name}_", scores, log_probs, labels_by_head[name], mask))
    heads.append((scores, log_probs, labels_by_head[name]))
  out["loss_sum"] = sum(out[f"{n}_loss_sum"] for n in names) / len(names)
  if len(names) == 2:
    out.update(_action_sums(heads, mask))
  return out


def _mean_class_accuracy(correct, count) -> float:
  present = count > 0
  return float(np.mean(correct[present] / count[present]))


def summarize(sums: Mapping[str, jax.Array]) -> dict[str, float | int | None]:
  """Rates from summed `eval_step_metrics` outputs.

  Keys: num_videos, loss, top1, top5, mean_class_accuracy (mean over the classes present).
  Multi-head adds `{name}_top1`, `{name}_top5`, `{name}_mean_class_accuracy` and, for two heads,
  `action_top1` / `action_top5`, which are then also `top1` / `top5`;
  `mean_class_accuracy` is None there (it is defined per head).
  """
  sums = {k: np.asarray(jax.device_get(v), np.float64) for k, v in sums.items()}
  count = float(sums["count"])
  if count <= 0:
    raise ValueError("no videos were evaluated (count is 0): check the split and batch_mask")
  out: dict = {"num_videos": int(round(count)), "loss": float(sums["loss_sum"]) / count}
  heads = sorted(k[:-len("_top1_correct")] for k in sums
                 if k.endswith("_top1_correct") and k != "action_top1_correct")
  if "top1_correct" in sums:
    out["top1"] = float(sums["top1_correct"]) / count
    out["top5"] = float(sums["top5_correct"]) / count
    out["mean_class_accuracy"] = _mean_class_accuracy(sums["class_correct"], sums["class_count"])
  else:
    out["top1"] = out["top5"] = out["mean_class_accuracy"] = None
  for head in heads:
    out[f"{head}_top1"] = float(sums[f"{head}_top1_correct"]) / count
    out[f"{head}_top5"] = float(sums[f"{head}_top5_correct"]) / count
    out[f"{head}_mean_class_accuracy"] = _mean_class_accuracy(
        sums[f"{head}_class_correct"], sums[f"{head}_class_count"])
  if "action_top1_correct" in sums:
    out["top1"] = out["action_top1"] = float(sums["action_top1_correct"]) / count
    out["top5"] = out["action_top5"] = float(sums["action_top5_correct"]) / count
  return out


def write_eval_results(workdir: str, results: Mapping[str, float | int | None], *, split: str,
                       num_views: int, step: int | None = None) -> str:
  """Writes `WORKDIR/eval_results.json` atomically; returns its path.

  The top level holds the latest evaluation (`split`, `step`, `num_views`, `num_videos`, `top1`,
  `top5`, `mean_class_accuracy`, `loss`, ...); `by_split` keeps the latest one of every split
  evaluated in this workdir (e.g. 'validation' and 'test').
  """
  def plain(v):
    if v is None or isinstance(v, (str, bool)):
      return v
    v = np.asarray(v).item()
    return v if isinstance(v, int) or np.isfinite(v) else None

  entry = {"split": split, "step": None if step is None else int(step),
           "num_views": int(num_views), **{k: plain(v) for k, v in results.items()}}
  return _write_by_split(os.path.join(workdir, RESULTS_FILE), split, entry)


def class_results(sums: Mapping[str, jax.Array]) -> dict[str, dict[str, list]]:
  """{head: {'class_count' [C], 'class_correct' [C], 'confusion_matrix' [C][C]}} as integers,
  from summed `eval_step_metrics` outputs ('' names the single head)."""
  out = {}
  for key in sums:
    if key.endswith("confusion_matrix"):
      prefix = key[:-len("confusion_matrix")]
      out[prefix.rstrip("_")] = {
          name: np.rint(np.asarray(jax.device_get(sums[prefix + name]), np.float64)).astype(
              np.int64).tolist()
          for name in ("class_count", "class_correct", "confusion_matrix")}
  return out


def write_class_results(workdir: str, sums: Mapping[str, jax.Array], *, split: str,
                        step: int | None = None) -> str:
  """Writes `WORKDIR/confusion_matrix.json` atomically (beside eval_results.json); its path.

  The top level holds the latest evaluation: `split`, `step`, `num_videos` and `heads`
  ({head: {'class_count', 'class_correct', 'confusion_matrix'}}, see `class_results`; the
  head is '' without class_splits); `by_split` keeps the latest one of every split.
  """
  entry = {"split": split, "step": None if step is None else int(step),
           "num_videos": int(round(float(np.asarray(jax.device_get(sums["count"]))))),
           "heads": class_results(sums)}
  # Compact: a Kinetics confusion matrix is 400 × 400 numbers.
  return _write_by_split(os.path.join(workdir, CLASS_RESULTS_FILE), split, entry, indent=None)


def _write_by_split(path: str, split: str, entry: dict, indent: int | None = 2) -> str:
  """Writes `{**entry, 'by_split': {..., split: entry}}` to `path` atomically, keeping the
  other splits' entries of the file already there."""
  workdir = os.path.dirname(path)
  by_split = {}
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as f:
        by_split = dict(json.load(f).get("by_split", {}))
    except (json.JSONDecodeError, AttributeError):
      by_split = {}  # written by something else: replaced
  by_split[split] = entry
  os.makedirs(workdir, exist_ok=True)
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump({**entry, "by_split": by_split}, f, indent=indent, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)
  return path
