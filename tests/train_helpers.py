"""Shared pieces of the train-loop tests: a tiny config and a fake, host-aware dataset.

Also used by the subprocess workers (tests/train_worker.py), so keep it import-light.
"""
import json
import pathlib

import ml_collections
import numpy as np

NUM_CLASSES = 4
SHAPE = (4, 8, 8, 3)  # t, h, w, c: tiny so that tests compile and run in seconds


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """A 1-layer factorised-encoder ViViT on [4, 8, 8, 3] clips; SGD with momentum."""
  c = ml_collections.ConfigDict()
  c.rng_seed = 0
  c.batch_size = 8
  c.eval_batch_size = 4
  c.num_training_steps = 6
  c.log_summary_steps = 1
  c.log_eval_steps = 0
  c.checkpoint_steps = 3
  c.max_checkpoints_to_keep = 5
  c.mesh = (("data", -1), ("fsdp", 1), ("tensor", 1))
  c.dataset_configs = ml_collections.ConfigDict(dict(
      num_classes=NUM_CLASSES, num_frames=SHAPE[0], crop_size=SHAPE[1], num_test_clips=2))
  c.model = ml_collections.ConfigDict(dict(
      hidden_size=16, patches=dict(size=(4, 4, 2)), classifier="token",
      representation_size=None, dropout_rate=0.1, attention_dropout_rate=0.0,
      attention_config=dict(type="factorized_encoder"),
      temporal_encoding_config=dict(method="3d_conv",
                                    kernel_init_method="central_frame_initializer"),
      spatial_transformer=dict(num_layers=1, mlp_dim=32, num_heads=2),
      temporal_transformer=dict(num_layers=1, mlp_dim=32, num_heads=2)))
  c.optimizer = "momentum"
  c.optimizer_configs = ml_collections.ConfigDict(dict(momentum=0.9))
  c.max_grad_norm = 1.0
  c.label_smoothing = None
  c.init_from = ml_collections.ConfigDict()
  c.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule="compound", factors="constant", base_learning_rate=0.1))
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def _example(seed: int, split: str, index: int, views: int = 0):
  """One deterministic example: its label decides the sign pattern of the clip."""
  rng = np.random.default_rng([seed, {"train": 0, "validation": 1, "test": 2}[split], index])
  label = int(rng.integers(NUM_CLASSES))
  shape = SHAPE if not views else (views,) + SHAPE
  video = rng.normal(0.0, 0.5, shape).astype(np.float32) + (label - 1.5) * 0.3
  return video, np.eye(NUM_CLASSES, dtype=np.float32)[label]


def fake_data_fn(split, batch_size, *, process_index, process_count, seed, start_step=0,
                 num_eval=10):
  """Fake `vivit_jax.data.build_dataset`: process i gets rows [i*b, (i+1)*b) of each global batch.

  Training is infinite and a pure function of (seed, step), so `start_step` resumes exactly;
  evaluation covers `num_eval` examples once, padded with `batch_mask` = 0.
  """
  global_b = batch_size * process_count
  lo = process_index * batch_size
  if split == "train":
    def gen():
      step = start_step
      while True:
        ex = [_example(seed, split, step * global_b + lo + i) for i in range(batch_size)]
        yield {"inputs": np.stack([e[0] for e in ex]), "label": np.stack([e[1] for e in ex]),
               "batch_mask": np.ones(batch_size, np.float32)}
        step += 1
    return gen()

  views = 2 if split == "test" else 0

  def gen_eval():
    for start in range(0, num_eval, global_b):
      idx = [start + lo + i for i in range(batch_size)]
      ex = [_example(seed, split, min(j, num_eval - 1), views) for j in idx]
      yield {"inputs": np.stack([e[0] for e in ex]), "label": np.stack([e[1] for e in ex]),
             "batch_mask": np.asarray([j < num_eval for j in idx], np.float32)}
  return gen_eval()


def read_losses(workdir) -> dict[int, float]:
  """step → train_loss from metrics.jsonl (a re-run step keeps its newest value)."""
  out = {}
  for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    if "train_loss" in row:
      out[int(row["step"])] = row["train_loss"]
  return out
