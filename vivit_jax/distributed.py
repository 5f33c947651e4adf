"""Multi-host start-up: `jax.distributed.initialize`, auto-detected or from explicit flags.

On a TPU VM pod, a SLURM allocation or other clusters JAX knows, `initialize()` finds the
coordinator, process count and index itself. Elsewhere (plain GPU hosts, tests on one machine)
pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on every host.
On CPU, cross-process collectives go through gloo.

A process that dies (killed, crashed, its host lost) never leaves the others hanging:
  * a collective with it fails at once on the others (its connections close), and
    `stop_if_a_process_dies` turns that into one line and exit code 1 (without waiting for
    JAX's shutdown barrier);
  * the coordination service notices missing heartbeats after `heartbeat_timeout_seconds`
    (a hung host, a lost network) and JAX terminates every other process with "Terminating
    process because the JAX distributed service detected fatal errors";
  * if process 0 (the coordinator) dies, the others terminate as soon as they poll it.
Restarting every process resumes from the newest checkpoint. Settings per cluster:
docs/training.md.
"""
import contextlib
import logging
import os
import sys

import jax

EXIT_PROCESS_LOST = 1  # a failure during the work, in main's exit codes (2: bad input)

# Environment variables by which clusters announce a multi-process job.
_CLUSTER_ENV = ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
                "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               heartbeat_timeout_seconds: int | None = None) -> None:
  """Joins the job's processes; a no-op for a single process with nothing to detect.

  Explicit arguments win; without them, a cluster environment (SLURM with more than one task,
  a TPU pod, Open MPI, `JAX_COORDINATOR_ADDRESS`) triggers JAX's own auto-detection.
  `heartbeat_timeout_seconds` (JAX's default: 100): a process that sent no heartbeat for this
  long is declared dead, and every other process stops with an error (docs/training.md).
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
  if heartbeat_timeout_seconds is not None:
    kwargs["heartbeat_timeout_seconds"] = int(heartbeat_timeout_seconds)
  if explicit:
    kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes,
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


@contextlib.contextmanager
def stop_if_a_process_dies():
  """Ends this process with one line and `EXIT_PROCESS_LOST` when a cross-process operation
  fails in a multi-process run (another process died); single-process errors pass through."""
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
    message = (f"vivit_jax: stopped: process {jax.process_index()} of {jax.process_count()}: a "
               f"cross-process operation failed ({first[:300]}); another process has probably "
               "died. Restart every process to resume from the newest checkpoint.")
    logging.error("%s", message)
    print(message, file=sys.stderr, flush=True)
    # Not sys.exit: JAX's exit handler would wait for the dead process at a shutdown barrier.
    os._exit(EXIT_PROCESS_LOST)  # pylint: disable=protected-access
