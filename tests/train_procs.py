"""Launching tests/train_worker.py processes (2-process runs, crash tests)."""
import os
import pathlib
import socket
import subprocess
import sys
import tempfile

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
# One XLA compilation cache for every worker of every test (same programs, same machine).
JIT_CACHE = pathlib.Path(tempfile.gettempdir()) / "vivit_jax_test_jit_cache"


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def worker_env() -> dict:
  env = dict(os.environ)
  env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_COMPILATION_CACHE_DIR=str(JIT_CACHE),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return env


def start(workdir, steps, *args, log=None) -> subprocess.Popen:
  """Starts one worker; its output goes to `log` (default WORKDIR.0.log)."""
  log = open(log or f"{workdir}.0.log", "a")  # pylint: disable=consider-using-with
  return subprocess.Popen(
      [sys.executable, str(TESTS / "train_worker.py"), str(workdir), str(steps), *args],
      env=worker_env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def run(workdir, steps, *args, processes: int = 1, timeout: float = 240) -> None:
  """Runs the worker as `processes` cooperating processes; fails with their logs."""
  port = free_port()
  extra = [f"--num_processes={processes}", f"--port={port}"] if processes > 1 else []
  procs = [start(workdir, steps, *args, *extra, f"--process_id={i}",
                 log=f"{workdir}.{i}.log") for i in range(processes)]
  for p in procs:
    p.wait(timeout=timeout)
  for i, p in enumerate(procs):
    if p.returncode:
      text = pathlib.Path(f"{workdir}.{i}.log").read_text()[-4000:]
      raise AssertionError(f"worker {i} exited with {p.returncode}:\n{text}")
