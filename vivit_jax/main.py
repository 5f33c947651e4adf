r"""Train and/or evaluate a ViViT: `python -m vivit_jax.main --config=CONFIG --workdir=DIR`.

  python -m vivit_jax.main --config=configs/synthetic.py --workdir=runs/demo
  python -m vivit_jax.main --config=configs/k400_fe.py:runlocal --workdir=/tmp/smoke
  python -m vivit_jax.main --config=configs/k400_fe.py --workdir=runs/k400 \
      --config.batch_size=64 --config.lr_configs.base_learning_rate=0.05
  python -m vivit_jax.main --config=configs/k400_fe.py --workdir=runs/eval --mode=eval \
      --config.eval_checkpoint_path=/ckpts/vivit_k400_fe/checkpoint

A workdir that holds checkpoints is resumed from its newest one (see docs/training.md).
Several hosts: the same command on every host; TPU pods and SLURM are detected, elsewhere add
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.
"""
import logging as py_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ("train", "eval", "train_and_eval")

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file; `path.py:arg` passes `arg` to its get_config.",
    lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, results.")
_MODE = flags.DEFINE_enum("mode", "train_and_eval", MODES, "What to run.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "HOST:PORT of process 0 (multi-host without auto-detection).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_seconds", None,
    "Multi-process: a process silent this long is declared dead and the others stop "
    "(JAX's default: 100). See docs/training.md.")


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vivit_jax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         heartbeat_timeout_seconds=_HEARTBEAT.value)
  import jax  # pylint: disable=g-import-not-at-top
  from vivit_jax import config_check, train  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # one voice in the logs
  config = _CONFIG.value
  config_check.validate_config(config)
  try:
    with distributed.stop_if_a_process_dies():
      train.train_and_evaluate(config, _WORKDIR.value, mode=_MODE.value)
  except FloatingPointError as e:
    logging.error("%s", e)
    print(f"vivit_jax stopped: {e}", file=sys.stderr, flush=True)
    return 3
  return 0


class _QuietLibraries(py_logging.Filter):
  """Drops the INFO chatter of Orbax and TensorStore (one line per file written)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    noisy = "/orbax/" in record.pathname or "/tensorstore/" in record.pathname
    return record.levelno >= py_logging.WARNING or not noisy


def run() -> None:
  flags.mark_flags_as_required(["config", "workdir"])
  py_logging.getLogger("absl").setLevel(py_logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
