"""One functional trainer: mesh → data → sharded state → jitted step → loop → test evaluation.

The same code runs on one CPU, one GPU, a TPU VM or many hosts. The train state is a plain
dict {'params', 'opt_state', 'step'} of `jax.Array`s sharded over the mesh by the model's
logical-axis annotations; it is created sharded (`jax.jit(init, out_shardings=...)`) and
updated by one pure jitted step with donated buffers. The step's randomness is
`fold_in(rng, step)`, and the training data is a deterministic function of (seed, step), so a
run restored from a checkpoint continues with exactly the numbers of an uninterrupted run.
"""
import logging
import time
from typing import Any, Callable, Iterable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from flax.core import meta

from vivit_jax import checkpointing, evaluate, optim, schedules, sharding
from vivit_jax import metrics as metrics_lib
from vivit_jax.models import build_model

# (split, batch_size, *, process_index, process_count, seed, start_step) -> iterable of batches.
DataFn = Callable[..., Iterable[dict[str, np.ndarray]]]


# --------------------------------------------------------------------------- setup helpers


def num_classes_of(config: ml_collections.ConfigDict) -> int:
  """Output width `dataset_configs.num_classes` (Epic-Kitchens: the sum of `class_splits`)."""
  dc = config.dataset_configs
  if dc.get("num_classes") is None:
    if dc.get("class_splits"):
      return int(sum(dc.class_splits))
    raise ValueError("config.dataset_configs.num_classes is required")
  return int(dc.num_classes)


def heads_of(config: ml_collections.ConfigDict) -> dict:
  """Multi-head (Epic-Kitchens) layout: `class_splits` and `split_names` of dataset_configs."""
  dc = config.dataset_configs
  splits, names = dc.get("class_splits"), dc.get("split_names")
  return {"class_splits": tuple(splits) if splits else None,
          "split_names": tuple(names) if names else None}


