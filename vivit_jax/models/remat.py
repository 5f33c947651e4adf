"""Rematerialisation (`model.remat`): what each encoder block keeps for the backward pass.

Activation memory, not parameters, is what limits the batch of a video transformer: Model 1 at
32x224 keeps, per block, the [heads, 3137, 3137] attention weights (with the XLA path) and the
[3137, 4d] MLP activations of every clip. A policy trades that memory for recomputation.
"""
from typing import Any, Callable

import jax
import numpy as np

# `model.remat`: what each encoder block keeps for the backward pass. 'full' keeps only the
# block's input and recomputes the rest (least memory, about one more forward pass of compute);
# 'dots_saveable' keeps the matmul outputs and recomputes the cheap elementwise ops (LayerNorm,
# GELU, softmax), which is most of the activation memory for a fraction of the compute.
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}


def remat_policy_name(value: Any) -> str:
  """The policy name of a `model.remat` value: a name of REMAT_POLICIES, or a bool (Scenic-era
  configs: True is 'full', False/None is 'none')."""
  if value is None or value is False:
    return "none"
  if value is True:
    return "full"
  if value not in REMAT_POLICIES:
    raise ValueError(f"model.remat={value!r}; valid: {list(REMAT_POLICIES)} (or True/False)")
  return value


def saved_activation_bytes(loss_fn: Callable, *args) -> int:
  """Bytes the backward pass of `loss_fn(*args)` keeps from the forward pass (its residuals).

  Computed from shapes only (nothing runs). This is what a remat policy changes, measured the
  same way on every platform. The compiled step's `memory_analysis()` is the backend's own
  figure (parameters, optimizer state, temporaries); XLA:CPU's does not shrink with remat
  (measured: 4 blocks, 165 MB without, 164 MB with 'full'), so CPU tests use this one.
  """
  residuals = jax.eval_shape(lambda *a: jax.vjp(loss_fn, *a)[1], *args)
  return int(sum(np.prod(r.shape) * np.dtype(r.dtype).itemsize
                 for r in jax.tree.leaves(residuals)))


def model_activation_bytes(model, params, clips: jax.ShapeDtypeStruct) -> int:
  """`saved_activation_bytes` of a ViViT's training forward pass on `clips [b, t, h, w, 3]`
  (what `--dry_run` and benchmarks/train_step.py report per device; parameters included)."""
  return saved_activation_bytes(
      lambda p, x: model.apply({"params": p}, x, train=False).sum(), params, clips)
