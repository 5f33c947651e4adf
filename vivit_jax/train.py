"""One functional trainer: mesh → data → model → sharded state → restore → step → loop → test.

The same code runs on one CPU, one GPU, a TPU VM or many hosts. The train state is a plain
dict {'params', 'opt_state', 'step'} of `jax.Array`s sharded over the mesh by the model's
logical-axis annotations; it is created sharded (`jax.jit(init, out_shardings=...)`) and
updated by one pure jitted step with donated buffers. The step's randomness is
`fold_in(rng, step)`, and the training data is a deterministic function of (seed, step), so a
run restored from a checkpoint continues with exactly the numbers of an uninterrupted run.
`train_and_evaluate` reads top to bottom in those sections; docs/training.md ("How a run
flows") names the functions a step goes through.
"""
import contextlib
import logging
import time
from typing import Any, Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import parameter_overview

from vivit_jax import checkpoints, config_facts, device_feed, evaluate, optim, run_state
from vivit_jax import schedules, sharding
from vivit_jax import train_state
from vivit_jax import metrics as metrics_lib
from vivit_jax.data import fields, mixing, pixels, synthetic_device

# (split, batch_size, *, process_index, process_count, seed, start_step) -> iterable of batches.
DataFn = Callable[..., Iterable[dict[str, np.ndarray]]]
PROFILE_STEPS = 5  # `config.xprof`: steps traced, starting two steps after compilation


def default_data_fn(config: ml_collections.ConfigDict) -> DataFn:
  """Reads `config.dataset_configs` through `vivit_jax.data` (creating the synthetic set), or
  makes batches on the devices (`dataset_name='synthetic_device'`, no TensorFlow)."""
  if fields.is_device_dataset(config):
    return synthetic_device.data_fn(config)
  from vivit_jax import data  # pylint: disable=g-import-not-at-top  (TensorFlow)
  from vivit_jax.data import synthetic  # pylint: disable=g-import-not-at-top  (TensorFlow)
  synthetic.ensure_dataset(config.dataset_configs)

  def data_fn(split, batch_size, *, process_index, process_count, seed, start_step=0):
    kwargs = dict(process_index=process_index, process_count=process_count, seed=seed,
                  uint8_pixels=config_facts.uint8_pixels(config))
    if start_step:
      kwargs["start_step"] = start_step
    return data.build_dataset(config.dataset_configs, split, batch_size, **kwargs)
  return data_fn


def make_train_step(model, tx, lr_fn, config) -> Callable:
  """`(state, batch, rng) -> (state, metrics)`: one pure SGD step (jit it with shardings)."""
  heads = config_facts.heads(config)._asdict()
  zero_centering = fields.zero_centering(config.dataset_configs)
  mixup_cfg = config.get("mixup") or {}
  mixup_alpha = float(mixup_cfg.get("alpha", 0.0) or 0.0)
  cutmix_alpha = float(mixup_cfg.get("cutmix_alpha", 0.0) or 0.0)

  def step_fn(state, batch, rng):
    step = state["step"]
    rng = jax.random.fold_in(rng, step)
    mix_rng, dropout_rng = jax.random.split(rng)
    inputs = pixels.model_input(batch["inputs"], zero_centering)
    labels, weights = batch["label"], batch["batch_mask"]
    if mixup_alpha > 0 or cutmix_alpha > 0:
      inputs, labels = mixing.mix(mix_rng, inputs, labels, mixup_alpha, cutmix_alpha)

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


