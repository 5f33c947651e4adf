"""Learning-rate schedules with Scenic's `lr_configs` semantics (`compound` factor products).

`lr_configs.factors = 'constant * cosine_decay * linear_warmup'` multiplies, left to right, a
running ratio (starting at 1.0) by each factor evaluated at the step. Steps count train-loop steps
from 0 (the step whose update is being computed), as in Scenic.

Factors (fields of `lr_configs` they read):
  constant            base_learning_rate
  linear_warmup       warmup_steps (or warmup_epochs), warmup_alpha=0
  cosine_decay        steps_per_cycle, warmup_steps, alpha=0, m_mul=1, start_decay_step=0,
                      total_steps=steps_per_cycle (Scenic shortens each cycle by its share
                      of the warmup)
  rsqrt_decay         warmup_steps, timescale=10_000
  linear_decay        warmup_steps, total_steps, end_learning_rate=0
  decay_every         steps_per_decay, decay_factor
  piecewise_constant  decay_events, decay_factors (absolute ratios after each event)
"""
import math
from typing import Callable

import jax.numpy as jnp
import ml_collections

SCHEDULES = ("compound",)
FACTORS = ("constant", "linear_warmup", "cosine_decay", "rsqrt_decay", "linear_decay",
           "decay_every", "piecewise_constant")

