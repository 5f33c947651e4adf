"""Multi-head outputs (Epic-Kitchens): one `output_projection`, split by `class_splits`.

Scenic's released EK checkpoint has a single projection of width `sum(class_splits)`
(e.g. 300 nouns + 97 verbs); the loss and metrics see it as one head per split.
"""
from typing import Sequence

import jax
import numpy as np


def split_logits(logits: jax.Array, class_splits: Sequence[int],
                 split_names: Sequence[str] | None = None) -> dict[str, jax.Array]:
  """`logits [..., sum(class_splits)]` → {split_name: `[..., class_splits[i]]`}."""
  class_splits = [int(c) for c in class_splits]
  if logits.shape[-1] != sum(class_splits):
    raise ValueError(f"logits have {logits.shape[-1]} classes but class_splits={class_splits} "
                     f"sum to {sum(class_splits)}")
  names = list(split_names) if split_names is not None else [str(i) for i in range(len(class_splits))]
  if len(names) != len(class_splits):
    raise ValueError(f"split_names={names} and class_splits={class_splits} differ in length")
  ends = np.cumsum(class_splits)
  return {name: logits[..., end - size:end]
          for name, size, end in zip(names, class_splits, ends)}
