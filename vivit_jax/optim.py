"""The optax optimizer from a Scenic-style config.

The chain, in order:
  1. `l2_decay_factor` (Scenic's L2 penalty `0.5·λ·Σw²` over parameters with ndim > 1): its
     gradient λ·w is added to the gradient. Updates equal Scenic's L2-in-the-loss; the logged
     loss does not include the penalty.
  2. global-norm clipping to `max_grad_norm` (of the averaged gradient when accumulating).
  3. the direction: `momentum` (heavy ball, `optimizer_configs.momentum`, default 0.9),
     `nesterov`, `sgd` (momentum default 0), `adam` / `adamw` (`optimizer_configs.beta1`, `beta2`,
     `epsilon`).
  4. decoupled weight decay `optimizer_configs.weight_decay` (AdamW-style `update += wd·w`,
     scaled by the learning rate below, for every optimizer), on the parameters selected by
     `weight_decay_mask`: not biases, LayerNorm scales, position embeddings or CLS tokens
     (`optimizer_configs.weight_decay_exclude` overrides the list of regexes).
  5. `-learning_rate(step)`.
  6. `gradient_accumulation_steps = k > 1` wraps all of it in `optax.MultiSteps`: the train step
     calls `tx.update` every micro-batch, gradients are averaged over k micro-batches, and
     the parameters change only on every k-th call (the others give zero updates).

Steps: `lr_schedule(step)` takes train-loop steps (one micro-batch each). With accumulation the
inner optimizer counts updates `c`; it uses `lr_schedule(c·k)`, so warmup and decay lengths in the
config are in loop steps either way.

Parameters must be plain arrays when `tx.init`/`tx.update` run: unbox `nn.LogicallyPartitioned`
trees first (`flax.core.meta.unbox`). The masks are computed from dict-key paths, so they also
come out right on boxed trees, but the boxed form is not what the train loop feeds.
"""
import re
from typing import Any, Callable, Sequence

import jax
import ml_collections
import optax

from vivit_jax.schedules import Schedule, build_lr_schedule, total_training_steps

OPTIMIZERS = ("momentum", "nesterov", "sgd", "adam", "adamw")
# Fields of `optimizer_configs` each optimizer understands (Scenic names).
OPTIMIZER_FIELDS = {
    "momentum": ("momentum", "nesterov", "weight_decay", "weight_decay_exclude"),
    "nesterov": ("momentum", "weight_decay", "weight_decay_exclude"),
    "sgd": ("momentum", "nesterov", "weight_decay", "weight_decay_exclude"),
    "adam": ("beta1", "beta2", "epsilon", "weight_decay", "weight_decay_exclude"),
    "adamw": ("beta1", "beta2", "epsilon", "weight_decay", "weight_decay_exclude"),
}
# re.search patterns over 'a/b/c' parameter paths; matches get no weight decay.
DEFAULT_WEIGHT_DECAY_EXCLUDE = (
    r"(^|/)bias$",            # every bias, including attention's [heads, head_dim] ones
    r"(^|/)scale$",           # LayerNorm scales
    r"(^|/)pos_embedding$",   # learned position embeddings
    r"(^|/)cls[^/]*$",        # CLS tokens: cls, cls_SpatialTransformer, ...
)


def param_path(path: Sequence[Any]) -> str:
  """A jax key path → 'a/b/c' from its dict keys (box attributes such as `.value` dropped)."""
  return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def weight_decay_mask(params, exclude: Sequence[str] = DEFAULT_WEIGHT_DECAY_EXCLUDE):
  """Tree of bools like `params`: True where decoupled weight decay applies."""
  patterns = [re.compile(p) for p in exclude]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: not any(p.search(param_path(path)) for p in patterns), params)


def l2_mask(params):
  """Scenic's L2 penalty covers the parameters with more than one dimension."""
  return jax.tree_util.tree_map(lambda x: x.ndim > 1, params)


def check_optimizer_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for a bad `optimizer` / `optimizer_configs`."""
  name = config.get("optimizer")
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer={name!r}; valid: {list(OPTIMIZERS)}")
  opt_cfg = config.get("optimizer_configs") or {}
  for key in opt_cfg:
    if key not in OPTIMIZER_FIELDS[name]:
      raise ValueError(f"optimizer_configs.{key} is not used by optimizer={name!r}; "
                       f"valid fields: {list(OPTIMIZER_FIELDS[name])}")
  for key in ("max_grad_norm", "l2_decay_factor"):
    value = config.get(key)
    if value is not None and float(value) < 0:
      raise ValueError(f"{key}={value}; must be >= 0 or None")
  k = config.get("gradient_accumulation_steps")
  k = 1 if k is None else k
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"gradient_accumulation_steps={k}; must be an integer >= 1")


def _direction(name: str, opt_cfg) -> optax.GradientTransformation:
  if name in ("momentum", "nesterov", "sgd"):
    momentum = opt_cfg.get("momentum", 0.0 if name == "sgd" else 0.9)
    nesterov = bool(opt_cfg.get("nesterov", name == "nesterov"))
    return optax.trace(decay=momentum, nesterov=nesterov) if momentum else optax.identity()
  return optax.scale_by_adam(b1=opt_cfg.get("beta1", 0.9), b2=opt_cfg.get("beta2", 0.999),
                             eps=opt_cfg.get("epsilon", 1e-8))


def build_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int | None
                    ) -> tuple[optax.GradientTransformation, Schedule]:
  """`(tx, lr_schedule)` from `config.optimizer`, `optimizer_configs`, `lr_configs`, etc.

  Args:
    config: the experiment config (Scenic field names; see the module docstring).
    steps_per_epoch: train-loop steps per epoch, for `num_training_epochs` and `warmup_epochs`.

  Returns:
    tx: the optax transformation (MultiSteps-wrapped when accumulating).
    lr_schedule: train-loop step → learning rate, for logging.
  """
  check_optimizer_config(config)
  name = config.optimizer
  opt_cfg = config.get("optimizer_configs") or ml_collections.ConfigDict()
  total = total_training_steps(config, steps_per_epoch)
  lr_schedule = build_lr_schedule(config.get("lr_configs"), total_steps=total,
                                  steps_per_epoch=steps_per_epoch)
  k = int(config.get("gradient_accumulation_steps") or 1)

  parts = []
  if config.get("l2_decay_factor"):
    parts.append(optax.add_decayed_weights(float(config.l2_decay_factor), mask=l2_mask))
  if config.get("max_grad_norm"):
    parts.append(optax.clip_by_global_norm(float(config.max_grad_norm)))
  parts.append(_direction(name, opt_cfg))
  # optax.adamw's default decay; the other optimizers default to none.
  weight_decay = float(opt_cfg.get("weight_decay", 1e-4 if name == "adamw" else 0.0))
  if weight_decay:
    exclude = tuple(opt_cfg.get("weight_decay_exclude", DEFAULT_WEIGHT_DECAY_EXCLUDE))
    parts.append(optax.add_decayed_weights(
        weight_decay, mask=lambda p: weight_decay_mask(p, exclude)))
  inner_lr: Callable = lr_schedule if k == 1 else (lambda count: lr_schedule(count * k))
  parts.append(optax.scale_by_learning_rate(inner_lr))
  tx = optax.chain(*parts)
  if k > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
  return tx, lr_schedule
