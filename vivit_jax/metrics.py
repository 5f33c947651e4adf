"""Training loss and metrics (pure jax, jittable), and the metrics files of a run.

Labels are one-hot (or soft, e.g. after mixup) `[b, C]`, as Scenic's `one_hot_labels=True`;
integer labels `[b]` (or `[b, n_splits]` for multi-head) are accepted and one-hot encoded.
For Epic-Kitchens the one-hot label is the concatenation of one one-hot per split (nouns ‖ verbs),
matching the single `output_projection` of width `sum(class_splits)`.
"""
import json
import os
import socket
import time
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vivit_jax.models import split_logits

TOP_K = 5


def one_hot_labels(labels: jax.Array, logits: jax.Array,
                   class_splits: Sequence[int] | None = None) -> jax.Array:
  """Labels as float `[b, C]` matching `logits [b, C]` (integer labels are one-hot encoded)."""
  if jnp.issubdtype(labels.dtype, jnp.integer):
    if class_splits:
      labels = labels.reshape(labels.shape[0], len(class_splits))
      return jnp.concatenate([jax.nn.one_hot(labels[:, i], n, dtype=jnp.float32)
                              for i, n in enumerate(class_splits)], axis=-1)
    return jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  if labels.shape != logits.shape:
    raise ValueError(f"labels {labels.shape} must be one-hot like logits {logits.shape}")
  return labels.astype(jnp.float32)


def _splits(logits, labels, class_splits, split_names):
  """[(name, logits_i, labels_i)] per head; one unnamed head without class_splits."""
  if not class_splits:
    return [(None, logits, labels)]
  names = list(split_names) if split_names else [str(i + 1) for i in range(len(class_splits))]
  by_logits = split_logits(logits, class_splits, names)
  by_labels = split_logits(labels, class_splits, names)
  return [(n, by_logits[n], by_labels[n]) for n in names]


def softmax_cross_entropy(logits: jax.Array, one_hot: jax.Array,
                          label_smoothing: float | None = None) -> jax.Array:
  """Per-example CE `[b]`; smoothing as Scenic: `y·(1 - ls) + ls / C`."""
  if label_smoothing:
    one_hot = one_hot * (1.0 - label_smoothing) + label_smoothing / one_hot.shape[-1]
  return -jnp.sum(one_hot * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)


def _weights(weights, logits) -> jax.Array:
  if weights is None:
    return jnp.ones(logits.shape[:1], jnp.float32)
  return weights.astype(jnp.float32)


def loss_fn(logits: jax.Array, labels: jax.Array, *, weights: jax.Array | None,
            label_smoothing: float | None = None,
            class_splits: Sequence[int] | None = None) -> jax.Array:
  """Weighted mean softmax cross-entropy (scalar).

  `weights [b]` is the batch mask (0 for padding). With `class_splits` (Epic-Kitchens) the loss
  is the mean over heads of each head's CE, smoothing within each head, as Scenic's
  ViViTMultiHeadClassificationModel.
  """
  w = _weights(weights, logits)
  labels = one_hot_labels(labels, logits, class_splits)
  per_head = [jnp.sum(softmax_cross_entropy(lg, lb, label_smoothing) * w) / (jnp.sum(w) + 1e-8)
              for _, lg, lb in _splits(logits, labels, class_splits, None)]
  return sum(per_head) / len(per_head)


def correct_top_k(logits: jax.Array, one_hot: jax.Array, k: int) -> jax.Array:
  """`[b]` 1.0 where the label (argmax of `one_hot`) is among the k largest logits.

  Ties go to the lower class index (as argmax), so all-equal logits are not "all correct".
  """
  target = jnp.argmax(one_hot, axis=-1)
  if k == 1:
    return (jnp.argmax(logits, axis=-1) == target).astype(jnp.float32)
  _, top = jax.lax.top_k(logits, min(k, logits.shape[-1]))
  return jnp.any(top == target[:, None], axis=-1).astype(jnp.float32)


