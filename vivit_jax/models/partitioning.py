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


def axes(init: Callable, names: Sequence[str | None]) -> Callable:
  """An initializer whose parameter carries logical axis `names`."""
  return nn.with_logical_partitioning(init, tuple(names))


def constrain(x, names: Sequence[str | None]):
  """Logical sharding constraint; a no-op outside a mesh with axis rules."""
  return nn.with_logical_constraint(x, tuple(names))
