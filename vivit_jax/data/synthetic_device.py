"""Clips made on the devices: `config.dataset_name='synthetic_device'`, no input pipeline.

MaxText's "synthetic" dataset idea: with no files to read, decode or copy, a run measures the
trainer itself (sharding, optimizer, logging, checkpoints) at the config's real shapes, on a
machine that has no dataset and no TensorFlow (this module needs JAX only).

Each batch is one jitted call whose outputs are laid out as the train step takes them
(`sharding.batch_sharding` of the mesh): the clips are made where they are used and only the
batch number crosses from the host. Example j of batch n of a split is a function of (seed,
split, n, j) alone (`fold_in`), so a batch is the same on any mesh, and a run resumed at step s
sees the batches of an uninterrupted run.

Patterns (`dataset_configs.synthetic_device_pattern`):
  'motion' (default): a bright square (side a quarter of the frame) on a dark background,
    moving at constant velocity on a torus (it leaves on one side and comes back on the other),
    so no single frame tells the class. Class c of K moves in direction 2πc/K, a quarter of the
    frame over the clip; K is num_classes (with `class_splits`, the smallest split: every head
    is given the same class). Learnable while the directions are far enough apart for the
    clip's length and size to show (a few classes are easy; 400 directions 0.9° apart are a
    hard task, fine for measuring speed).
  'random': uniform noise pixels and uniformly random labels: nothing to learn.

A batch: `inputs` uint8 pixels [0, 255] `[b, t, h, w, 3]` (the step normalises them, as the
clips of the input pipeline), `label` one-hot float32 `[b, num_classes]` (with class_splits:
one one-hot per head, concatenated), `batch_mask` float32 `[b]`.

Splits: train is endless (batch n feeds step n + 1, so `start_step=s` starts at batch s);
validation and test are a fixed set of `eval_examples` clips (`min(examples_per_subset.<split>,
EVAL_EXAMPLES)`, EVAL_EXAMPLES when unset) with one view each, in batches of the eval batch
size, the last one padded with `batch_mask` 0.
"""
import itertools
import math
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections

from vivit_jax import config_facts, sharding
from vivit_jax.data import fields

PATTERNS = ("motion", "random")
EVAL_EXAMPLES = 256  # validation and test clips at most: a fixed, quick evaluation
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
BACKGROUND = (0, 64)  # per-clip, per-channel pixel value ranges [low, high)
FOREGROUND = (160, 256)


def pattern(config: ml_collections.ConfigDict) -> str:
  """`dataset_configs.synthetic_device_pattern` (default 'motion'), checked."""
  value = config.dataset_configs.get(fields.DEVICE_PATTERN_FIELD) or "motion"
  if value not in PATTERNS:
    raise ValueError(f"config.dataset_configs.{fields.DEVICE_PATTERN_FIELD}={value!r}; valid: "
                     f"{list(PATTERNS)}")
  return value


def eval_examples(config: ml_collections.ConfigDict, split: str) -> int:
  """How many clips the fixed validation or test set holds."""
  given = (config.dataset_configs.get("examples_per_subset") or {}).get(split)
  return EVAL_EXAMPLES if given is None else min(int(given), EVAL_EXAMPLES)


def check_config(config: ml_collections.ConfigDict) -> None:
  """The config checker's rules for this dataset (and for its field on other datasets)."""
  if not fields.is_device_dataset(config):
    if config.dataset_configs.get(fields.DEVICE_PATTERN_FIELD) is not None:
      raise ValueError(f"config.dataset_configs.{fields.DEVICE_PATTERN_FIELD} is only read with "
                       f"dataset_name='{fields.DEVICE_DATASET}' (dataset_name is "
                       f"{config.get('dataset_name')!r}); remove it")
    return
  pattern(config)
  config_facts.input_shape(config)
  for split in ("validation", "test"):
    if eval_examples(config, split) < 1:
      raise ValueError(f"config.dataset_configs.examples_per_subset.{split}=0: the "
                       f"{fields.DEVICE_DATASET} {split} set needs at least one clip")


