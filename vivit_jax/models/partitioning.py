"""Logical axis names carried by every parameter and the main activations.

The model only names axes; `vivit_jax.sharding` maps the names to mesh axes with rules, so the
same model runs data-parallel, FSDP or tensor-parallel without code changes.

Parameter axes:
  embed     the model width D (hidden_size)
  mlp       the MLP hidden width (and the pre-logits width)
  heads     attention heads
  head_dim  per-head width
  classes   output classes
  (None)    small axes never sharded: kernel taps, channels, token positions
Activation axes:
  batch, length, act_embed, act_mlp, act_heads
"""
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
HEAD_DIM = "head_dim"
CLASSES = "classes"

BATCH = "batch"
LENGTH = "length"
ACT_EMBED = "act_embed"
ACT_MLP = "act_mlp"
ACT_HEADS = "act_heads"

# [b, l, d] token sequences and [b, l, m] MLP hiddens.
TOKENS = (BATCH, LENGTH, ACT_EMBED)
MLP_HIDDEN = (BATCH, LENGTH, ACT_MLP)


class _Partitioned(nn.LogicallyPartitioned):
  """`LogicallyPartitioned` that tolerates flax's flat DenseGeneral kernels.

  `nn.DenseGeneral` calls its initializer with a flattened 2-D shape and reshapes the boxed
  result afterwards; flax also re-runs the initializer abstractly during `apply` to check
  shapes. Under a mesh (`jax.set_mesh`) the stock box would constrain the flat value with the
  3-D names and fail, so the constraint is skipped while the ranks differ.
  """

  def unbox(self, apply_constraint=True):
    if jnp.ndim(self.value) != len(self.names):
      return self.value
    return super().unbox(apply_constraint)


def axes(init: Callable, names: Sequence[str | None]) -> Callable:
  """An initializer whose parameter carries logical axis `names`."""
  names = tuple(names)

  def boxed(*args, **kwargs):
    return _Partitioned(init(*args, **kwargs), names)
  return boxed


def constrain(x, names: Sequence[str | None]):
  """Logical sharding constraint; a no-op outside a mesh with axis rules."""
  return nn.with_logical_constraint(x, tuple(names))