def jit_train_step(config, model, tx, lr_fn, shardings, mesh):
  """The jitted train step (explicit shardings, donated state) and the abstract global batch
  it takes, for `.lower(state, batch, rng).compile()`."""
  global_batch = int(config.batch_size)
  shapes = {"inputs": (global_batch,) + config_facts.input_shape(config),
            "label": (global_batch, config_facts.num_classes(config)),
            "batch_mask": (global_batch,)}
  abstract_batch = {}
  for k, dtype in config_facts.batch_dtypes(config).items():
    abstract_batch[k] = jax.ShapeDtypeStruct(
        shapes[k], dtype, sharding=sharding.batch_sharding(mesh, len(shapes[k])))
  jitted = jax.jit(make_train_step(model, tx, lr_fn, config),
                   in_shardings=(shardings, {k: v.sharding for k, v in abstract_batch.items()},
                                 sharding.replicated(mesh)),
                   out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  return jitted, abstract_batch


def make_eval_step(model, config, average: str) -> Callable:
  """`(params, batch) -> sums`: logits of every view of `[b, v, t, h, w, c]`, averaged."""
  heads = config_facts.heads(config)._asdict()
  zero_centering = fields.zero_centering(config.dataset_configs)

  def eval_fn(params, batch):
    inputs = pixels.model_input(batch["inputs"], zero_centering)
    if inputs.ndim == 5:  # one view (validation)
      inputs = inputs[:, None]
    b, v = inputs.shape[:2]
    logits = model.apply({"params": params}, inputs.reshape((b * v,) + inputs.shape[2:]),
                         train=False)
    logits = logits.reshape(b, v, -1)
    return evaluate.eval_step_metrics(logits, batch["label"], batch["batch_mask"],
                                      average=average, **heads)
  return eval_fn


def check_finite(fetched: list[tuple[int, dict]]) -> None:
  """Stops training at the first step whose loss or parameters are not finite."""
  for step, m in fetched:
    if float(m["finite"][0]) < 1:
      raise FloatingPointError(
          f"non-finite loss or parameters at step {step} (loss={float(m['objective'][0]):.4g}, "
          f"grad_norm={float(m['grad_norm'][0]):.4g}); training stopped. The last good "
          "checkpoint is kept; lower lr_configs.base_learning_rate or set max_grad_norm.")


def mean_metrics(fetched: list[tuple[int, dict]]) -> dict[str, float]:
  """Averages per-step `(sum, count)` metrics over steps: `train_*`, `learning_rate`, ..."""
  scalars = {}
  for name in fetched[0][1]:
    if name == "finite":
      continue
    num = sum(np.asarray(m[name][0], np.float64) for _, m in fetched)
    den = sum(np.asarray(m[name][1], np.float64) for _, m in fetched)
    value = num / np.maximum(den, 1e-12)
    if np.ndim(value) == 0:
      scalars[name if name in ("learning_rate", "grad_norm") else f"train_{name}"] = float(value)
  return scalars


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       mode: str = "train_and_eval", data_fn: DataFn | None = None,
                       devices=None) -> tuple[dict, dict[str, Any]]:
  """Trains and/or evaluates as `config` says.

  Args:
    config: a Scenic-style config (already validated, `config_check.validate_config`).
    workdir: the run folder: checkpoints/, metrics.jsonl, eval_results.json,
      confusion_matrix.json, config.json, TensorBoard.
    mode: 'train', 'eval' (the newest checkpoint of `workdir`, or a released Scenic one at
      `config.eval_checkpoint_path`) or 'train_and_eval'.
    data_fn: where batches come from (tests pass a fake); default `vivit_jax.data`.
    devices: the devices to build the mesh from (default all).

  Returns:
    `(state, summary)`: the final train state and what the run reports (`step`, `wall_s`,
    `test` results, `flops_per_step`, `line`, the closing line also printed).
  """
  t_start = time.time()
  workdir = run_state.absolute(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_primary = jax.process_index() == 0
  logging.info("experiment %s (dataset %s), mode %s", config.get("experiment_name"),
               config.get("dataset_name"), mode)
  if is_primary:  # the config this run ran (tools/visualize.py's report shows it)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")

  # ------------------------------------------------------------------------- model, optimizer
  model = config_facts.model(config)
  steps_per_epoch = schedules.steps_per_epoch_of(config)
  total_steps = schedules.total_training_steps(config, steps_per_epoch) if mode != "eval" else 0
  tx, lr_fn = optim.build_optimizer(config, steps_per_epoch)

  # ------------------------------------------------------------------------- mesh
  abstract = train_state.abstract_train_state(model, tx, config_facts.input_shape(config))
  mesh, mesh_reason = train_state.make_run_mesh(config, abstract[0], devices)
  rules = sharding.logical_rules(config.get("sharding_rules"))
  logging.info("mesh %s over %d devices, %d processes (%s)", dict(mesh.shape), mesh.size,
               jax.process_count(), mesh_reason)
  proc = dict(process_index=jax.process_index(), process_count=jax.process_count())

  # ------------------------------------------------------------------------- data
  data_fn = data_fn or default_data_fn(config)
  seed = int(config.get("rng_seed", 0))
  global_batch = int(config.batch_size)
  local_eval = train_state.local_batch_size(
      int(config.get("eval_batch_size") or global_batch), mesh, "eval_batch_size")
  batch_dtypes = config_facts.batch_dtypes(config)
  prefetch = int(config.dataset_configs.get("prefetch_to_device", 2))

  # ------------------------------------------------------------------------- state, born sharded
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
  state, shardings = train_state.create_state(
      model, tx, config_facts.input_shape(config), init_rng, mesh, rules, abstract=abstract)

  # ------------------------------------------------------------------------- restore or init
  save_checkpoints = bool(config.get("checkpoint", True))
  manager = run_state.make_manager(
      workdir, max_to_keep=config.get("max_checkpoints_to_keep", 3))
  writer = metrics_lib.MetricWriter(str(workdir), is_primary=is_primary,
                                    write_summary=config.get("write_summary", True))
  # Closed on any exit, an error included: no checkpoint write or event file is left open.
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules), contextlib.closing(manager), \
      contextlib.closing(writer):
    # Resume ALWAYS wins over init_from: a run folder with checkpoints is this run's own.
    # The newest checkpoint that restores completely (damaged newer ones are set aside, named).
    if not save_checkpoints and mode != "eval":
      logging.info("config.checkpoint=False: no checkpoint is saved or resumed from (as Scenic)")
      latest = None
    else:
      latest, restored = run_state.restore_newest(manager, state, fall_back=mode != "eval")
    if latest is not None:
      logging.info("resuming from %s", manager.directory / str(latest))
      state = restored
      writer.drop_after(latest)  # steps after the checkpoint are replayed, and logged again
    elif mode == "eval" and config.get("eval_checkpoint_path"):
      params = checkpoints.load_scenic_checkpoint(config.eval_checkpoint_path)
      expected = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state["params"])
      params = checkpoints.match_params(expected, params, source=config.eval_checkpoint_path)
      state = train_state.fresh_state_from_params(params, tx, shardings)
    elif mode == "eval":
      raise ValueError(f"--mode=eval: no checkpoint in {manager.directory} and "
                       "config.eval_checkpoint_path is not set")
    elif config.get("init_from") and config.init_from.get("checkpoint_path"):
      logging.info("initialising from %s", config.init_from.checkpoint_path)
      params = checkpoints.init_from_pretrained(config, jax.device_get(state["params"]))
      state = train_state.fresh_state_from_params(params, tx, shardings)
    start_step = int(jax.device_get(state["step"]))
    summary: dict[str, Any] = {"workdir": str(workdir)}

    # ----------------------------------------------------------------------- evaluation
    eval_step = jax.jit(make_eval_step(model, config, config.get("eval_average", "logits")),
                        in_shardings=(shardings["params"], None),
                        out_shardings=sharding.replicated(mesh))

    def evaluate_split(split: str, step: int) -> dict:
      """Every example of `split` exactly once; results logged and written to the workdir."""
      totals, views = None, 1
      batches = data_fn(split, local_eval, seed=seed, **proc)
      with device_feed.DeviceFeed(batches, mesh, prefetch, batch_dtypes) as feed:
        for batch in feed:
          views = batch["inputs"].shape[1] if batch["inputs"].ndim == 6 else 1
          sums = jax.device_get(eval_step(state["params"], batch))
          totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
      if totals is None:
        raise ValueError(f"the {split} split gave no batches")
      results = evaluate.summarize(totals)
      prefix = "test" if split == "test" else "valid"
      writer.write_scalars(step, {f"{prefix}_{k}": float(v) for k, v in results.items()
                                  if v is not None and np.ndim(v) == 0})
      if is_primary:
        evaluate.write_eval_results(str(workdir), results, split=split, num_views=views,
                                    step=step)
        evaluate.write_class_results(str(workdir), totals, split=split, step=step)
      return dict(results, num_views=views)

    if mode != "eval" and start_step < total_steps:
      # --------------------------------------------------------------------- the step
      train_step, abstract_batch = jit_train_step(config, model, tx, lr_fn, shardings, mesh)
      train_step = train_step.lower(state, abstract_batch, train_rng).compile()
      if is_primary:
        summary["flops_per_step"] = _log_overview(state["params"], train_step, global_batch,
                                                  mesh.size)

      # --------------------------------------------------------------------- the loop
      log_every = int(config.get("log_summary_steps") or 100)
      eval_every = int(config.get("log_eval_steps") or 0)
      ckpt_every = int(config.get("checkpoint_steps") or 0) if save_checkpoints else 0
      profile = (start_step + 2, start_step + 2 + PROFILE_STEPS) if config.get("xprof") else None
      local_train = train_state.local_batch_size(global_batch, mesh, "batch_size")
      feed = device_feed.DeviceFeed(
          data_fn("train", local_train, seed=seed, start_step=start_step, **proc), mesh,
          prefetch, batch_dtypes)
      sigterm = run_state.SigtermFlag()
      pending: list[tuple[int, dict]] = []  # metrics still on the device
      clock = {"t": time.perf_counter(), "step": start_step, "wait": 0.0}

      def log_metrics(fetched: list[tuple[int, dict]]) -> None:
        """One line per logged step (and one metrics.jsonl record): averages since the last."""
        step = fetched[-1][0]
        now = time.perf_counter()
        dt = max(now - clock["t"], 1e-9)
        steps_per_sec = (step - clock["step"]) / dt
        scalars = mean_metrics(fetched)
        scalars.update(steps_per_sec=steps_per_sec, clips_per_sec=steps_per_sec * global_batch,
                       data_wait_fraction=clock["wait"] / dt)
        writer.write_scalars(step, scalars)
        eta = (total_steps - step) / max(steps_per_sec, 1e-9)
        logging.info("step %d/%d: loss %.4f, lr %.3g, %.2f steps/s, %.1f clips/s, %.0f%% "
                     "devices idle for data, ETA %s", step, total_steps,
                     scalars.get("train_loss", float("nan")), scalars["learning_rate"],
                     steps_per_sec, steps_per_sec * global_batch, 100 * clock["wait"] / dt,
                     time.strftime("%H:%M:%S", time.gmtime(eta)))
        clock.update(t=now, step=step, wait=0.0)

      @contextlib.contextmanager
      def paused():
        """Time spent saving or evaluating is left out of the logged rates."""
        t0 = time.perf_counter()
        yield
        clock["t"] += time.perf_counter() - t0

      logging.info("training steps %d → %d", start_step, total_steps)
      try:
        for step in range(start_step + 1, total_steps + 1):
          if profile and step == profile[0]:
            jax.profiler.start_trace(str(workdir / "profile"))
          # Counted only while the devices have no step left to run: see device_feed.py.
          batch, idle = feed.next_batch(lambda: not state["step"].is_ready())
          clock["wait"] += idle
          state, step_metrics = train_step(state, batch, train_rng)
          pending.append((step, step_metrics))
          if profile and step == profile[1] - 1:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            logging.info("config.xprof: steps %d-%d traced into %s", *profile,
                         workdir / "profile")
          last = step == total_steps
          preempted = sigterm.reached(step)
          save = (ckpt_every and step % ckpt_every == 0) or (save_checkpoints and
                                                             (last or preempted))
          if step % log_every == 0 or last or save:
            fetched, pending = jax.device_get(pending), []
            check_finite(fetched)  # before a checkpoint can keep bad parameters
            if step % log_every == 0 or last:
              log_metrics(fetched)
          if save:
            with paused():
              run_state.save(manager, step, state, force=True)
          if eval_every and step % eval_every == 0 and not last:
            with paused():
              evaluate_split("validation", step)
          if preempted:
            manager.wait_until_finished()
            raise SystemExit(f"stopped by SIGTERM at step {step}; "
                             + ("checkpoint saved, rerun to resume" if save_checkpoints
                                else "config.checkpoint=False: nothing saved"))
      finally:
        feed.close()
        manager.wait_until_finished()  # never leave a half-written newest checkpoint behind
        sigterm.restore_handler()

    # ----------------------------------------------------------------------- test
    if mode != "train":
      summary["test"] = evaluate_split("test", int(jax.device_get(state["step"])))

    manager.wait_until_finished()
  summary.update(step=int(jax.device_get(state["step"])), wall_s=time.time() - t_start)
  summary["line"] = _summary_line(summary)
  if is_primary:
    print(summary["line"], flush=True)
  return state, summary


def _log_overview(params, compiled_step, global_batch: int, num_devices: int) -> float:
  """Logs the parameter table and the step's FLOPs (XLA cost analysis); returns FLOPs/step."""
  logging.info("parameters:\n%s",
               parameter_overview.get_parameter_overview(params, include_stats=False))
  flops = step_flops(compiled_step, num_devices)
  logging.info("train step: %.3g FLOPs per step in total (%d devices), %.3g per clip",
               flops, num_devices, flops / max(global_batch, 1))
  return flops


def step_flops(compiled_step, num_devices: int) -> float:
  """FLOPs of one call of a compiled SPMD step, over all devices (XLA's cost analysis)."""
  cost = compiled_step.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  # XLA analyses the per-device (SPMD-partitioned) program; the step's total is N times that.
  return float((cost or {}).get("flops", float("nan"))) * num_devices


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