# Every lr_configs field some factor reads (for config checking).
LR_CONFIG_FIELDS = (
    "learning_rate_schedule", "factors", "base_learning_rate", "warmup_steps", "warmup_epochs",
    "warmup_alpha", "steps_per_cycle", "total_steps", "alpha", "t_mul", "m_mul",
    "start_decay_step", "timescale", "end_learning_rate", "steps_per_decay", "decay_factor",
    "decay_events", "decay_factors")

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def steps_per_epoch_of(config: ml_collections.ConfigDict) -> int | None:
  """`dataset_configs.examples_per_subset.train // batch_size` (None when unknown), as Scenic."""
  data_cfg = config.get("dataset_configs") or {}
  train = (data_cfg.get("examples_per_subset") or {}).get("train")
  if not train or not config.get("batch_size"):
    return None
  return max(1, int(train) // int(config.batch_size))


def total_training_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """`num_training_steps`, else `num_training_epochs × steps_per_epoch` (Scenic's rule)."""
  if config.get("num_training_steps"):
    return int(config.num_training_steps)
  if config.get("num_training_epochs"):
    if not steps_per_epoch or steps_per_epoch <= 0:
      raise ValueError(f"num_training_epochs={config.num_training_epochs} needs the epoch size: "
                       "set dataset_configs.examples_per_subset.train (or use "
                       "num_training_steps)")
    return int(math.ceil(config.num_training_epochs * steps_per_epoch))
  raise ValueError("set one of num_training_steps or num_training_epochs in the config")


def parse_factors(factors: str) -> list[str]:
  """'constant * cosine_decay' → ['constant', 'cosine_decay']; unknown names → ValueError."""
  names = [n.strip() for n in str(factors).split("*")]
  for name in names:
    if name not in FACTORS:
      raise ValueError(f"lr_configs.factors={factors!r}: unknown factor {name!r}; "
                       f"valid: {list(FACTORS)}")
  return names


def warmup_steps(lr_configs: ml_collections.ConfigDict, steps_per_epoch: int | None) -> float:
  """`warmup_steps`, or `warmup_epochs × steps_per_epoch`; 0 when neither is set."""
  steps, epochs = lr_configs.get("warmup_steps"), lr_configs.get("warmup_epochs")
  if steps is not None and epochs is not None:
    raise ValueError("lr_configs.warmup_steps and lr_configs.warmup_epochs are both set; "
                     "keep one")
  if epochs is not None:
    if not steps_per_epoch:
      raise ValueError("lr_configs.warmup_epochs needs steps_per_epoch (dataset size)")
    return int(epochs * steps_per_epoch)
  return float(steps or 0)


def _require(cfg, name: str, factor: str):
  if cfg.get(name) is None:
    raise ValueError(f"lr_configs.{name} is required by the {factor!r} factor")
  return cfg.get(name)


def _cosine(cfg, warmup: float, total_steps: int) -> Callable:
  steps_per_cycle = float(cfg.get("steps_per_cycle") or total_steps)
  cycle_total = float(cfg.get("total_steps") or steps_per_cycle)
  if float(cfg.get("t_mul", 1.0)) != 1.0:
    raise ValueError(f"lr_configs.t_mul={cfg.t_mul}: only t_mul=1 is supported")
  # Scenic removes each cycle's share of the warmup so the first cosine ends on time.
  cycle = steps_per_cycle - int(warmup / (cycle_total / steps_per_cycle))
  if cycle <= 0:
    raise ValueError(f"lr_configs.steps_per_cycle={steps_per_cycle:g} must exceed "
                     f"warmup_steps={warmup:g}")
  alpha, m_mul = float(cfg.get("alpha", 0.0)), float(cfg.get("m_mul", 1.0))
  start = warmup + float(cfg.get("start_decay_step", 0.0))

  def factor(ratio, step):
    progress = jnp.maximum(0.0, step - start) / cycle
    restart = jnp.floor(progress)
    cos = jnp.maximum(0.0, 0.5 * m_mul**restart * (1.0 + jnp.cos(jnp.pi * (progress - restart))))
    return ratio * ((1.0 - alpha) * cos + alpha)
  return factor


def _factor(name: str, cfg, warmup: float, total_steps: int) -> Callable:
  """`(ratio, step) → ratio'` for one factor name."""
  if name == "constant":
    base = float(_require(cfg, "base_learning_rate", name))
    return lambda ratio, step: ratio * base
  if name == "linear_warmup":
    alpha = float(cfg.get("warmup_alpha", 0.0))
    if warmup <= 0:
      return lambda ratio, step: ratio
    return lambda ratio, step: ratio * jnp.minimum(1.0, alpha + step * (1.0 - alpha) / warmup)
  if name == "cosine_decay":
    return _cosine(cfg, warmup, total_steps)
  if name == "rsqrt_decay":
    timescale = float(cfg.get("timescale", 10_000))
    shift = timescale - warmup
    return lambda ratio, step: ratio * jnp.where(
        step > warmup, jnp.sqrt(timescale) / jnp.sqrt(jnp.maximum(step + shift, 1e-6)), 1.0)
  if name == "linear_decay":
    end = float(cfg.get("end_learning_rate", 0.0))
    total = float(cfg.get("total_steps") or total_steps)
    if total <= warmup:
      raise ValueError(f"lr_configs.total_steps={total:g} must exceed warmup_steps={warmup:g} "
                       "for linear_decay")

    def linear(ratio, step):
      progress = jnp.maximum(0.0, (step - warmup) / (total - warmup))
      return (ratio - end) * jnp.maximum(1.0 - progress, 0.0) + end
    return linear
  if name == "decay_every":
    every = float(_require(cfg, "steps_per_decay", name))
    decay = float(_require(cfg, "decay_factor", name))
    return lambda ratio, step: ratio * decay ** jnp.floor(step / every)
  if name == "piecewise_constant":
    events = jnp.asarray(list(_require(cfg, "decay_events", name)), jnp.float32)
    values = jnp.asarray([1.0] + list(_require(cfg, "decay_factors", name)), jnp.float32)
    if values.shape[0] != events.shape[0] + 1:
      raise ValueError("lr_configs.decay_events and lr_configs.decay_factors differ in length")
    return lambda ratio, step: ratio * values[jnp.sum(events < step)]
  raise ValueError(f"lr_configs.factors: unknown factor {name!r}; valid: {list(FACTORS)}")


def build_lr_schedule(lr_configs: ml_collections.ConfigDict, *, total_steps: int,
                      steps_per_epoch: int | None = None) -> Schedule:
  """`step → learning rate` (float32, jittable) from Scenic-style `lr_configs`.

  Without `learning_rate_schedule` the rate is the constant `base_learning_rate` (Scenic).
  `steps_per_cycle` and `total_steps` default to `total_steps` (the run's training steps).
  """
  if lr_configs is None:
    raise ValueError("config.lr_configs is required (e.g. base_learning_rate=...)")
  kind = lr_configs.get("learning_rate_schedule")
  if kind is None:
    base = jnp.float32(_require(lr_configs, "base_learning_rate", "constant"))
    return lambda step: base
  if kind not in SCHEDULES:
    raise ValueError(f"lr_configs.learning_rate_schedule={kind!r}; valid: {list(SCHEDULES)} "
                     "or unset (constant base_learning_rate)")
  warmup = warmup_steps(lr_configs, steps_per_epoch)
  factors = [_factor(n, lr_configs, warmup, total_steps)
             for n in parse_factors(_require(lr_configs, "factors", "compound"))]

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    ratio = jnp.float32(1.0)
    for factor in factors:
      ratio = factor(ratio, step)
    return jnp.asarray(ratio, jnp.float32)
  return schedule
