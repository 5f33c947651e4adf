"""`python -m vivit_jax.main --config=CONFIG --dry_run`: what the trainer would run, without
training.

Builds the model, optimizer, mesh, shardings and jitted train step with `train.py`'s own
functions, compiles the step for abstract (never allocated) state and batch, and prints the
devices, the mesh and why it has that shape, the attention path of every layer, parameters,
FLOPs per step, the batch per device and per host, and the compiled step's memory per device.
It reads no data and writes nothing, so it runs on any machine; what it reports is for the
machine it runs on (on a TPU VM: the TPU's attention kernel and memory).
"""
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from vivit_jax import config_facts, optim, schedules, sharding, train, train_state
from vivit_jax.models import attention, remat


def dry_run(config: ml_collections.ConfigDict, devices=None) -> dict[str, Any]:
  """Compiles the train step of `config` for `devices` (default all) and returns its report.

  The report's `lines` are what `print_report` prints.
  """
  model = config_facts.model(config)
  tx, lr_fn = optim.build_optimizer(config, schedules.steps_per_epoch_of(config))
  abstract, boxed = train_state.abstract_train_state(model, tx, config_facts.input_shape(config))
  mesh, mesh_reason = train_state.make_run_mesh(config, abstract, devices)
  rules = sharding.logical_rules(config.get("sharding_rules"))
  shardings = train_state.state_shardings(abstract, boxed, mesh, rules)
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       abstract, shardings)
  global_batch = int(config.batch_size)
  train_state.local_batch_size(global_batch, mesh, "batch_size")  # raises if it does not split
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    jitted, batch = train.jit_train_step(config, model, tx, lr_fn, shardings, mesh)
    with attention.record_paths() as paths:
      lowered = jitted.lower(state, batch, jax.random.PRNGKey(0))
    compiled = lowered.compile()
    if any(p.kernel == "explicit" for _, p in paths):  # evaluation has no attention dropout
      clip = jax.ShapeDtypeStruct((1,) + config_facts.input_shape(config), np.float32)
      with attention.record_paths() as eval_paths:
        jax.eval_shape(lambda p, x: model.apply({"params": p}, x, train=False),
                       abstract["params"], clip)
      paths += [(f"{site} [eval]", p) for site, p in eval_paths]

  devs = mesh.devices.flatten()
  memory = compiled.memory_analysis()
  per_device = global_batch // sharding.data_parallel_size(mesh)
  clips = jax.ShapeDtypeStruct((per_device,) + config_facts.input_shape(config), np.float32)
  report = {
      "devices": len(devs), "platform": devs[0].platform, "device_kind": devs[0].device_kind,
      "processes": len({d.process_index for d in devs}),
      "mesh": {k: int(v) for k, v in mesh.shape.items()}, "mesh_reason": mesh_reason,
      "attention": _unique(paths),
      "params": int(sum(x.size for x in jax.tree.leaves(abstract["params"]))),
      "state_bytes_per_device": _bytes_per_device(state),
      "flops_per_step": train.step_flops(compiled, mesh.size),
      "global_batch": global_batch,
      "batch_per_device": per_device,
      "remat": remat.remat_policy_name(config.model.get("remat")),
      # Residuals of the forward pass for the backward one, parameters included.
      "activation_bytes_per_device": remat.model_activation_bytes(model, abstract["params"],
                                                                  clips),
      "batch_per_host": global_batch // max(len({d.process_index for d in devs}), 1),
      "memory": memory_summary(memory),
      "device_memory_bytes": sharding.device_memory_bytes(devs[0]),
  }
  report["lines"] = _lines(report)
  return report


def print_report(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`--dry_run`: prints the report (process 0 only) and returns it."""
  report = dry_run(config)
  if jax.process_index() == 0:
    print("\n".join(report["lines"]), flush=True)
  return report


def _unique(paths) -> list[tuple[str, str]]:
  """(site, path) in trace order, each site once (remat traces a block twice)."""
  seen, out = set(), []
  for site, path in paths:
    if site not in seen:
      seen.add(site)
      out.append((site, path.describe()))
  return out


def _bytes_per_device(tree) -> int:
  """Bytes of `tree`'s abstract arrays held by one device under their shardings."""
  return int(sum(np.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                 for x in jax.tree.leaves(tree)))


def memory_summary(analysis) -> dict[str, int]:
  """The compiled step's memory per device; `peak` = arguments + outputs - aliased + temps."""
  if analysis is None:
    return {}
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
            "temp_size_in_bytes", "generated_code_size_in_bytes")
  out = {f.replace("_size_in_bytes", ""): int(getattr(analysis, f, 0) or 0) for f in fields}
  out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  return out


def _lines(r: dict) -> list[str]:
  mesh = " x ".join(f"{k}={v}" for k, v in r["mesh"].items())
  lines = [
      "vivit_jax dry run (nothing is trained, no data is read)",
      f"devices: {r['devices']} x {r['device_kind']} ({r['platform']}), "
      f"{r['processes']} process(es)",
      f"mesh: {mesh} ({r['mesh_reason']})",
      "attention path per layer:",
      *[f"  {site}: {path}" for site, path in r["attention"]],
      f"params: {r['params']:,} ({r['params'] / 1e6:.2f}M); params + optimizer state per device "
      f"{sharding.format_bytes(r['state_bytes_per_device'])}",
      f"FLOPs per step: {r['flops_per_step']:.4g} in total, "
      f"{r['flops_per_step'] / max(r['global_batch'], 1):.4g} per clip",
      f"batch: {r['global_batch']} global, {r['batch_per_device']} per device, "
      f"{r['batch_per_host']} per host",
  ]
  m, size = r["memory"], sharding.format_bytes
  lines.append(f"kept for the backward pass (model.remat={r['remat']!r}): "
               f"{size(r['activation_bytes_per_device'])} per device")
  if m:
    lines.append(
        f"memory per device (compiled step): peak {size(m['peak'])} = arguments "
        f"{size(m['argument'])} + outputs {size(m['output'])} - donated {size(m['alias'])} "
        f"+ temporaries {size(m['temp'])}; device memory {size(r['device_memory_bytes'])}")
  else:
    lines.append("memory per device: not reported by this backend")
  return lines
