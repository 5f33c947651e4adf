"""Multi-host start-up: `jax.distributed.initialize`, auto-detected or from explicit flags.

On a TPU VM pod, a SLURM allocation or other clusters JAX knows, `initialize()` finds the
coordinator, process count and index itself. Elsewhere (plain GPU hosts, tests on one machine)
pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on every host.
On CPU, cross-process collectives go through gloo.
"""
import logging
import os

import jax

# Environment variables by which clusters announce a multi-process job.
_CLUSTER_ENV = ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
                "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the job's processes; a no-op for a single process with nothing to detect.

  Explicit arguments win; without them, a cluster environment (SLURM with more than one task,
  a TPU pod, Open MPI, `JAX_COORDINATOR_ADDRESS`) triggers JAX's own auto-detection.
  """
  explicit = coordinator_address is not None or (num_processes or 1) > 1
  if explicit:
    if coordinator_address is None or num_processes is None or process_id is None:
      raise ValueError("--coordinator_address, --num_processes and --process_id must be given "
                       f"together (got {coordinator_address!r}, {num_processes!r}, "
                       f"{process_id!r})")
  elif not _in_cluster():
    return
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if explicit:
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  jax.distributed.initialize(**kwargs)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _in_cluster() -> bool:
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  if len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1:
    return True
  if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return True
  return bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS")
              or os.environ.get("JAX_COORDINATOR_ADDRESS"))