def train_metrics(logits: jax.Array, labels: jax.Array, weights: jax.Array | None, *,
                  class_splits: Sequence[int] | None = None,
                  split_names: Sequence[str] | None = None
                  ) -> dict[str, tuple[jax.Array, jax.Array]]:
  """{name: (weighted sum, weight count)} for one batch; normalise after summing batches.

  Names: `loss` (unsmoothed CE), `accuracy`, `accuracy_top_5` (only when C > 5). Multi-head:
  `{split}_loss`, `{split}_accuracy`, `{split}_accuracy_top_5`, `loss` (mean over heads) and, for
  two heads, `action_accuracy` (both heads right).
  """
  w = _weights(weights, logits)
  n = jnp.sum(w)
  labels = one_hot_labels(labels, logits, class_splits)
  out, losses, both = {}, [], jnp.ones_like(w)
  for name, lg, lb in _splits(logits, labels, class_splits, split_names):
    prefix = f"{name}_" if name else ""
    loss = jnp.sum(softmax_cross_entropy(lg, lb) * w)
    top1 = correct_top_k(lg, lb, 1)
    losses.append(loss)
    both = both * top1
    out[f"{prefix}loss"] = (loss, n)
    out[f"{prefix}accuracy"] = (jnp.sum(top1 * w), n)
    if lg.shape[-1] > TOP_K:
      out[f"{prefix}accuracy_top_{TOP_K}"] = (jnp.sum(correct_top_k(lg, lb, TOP_K) * w), n)
  if class_splits:
    out["loss"] = (sum(losses) / len(losses), n)
    if len(class_splits) == 2:
      out["action_accuracy"] = (jnp.sum(both * w), n)
  return out


def _json_value(value) -> float | None:
  value = float(np.asarray(value))
  return value if np.isfinite(value) else None  # strict JSON has no NaN / Infinity


def read_metrics(workdir: str) -> list[dict]:
  """The records of `WORKDIR/metrics.jsonl` (a torn last line from a crash is skipped)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


class TensorBoardFile:
  """A TensorBoard event file of scalars, written without TensorFlow.

  The `tensorboard` package's protos and record framing, not clu's SummaryWriter, which imports
  TensorFlow: a run whose data needs no TensorFlow (dataset_name='synthetic_device') imports
  none. Scalars are `simple_value`s, which TensorBoard shows as any scalar.
  """

  def __init__(self, workdir: str):
    # pylint: disable=g-import-not-at-top  (optional: without them, no TensorBoard files)
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    # TensorBoard finds event files by "tfevents" in the name; host and pid keep them apart.
    name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
    self.path = os.path.join(workdir, name)
    self._records = RecordWriter(open(self.path, "wb"))  # pylint: disable=consider-using-with
    self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event) -> None:
    self._records.write(event.SerializeToString())
    self._records.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    values = [self._summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
    self._write(self._event(wall_time=time.time(), step=int(step),
                            summary=self._summary(value=values)))

  def close(self) -> None:
    self._records.close()


def _tensorboard_file(workdir: str) -> TensorBoardFile | None:
  """The run's event file; None, said once in the log, where `tensorboard` is not installed."""
  try:
    return TensorBoardFile(workdir)
  except ImportError as e:
    logging.info("TensorBoard files are off: the tensorboard package does not import here (%s);"
                 " metrics go to metrics.jsonl and the log", e)
    return None


class MetricWriter:
  """TensorBoard events (`TensorBoardFile`) in the workdir and `WORKDIR/metrics.jsonl`.

  Neither imports TensorFlow. Without the `tensorboard` package, TensorBoard files are off
  (said once in the log) and metrics.jsonl and the log still get every value.

  Only the primary process (process 0) writes; elsewhere, and with `write_summary=False`
  (Scenic's switch), every method is a no-op. The console line per logged step is the
  trainer's own (one line per step, not one per writer). Each `write_scalars` call appends one
  JSON object `{"step": s, name: value, ...}` to `metrics.jsonl` (non-finite values as null).
  After a resume from step s, call `drop_after(s)` so steps replayed after a crash appear once.
  """

  def __init__(self, workdir: str, *, is_primary: bool, write_summary: bool = True):
    self.is_primary = is_primary and write_summary
    self._path = os.path.join(workdir, "metrics.jsonl")
    self._writer = None
    if self.is_primary:
      os.makedirs(workdir, exist_ok=True)
      self._writer = _tensorboard_file(workdir)
      self._rewrite(lambda record: True)  # repairs a line torn by a crash, if any
    elif is_primary:
      logging.info("config.write_summary=False: no TensorBoard files, no metrics.jsonl")

  def _rewrite(self, keep) -> None:
    if not os.path.exists(self._path):
      return
    with open(self._path, "rb") as f:
      data = f.read()
    records = read_metrics(os.path.dirname(self._path))
    kept = [r for r in records if keep(r)]
    if len(kept) == len(records) and (not data or data.endswith(b"\n")):
      return
    tmp = self._path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, self._path)

  def drop_after(self, step: int) -> None:
    """Removes the jsonl records with step > `step` (those a resumed run will write again)."""
    if self.is_primary:
      self._rewrite(lambda record: record.get("step", 0) <= step)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.is_primary:
      return
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    if self._writer is not None:
      self._writer.write_scalars(int(step), values)
    record = {"step": int(step), **{k: _json_value(v) for k, v in values.items()}}
    with open(self._path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    if self.is_primary:
      logging.info("metrics written to %s", self._path)
