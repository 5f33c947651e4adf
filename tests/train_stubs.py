"""Stand-ins for colleagues' modules not merged yet (optim, metrics, evaluate, checkpoints).

`install()` registers a stand-in only where the real module cannot be imported, so the tests
use the real modules as soon as they exist. Never imported by package code.
"""
import importlib
import json
import pathlib
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _optim():
  m = types.ModuleType("vivit_jax.optim")

  def build_optimizer(config, steps_per_epoch):
    lr = float(config.lr_configs.base_learning_rate)
    tx = optax.chain(optax.clip_by_global_norm(config.get("max_grad_norm") or 1e9),
                     optax.sgd(lr, momentum=0.9))
    return tx, lambda step: jnp.asarray(lr, jnp.float32)
  m.build_optimizer = build_optimizer
  return m


def _metrics():
  m = types.ModuleType("vivit_jax.metrics")

  def loss_fn(logits, labels, *, weights, label_smoothing=None, class_splits=None):
    del label_smoothing, class_splits
    per = -jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1)
    return jnp.sum(per * weights) / jnp.maximum(jnp.sum(weights), 1e-8)

  def train_metrics(logits, labels, weights, *, class_splits=None, split_names=None):
    del class_splits, split_names
    correct = (jnp.argmax(logits, -1) == jnp.argmax(labels, -1)) * weights
    return {"accuracy": (jnp.sum(correct), jnp.sum(weights))}

  class MetricWriter:
    def __init__(self, workdir, *, is_primary):
      self.path = pathlib.Path(workdir) / "metrics.jsonl"
      self.is_primary = is_primary

    def write_scalars(self, step, scalars):
      if self.is_primary:
        with self.path.open("a") as f:
          f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}})
                  + "\n")

    def close(self):
      pass

  m.loss_fn, m.train_metrics, m.MetricWriter = loss_fn, train_metrics, MetricWriter
  return m


def _evaluate():
  m = types.ModuleType("vivit_jax.evaluate")

  def eval_step_metrics(logits_views, labels, batch_mask, *, average="logits", class_splits=None):
    del class_splits
    x = logits_views if average == "logits" else jax.nn.softmax(logits_views)
    logits = x.mean(axis=1)
    correct = (jnp.argmax(logits, -1) == jnp.argmax(labels, -1)) * batch_mask
    return {"correct": jnp.sum(correct), "count": jnp.sum(batch_mask),
            "views": jnp.asarray(logits_views.shape[1], jnp.float32)}

  def summarize(s):
    return {"top1": float(s["correct"] / s["count"]), "top5": 1.0,
            "num_videos": float(s["count"])}

  def write_eval_results(workdir, results):
    (pathlib.Path(workdir) / "eval_results.json").write_text(json.dumps(results))

  m.eval_step_metrics, m.summarize, m.write_eval_results = (
      eval_step_metrics, summarize, write_eval_results)
  return m


def install() -> None:
  import vivit_jax  # pylint: disable=g-import-not-at-top
  for name, make in (("optim", _optim), ("metrics", _metrics), ("evaluate", _evaluate)):
    try:
      importlib.import_module(f"vivit_jax.{name}")
    except ImportError:
      mod = make()
      sys.modules[f"vivit_jax.{name}"] = mod
      setattr(vivit_jax, name, mod)