def motion_clip(key: jax.Array, label: jax.Array, num_classes: int,
                shape: tuple[int, int, int]) -> jax.Array:
  """One clip of class `label`: uint8 `[t, h, w, 3]`, a square moving in direction 2π·label/K."""
  t, h, w = shape
  side = max(2.0, min(h, w) / 4)
  # Over the clip the square travels a quarter of the frame: far enough to show the
  # direction, under half of it so that the torus never makes two directions look alike.
  speed = min(h, w) / (4 * max(t - 1, 1))
  k_pos, k_bg, k_fg = jax.random.split(key, 3)
  y0, x0 = jax.random.uniform(k_pos, (2,)) * jnp.array([h, w], jnp.float32)
  angle = 2 * math.pi * label.astype(jnp.float32) / num_classes
  frame = jnp.arange(t, dtype=jnp.float32)
  cy = y0 + speed * jnp.sin(angle) * frame  # [t]
  cx = x0 + speed * jnp.cos(angle) * frame

  def inside(centre, size):  # [t, size]: pixel centres within side/2 of the centre, on a torus
    d = (jnp.arange(size, dtype=jnp.float32)[None] + 0.5 - centre[:, None] + size / 2)
    return jnp.abs(jnp.mod(d, size) - size / 2) < side / 2

  square = inside(cy, h)[:, :, None] & inside(cx, w)[:, None, :]  # [t, h, w]
  background = jax.random.randint(k_bg, (3,), *BACKGROUND)
  foreground = jax.random.randint(k_fg, (3,), *FOREGROUND)
  return jnp.where(square[..., None], foreground, background).astype(jnp.uint8)


def make_batch_fn(config: ml_collections.ConfigDict, split: str, global_batch: int,
                  mesh: jax.sharding.Mesh, *, seed: int) -> Callable[[int], dict]:
  """`batch_index -> {'inputs', 'label', 'batch_mask'}`: global arrays, sharded over `mesh`."""
  kind = pattern(config)
  t, h, w, _ = config_facts.input_shape(config)
  splits = config_facts.heads(config).class_splits or (config_facts.num_classes(config),)
  classes = min(splits)  # every head gets the same class
  limit = eval_examples(config, split) if split != "train" else None
  split_key = jax.random.fold_in(jax.random.PRNGKey(seed), _SPLIT_IDS[split])

  def example(batch_key, j):
    key = jax.random.fold_in(batch_key, j)
    k_label, k_clip = jax.random.split(key)
    label = jax.random.randint(k_label, (), 0, classes)
    if kind == "motion":
      clip = motion_clip(k_clip, label, classes, (t, h, w))
    else:
      clip = jax.random.bits(k_clip, (t, h, w, 3), jnp.uint8)
    one_hot = jnp.concatenate([jax.nn.one_hot(label, n, dtype=jnp.float32) for n in splits])
    return clip, one_hot

  def batch(batch_index):
    batch_key = jax.random.fold_in(split_key, batch_index)
    positions = jnp.arange(global_batch, dtype=jnp.uint32)
    clips, labels = jax.vmap(example, in_axes=(None, 0))(batch_key, positions)
    mask = jnp.ones((global_batch,), jnp.float32)
    if limit is not None:  # the padding after the last example of the fixed set
      mask = (batch_index * global_batch + positions < limit).astype(jnp.float32)
    return {"inputs": clips, "label": labels, "batch_mask": mask}

  out = {"inputs": sharding.batch_sharding(mesh, 5), "label": sharding.batch_sharding(mesh, 2),
         "batch_mask": sharding.batch_sharding(mesh, 1)}
  jitted = jax.jit(batch, out_shardings=out)
  return lambda batch_index: jitted(jnp.uint32(batch_index))


def data_fn(config: ml_collections.ConfigDict) -> Callable[..., Iterator[dict]]:
  """The trainer's `data_fn` (see `train.DataFn`) for this dataset: global device batches.

  The batch size it is given is per process, as for host data; every process makes the same
  global batch (each computing only its own shards) on the mesh the trainer has set
  (`jax.set_mesh`).
  """
  compiled = {}  # one generator per (split, batch, mesh, seed): validation reuses its own

  def batches(split, batch_size, *, process_index, process_count, seed, start_step=0):
    del process_index  # one global batch, the same call on every process
    mesh = jax.sharding.get_mesh()
    if mesh.empty:
      raise RuntimeError(f"{fields.DEVICE_DATASET} batches are made on the mesh set by "
                         "`jax.set_mesh(mesh)`; none is set")
    global_batch = batch_size * process_count
    key = (split, global_batch, mesh, seed)
    if key not in compiled:
      compiled[key] = make_batch_fn(config, split, global_batch, mesh, seed=seed)
    make = compiled[key]
    if start_step and split != "train":
      raise ValueError(f"start_step={start_step} is only meaningful for split='train'")
    # The mesh is read here, in the caller's thread; the batches may be drawn from another
    # (device_feed's), where no mesh is set.
    if split == "train":
      return (make(n) for n in itertools.count(start_step))
    return (make(n) for n in range(-(-eval_examples(config, split) // global_batch)))
  return batches