def input_shape_of(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """One clip's shape `[t, h, w, 3]` from `dataset_configs.num_frames` and `crop_size`."""
  dc = config.dataset_configs
  return (int(dc.num_frames), int(dc.crop_size), int(dc.crop_size), 3)


def default_data_fn(config: ml_collections.ConfigDict) -> DataFn:
  """Reads `config.dataset_configs` through `vivit_jax.data` (creating the synthetic set)."""
  from vivit_jax import data  # pylint: disable=g-import-not-at-top
  from vivit_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.ensure_dataset(config.dataset_configs)

  def data_fn(split, batch_size, *, process_index, process_count, seed, start_step=0):
    kwargs = dict(process_index=process_index, process_count=process_count, seed=seed)
    if start_step:
      kwargs["start_step"] = start_step
    return data.build_dataset(config.dataset_configs, split, batch_size, **kwargs)
  return data_fn


def local_batch_size(global_size: int, mesh: jax.sharding.Mesh, name: str) -> int:
  """This host's share of a global batch; the batch must split evenly over the data axes."""
  if global_size % jax.process_count() or global_size % sharding.data_parallel_size(mesh):
    raise ValueError(
        f"config.{name}={global_size} must be divisible by the number of processes "
        f"({jax.process_count()}) and by the data-parallel mesh size "
        f"({sharding.data_parallel_size(mesh)} = data x fsdp)")
  return global_size // jax.process_count()


def create_state(model: nn.Module, tx: optax.GradientTransformation, input_shape, rng,
                 mesh, rules):
  """Sharded train state born on its devices, plus the state's shardings.

  Returns:
    (state, state_shardings, boxed_abstract_params)
  """
  def init_params(rng):
    video = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
    return model.init({"params": rng}, video, train=False)["params"]

  boxed = jax.eval_shape(init_params, rng)
  param_sh = sharding.param_shardings(boxed, mesh, rules)
  abstract_params = meta.unbox(boxed)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  shardings = {
      "params": param_sh,
      "opt_state": sharding.opt_state_shardings(abstract_opt, abstract_params, param_sh, mesh),
      "step": sharding.replicated(mesh),
  }

  def init_state(rng):
    params = meta.unbox(init_params(rng))
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  state = jax.jit(init_state, out_shardings=shardings)(rng)
  return state, shardings, boxed


def fresh_state_from_params(params, tx, shardings):
  """A state at step 0 around given (e.g. pretrained) params, laid out as `shardings`."""
  params = jax.device_put(params, shardings["params"])
  return jax.jit(
      lambda p: {"params": p, "opt_state": tx.init(p), "step": jnp.zeros((), jnp.int32)},
      out_shardings=shardings, donate_argnums=0)(params)


# --------------------------------------------------------------------------- the step functions


def make_train_step(model, tx, lr_fn, config) -> Callable:
  """`(state, batch, rng) -> (state, metrics)`: one pure SGD step (jit it with shardings)."""
  heads = heads_of(config)
  mixup_cfg = config.get("mixup") or {}
  mixup_alpha = float(mixup_cfg.get("alpha", 0.0) or 0.0)
  cutmix_alpha = float(mixup_cfg.get("cutmix_alpha", 0.0) or 0.0)

  def step_fn(state, batch, rng):
    step = state["step"]
    rng = jax.random.fold_in(rng, step)
    mix_rng, dropout_rng = jax.random.split(rng)
    inputs, labels, weights = batch["inputs"], batch["label"], batch["batch_mask"]
    if mixup_alpha > 0 or cutmix_alpha > 0:
      inputs, labels = _mix(mix_rng, inputs, labels, mixup_alpha, cutmix_alpha)

    def loss_of(params):
      logits = model.apply({"params": params}, inputs, train=True,
                           rngs={"dropout": dropout_rng})
      loss = metrics_lib.loss_fn(logits, labels, weights=weights,
                                 label_smoothing=config.get("label_smoothing"),
                                 class_splits=heads["class_splits"])
      return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
    out = dict(metrics_lib.train_metrics(logits, labels, weights, **heads))
    out["objective"] = (loss, jnp.ones(()))  # what is minimised: with smoothing and mixup
    out["grad_norm"] = (optax.global_norm(grads), jnp.ones(()))
    out["learning_rate"] = (lr_fn(step), jnp.ones(()))
    out["finite"] = (finite.astype(jnp.float32), jnp.ones(()))
    return {"params": params, "opt_state": opt_state, "step": step + 1}, out

  return step_fn


def _mix(rng, inputs, labels, mixup_alpha: float, cutmix_alpha: float):
  """`config.mixup`: mixup (`alpha`), CutMix (`cutmix_alpha`), or a coin flip per step if both."""
  from vivit_jax.data import augment  # pylint: disable=g-import-not-at-top
  coin, rng = jax.random.split(rng)
  if not cutmix_alpha:
    return augment.mixup(rng, inputs, labels, mixup_alpha)
  if not mixup_alpha:
    return augment.cutmix(rng, inputs, labels, cutmix_alpha)
  return jax.lax.cond(jax.random.bernoulli(coin),
                      lambda: augment.cutmix(rng, inputs, labels, cutmix_alpha),
                      lambda: augment.mixup(rng, inputs, labels, mixup_alpha))


def make_eval_step(model, config, average: str) -> Callable:
  """`(params, batch) -> sums`: logits of every view of `[b, v, t, h, w, c]`, averaged."""

  def eval_fn(params, batch):
    inputs = batch["inputs"]
    if inputs.ndim == 5:  # one view (validation)
      inputs = inputs[:, None]
    b, v = inputs.shape[:2]
    logits = model.apply({"params": params}, inputs.reshape((b * v,) + inputs.shape[2:]),
                         train=False)
    logits = logits.reshape(b, v, -1)
    return evaluate.eval_step_metrics(logits, batch["label"], batch["batch_mask"],
                                      average=average, **heads_of(config))
  return eval_fn


def run_eval(eval_step, params, batches: Iterable, mesh) -> tuple[dict, int]:
  """Sums `eval_step` over one full pass of `batches` (every example exactly once).

  Returns:
    (summed metrics, views per example)
  """
  totals, views = None, 1
  for local in batches:
    local = {k: local[k] for k in ("inputs", "label", "batch_mask")}
    views = local["inputs"].shape[1] if local["inputs"].ndim == 6 else 1
    sums = jax.device_get(eval_step(params, sharding.global_batch(local, mesh)))
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  if totals is None:
    raise ValueError("the evaluation split gave no batches")
  return totals, views


# --------------------------------------------------------------------------- logging helpers


def _flush(pending: list, writer, total_steps: int, clock: dict, global_batch: int,
           log: bool) -> None:
  """Fetches the pending steps' metrics; stops on a non-finite loss; logs averages."""
  if not pending:
    return
  fetched = jax.device_get([m for _, m in pending])
  steps = [s for s, _ in pending]
  pending.clear()
  for step, m in zip(steps, fetched):
    if float(m["finite"][0]) < 1:
      raise FloatingPointError(
          f"non-finite loss or parameters at step {step} (loss={float(m['objective'][0]):.4g}, "
          f"grad_norm={float(m['grad_norm'][0]):.4g}); training stopped. The last good "
          "checkpoint is kept; lower lr_configs.base_learning_rate or set max_grad_norm.")
  if not log:
    return
  scalars = {}
  for name in fetched[0]:
    if name == "finite":
      continue
    num = sum(np.asarray(m[name][0], np.float64) for m in fetched)
    den = sum(np.asarray(m[name][1], np.float64) for m in fetched)
    value = num / np.maximum(den, 1e-12)
    if np.ndim(value) == 0:
      scalars[name if name in ("learning_rate", "grad_norm") else f"train_{name}"] = float(value)
  now = time.perf_counter()
  dt = max(now - clock["t"], 1e-9)
  n = steps[-1] - clock["step"]
  steps_per_sec = n / dt
  scalars.update(steps_per_sec=steps_per_sec, clips_per_sec=steps_per_sec * global_batch,
                 data_wait_fraction=clock["wait"] / dt)
  eta = (total_steps - steps[-1]) / max(steps_per_sec, 1e-9)
  writer.write_scalars(steps[-1], scalars)
  logging.info("step %d/%d: loss %.4f, %.2f steps/s, %.1f clips/s, %.0f%% waiting for data, "
               "ETA %s", steps[-1], total_steps, scalars.get("train_loss", float("nan")),
               steps_per_sec, steps_per_sec * global_batch, 100 * clock["wait"] / dt,
               time.strftime("%H:%M:%S", time.gmtime(eta)))
  clock.update(t=now, step=steps[-1], wait=0.0)


def _log_overview(params, compiled_step, global_batch: int, num_devices: int) -> float:
  """Logs the parameter table and the step's FLOPs (XLA cost analysis); returns FLOPs/step."""
  from clu import parameter_overview  # pylint: disable=g-import-not-at-top
  logging.info("parameters:\n%s",
               parameter_overview.get_parameter_overview(params, include_stats=False))
  cost = compiled_step.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  # XLA analyses the per-device (SPMD-partitioned) program; the step's total is N times that.
  flops = float((cost or {}).get("flops", float("nan"))) * num_devices
  logging.info("train step: %.3g FLOPs per step in total (%d devices), %.3g per clip",
               flops, num_devices, flops / max(global_batch, 1))
  return flops


# --------------------------------------------------------------------------- the trainer


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       mode: str = "train_and_eval", data_fn: DataFn | None = None,
                       devices=None) -> dict[str, Any]:
  """Trains and/or evaluates as `config` says; returns the summary (also printed).

  Args:
    config: a Scenic-style config (already validated).
    workdir: the run folder: checkpoints/, metrics.jsonl, eval_results.json, TensorBoard.
    mode: 'train', 'eval' (the newest checkpoint of `workdir`, or a released Scenic one at
      `config.eval_checkpoint_path`) or 'train_and_eval'.
    data_fn: where batches come from (tests pass a fake); default `vivit_jax.data`.
    devices: the devices to build the mesh from (default all).
  """
  t_start = time.time()
  workdir = checkpointing.absolute(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_primary = jax.process_index() == 0
  mesh = sharding.make_mesh(config.get("mesh"), devices)
  rules = sharding.logical_rules(config.get("sharding_rules"))
  logging.info("mesh %s over %d devices, %d processes", dict(mesh.shape), mesh.size,
               jax.process_count())
  data_fn = data_fn or default_data_fn(config)
  seed = int(config.get("rng_seed", 0))
  proc = dict(process_index=jax.process_index(), process_count=jax.process_count())

  model = build_model(config.model, num_classes_of(config),
                      dtype=config.get("model_dtype_str") or "float32")
  batch_size = int(config.batch_size)
  steps_per_epoch = schedules.steps_per_epoch_of(config)
  total_steps = schedules.total_training_steps(config, steps_per_epoch) if mode != "eval" else 0
  tx, lr_fn = optim.build_optimizer(config, steps_per_epoch)

  rng = jax.random.PRNGKey(seed)
  init_rng, train_rng = jax.random.split(rng)
  state, shardings, _ = create_state(model, tx, input_shape_of(config), init_rng, mesh, rules)
  manager = checkpointing.make_manager(
      workdir, max_to_keep=config.get("max_checkpoints_to_keep", 3))
  writer = metrics_lib.MetricWriter(str(workdir), is_primary=is_primary)
  summary: dict[str, Any] = {"workdir": str(workdir)}

  # Resume ALWAYS wins over init_from: a run folder with checkpoints is this run's own.
  # The newest checkpoint that restores completely (damaged newer ones are set aside, named).
  latest, restored = checkpointing.restore_newest(manager, state, fall_back=mode != "eval")
  if latest is not None:
    logging.info("resuming from %s", manager.directory / str(latest))
    state = restored
    writer.drop_after(latest)  # steps after the checkpoint are replayed, and logged again
  elif mode == "eval" and config.get("eval_checkpoint_path"):
    from vivit_jax import checkpoints  # pylint: disable=g-import-not-at-top
    params = checkpoints.load_scenic_checkpoint(config.eval_checkpoint_path)
    expected = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state["params"])
    params = checkpoints.match_params(expected, params, source=config.eval_checkpoint_path)
    state = fresh_state_from_params(params, tx, shardings)
  elif mode == "eval":
    raise ValueError(f"--mode=eval: no checkpoint in {manager.directory} and "
                     "config.eval_checkpoint_path is not set")
  elif config.get("init_from") and config.init_from.get("checkpoint_path"):
    from vivit_jax import checkpoints  # pylint: disable=g-import-not-at-top
    logging.info("initialising from %s", config.init_from.checkpoint_path)
    params = checkpoints.init_from_pretrained(config, jax.device_get(state["params"]))
    state = fresh_state_from_params(params, tx, shardings)
  start_step = int(jax.device_get(state["step"]))

  batch_sh = {k: sharding.batch_sharding(mesh, nd) for k, nd in
              (("inputs", 5), ("label", 2), ("batch_mask", 1))}
  eval_average = config.get("eval_average", "logits")
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    eval_step = jax.jit(make_eval_step(model, config, eval_average),
                        in_shardings=(shardings["params"], None),
                        out_shardings=sharding.replicated(mesh))
    if mode != "eval" and start_step < total_steps:
      state = _train_loop(config, state, shardings, batch_sh, mesh, model, tx, lr_fn,
                          train_rng, data_fn, proc, seed, start_step, total_steps, manager,
                          writer, eval_step, summary)
    if mode != "train":
      local_eval = local_batch_size(int(config.get("eval_batch_size", batch_size)), mesh,
                                    "eval_batch_size")
      totals, views = run_eval(eval_step, state["params"],
                               data_fn("test", local_eval, seed=seed, **proc), mesh)
      results = evaluate.summarize(totals)
      step = int(jax.device_get(state["step"]))
      summary["test"] = dict(results, num_views=views)
      if is_primary:
        evaluate.write_eval_results(str(workdir), results, split="test", num_views=views,
                                    step=step)
      writer.write_scalars(step, _scalars("test", results))
  manager.wait_until_finished()
  manager.close()
  writer.close()
  summary.update(step=int(jax.device_get(state["step"])), wall_s=time.time() - t_start)
  line = _summary_line(summary)
  summary["line"] = line
  if is_primary:
    print(line, flush=True)
  summary["state"] = state
  return summary


def _train_loop(config, state, shardings, batch_sh, mesh, model, tx, lr_fn, train_rng,
                data_fn, proc, seed, start_step, total_steps, manager, writer, eval_step,
                summary):
  """Steps `start_step` → `total_steps`: log, evaluate, checkpoint; returns the final state."""
  is_primary = jax.process_index() == 0
  global_batch = int(config.batch_size)
  local_train = local_batch_size(global_batch, mesh, "batch_size")
  train_iter: Iterator = iter(data_fn("train", local_train, seed=seed, start_step=start_step,
                                      **proc))
  step_fn = make_train_step(model, tx, lr_fn, config)
  abstract_batch = {
      k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sh[k]) for k, (shape, dtype) in {
          "inputs": ((global_batch,) + input_shape_of(config), jnp.float32),
          "label": ((global_batch, num_classes_of(config)), jnp.float32),
          "batch_mask": ((global_batch,), jnp.float32)}.items()}
  jitted = jax.jit(step_fn, in_shardings=(shardings, batch_sh, sharding.replicated(mesh)),
                   out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  compiled = jitted.lower(state, abstract_batch, train_rng).compile()
  if is_primary:
    summary["flops_per_step"] = _log_overview(state["params"], compiled, global_batch,
                                              mesh.size)

  log_every = int(config.get("log_summary_steps") or 100)
  eval_every = int(config.get("log_eval_steps") or 0)
  ckpt_every = int(config.get("checkpoint_steps") or 0)
  local_eval = local_batch_size(int(config.get("eval_batch_size", global_batch)), mesh,
                                "eval_batch_size")
  sigterm = checkpointing.SigtermFlag()
  clock = {"t": time.perf_counter(), "step": start_step, "wait": 0.0}
  pending: list = []
  logging.info("training steps %d → %d", start_step, total_steps)
  try:
    for step in range(start_step + 1, total_steps + 1):
      t0 = time.perf_counter()
      local = next(train_iter)
      clock["wait"] += time.perf_counter() - t0
      batch = sharding.global_batch(
          {k: np.asarray(local[k], np.float32) for k in ("inputs", "label", "batch_mask")}, mesh)
      state, step_metrics = compiled(state, batch, train_rng)
      pending.append((step, step_metrics))
      last = step == total_steps
      preempted = sigterm.reached(step)
      if step % log_every == 0 or last:
        _flush(pending, writer, total_steps, clock, global_batch, log=True)
      if (ckpt_every and step % ckpt_every == 0) or last or preempted:
        t_save = time.perf_counter()
        _flush(pending, writer, total_steps, clock, global_batch, log=False)  # finite check
        checkpointing.save(manager, step, state, force=True)
        clock["t"] += time.perf_counter() - t_save  # the report's rates exclude saving
      if eval_every and step % eval_every == 0 and not last:
        t_eval = time.perf_counter()
        totals, views = run_eval(eval_step, state["params"],
                                 data_fn("validation", local_eval, seed=seed, **proc), mesh)
        res = evaluate.summarize(totals)
        writer.write_scalars(step, _scalars("valid", res))
        if is_primary:
          evaluate.write_eval_results(str(config_workdir(manager)), res, split="validation",
                                      num_views=views, step=step)
        clock["t"] += time.perf_counter() - t_eval  # the report's rates exclude evaluation
      if preempted:
        manager.wait_until_finished()
        raise SystemExit(f"stopped by SIGTERM at step {step}; checkpoint saved, rerun to resume")
  finally:
    manager.wait_until_finished()  # never leave a half-written newest checkpoint behind
    sigterm.restore_handler()
  return state


def _scalars(prefix: str, results: dict) -> dict[str, float]:
  return {f"{prefix}_{k}": float(v) for k, v in results.items()
          if v is not None and np.ndim(v) == 0}


def config_workdir(manager) -> epath.Path:
  """The run folder (the parent of the checkpoint folder)."""
  return epath.Path(manager.directory).parent


def _summary_line(summary: dict) -> str:
  parts = [f"vivit_jax done: step {summary['step']}", f"{summary['wall_s']:.0f}s"]
  test = summary.get("test")
  if test:
    parts.append(f"test top1 {100 * test.get('top1', float('nan')):.2f}%")
    parts.append(f"top5 {100 * test.get('top5', float('nan')):.2f}%")
    if "num_videos" in test:
      parts.append(f"{int(test['num_videos'])} videos x {int(test.get('num_views', 1))} views")
  parts.append(f"workdir {summary['workdir']}")
  return " | ".join(parts)
