r"""Train and/or evaluate a ViViT: `python -m vivit_jax.main --config=CONFIG --workdir=DIR`.

  python -m vivit_jax.main --config=configs/synthetic.py --workdir=runs/demo
  python -m vivit_jax.main --config=configs/k400_fe.py:runlocal --workdir=/tmp/smoke
  python -m vivit_jax.main --config=configs/k400_fe.py --workdir=runs/k400 \
      --config.init_from.checkpoint_path=/ckpts/vit_b16 \
      --config.batch_size=64 --config.lr_configs.base_learning_rate=0.05
  python -m vivit_jax.main --config=configs/k400_fe.py --workdir=runs/eval --mode=eval \
      --config.eval_checkpoint_path=/ckpts/vivit_k400_fe/checkpoint
  python -m vivit_jax.main --config=configs/k400_fe.py --dry_run      # what it would run here
  python -m vivit_jax.main --config=configs/k400_fe.py --workdir=/tmp/speed --mode=train \
      --config.dataset_name=synthetic_device --config.init_from.checkpoint_path=None \
      --config.num_training_steps=300 --config.lr_configs.warmup_epochs=0   # trainer's step rate

Conventions:
  --config.FIELD=VALUE overrides any field of the config file.
  A path field (init_from.checkpoint_path, eval_checkpoint_path, ...) given as None, none or
  an empty value is unset: `--config.init_from.checkpoint_path=None` trains from scratch.
  --config.num_training_steps=N or --config.num_training_epochs=E sets the run length; the
  one given wins over the config file's.
  A workdir that holds checkpoints is resumed from its newest one (docs/training.md).
  Bad input (config, flags, paths, data, checkpoints) ends with a few lines saying what is
  wrong and how to fix it, exit code 2; a failure during the work exits with 1; --verbose
  adds the traceback.
Several hosts: the same command on every host; TPU pods and SLURM are detected, elsewhere add
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.
"""
import logging as py_logging
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from vivit_jax.errors import UserInputError

MODES = ("train", "eval", "train_and_eval")
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file; `path.py:arg` passes `arg` to its get_config.",
    lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, results.")
_MODE = flags.DEFINE_enum("mode", "train_and_eval", MODES, "What to run.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of an error.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "HOST:PORT of process 0 (multi-host without auto-detection).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print devices, mesh, attention path per layer, params, FLOPs, batch "
    "and memory of the compiled train step, then exit: no training, no data, no --workdir.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_seconds", None,
    "Multi-process: a process silent this long is declared dead and the others stop "
    "(JAX's default: 100). See docs/training.md.")


def _stop(code: int, what: str, error: BaseException) -> int:
  """Prints `vivit_jax: <what>: <message>` (the traceback with --verbose); returns `code`."""
  if _VERBOSE.value:
    traceback.print_exception(error, file=sys.stderr)
  hint = "" if _VERBOSE.value else "\n(--verbose shows the traceback)"
  print(f"vivit_jax: {what}: {error}{hint}", file=sys.stderr, flush=True)
  return code


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vivit_jax import config_check, config_lib, preflight  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  try:
    config_lib.resolve_overrides(config, config_flags.get_override_values(flags.FLAGS["config"]))
    config_check.validate_config(config)
    if not _DRY_RUN.value:
      if not _WORKDIR.value:
        raise UserInputError("--workdir is required (except with --dry_run)")
      preflight.check_paths(config, _WORKDIR.value, _MODE.value)
  except ValueError as e:  # the config checker's errors are all about the user's input
    return _stop(EXIT_BAD_INPUT, "bad input", e)

  from vivit_jax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         heartbeat_timeout_seconds=_HEARTBEAT.value)
  import jax  # pylint: disable=g-import-not-at-top
  from vivit_jax import run_state, train  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # one voice in the logs
  if _DRY_RUN.value:
    from vivit_jax import dry_run  # pylint: disable=g-import-not-at-top
    dry_run.print_report(config)
    return 0
  try:
    with distributed.stop_if_a_process_dies():
      train.train_and_evaluate(config, _WORKDIR.value, mode=_MODE.value)
  except UserInputError as e:
    return _stop(EXIT_BAD_INPUT, "bad input", e)
  except (FloatingPointError, run_state.CheckpointSaveError) as e:
    logging.error("%s", e)
    return _stop(EXIT_FAILED, "stopped", e)
  return 0


class _QuietLibraries(py_logging.Filter):
  """Drops the INFO chatter of Orbax and TensorStore (one line per file written)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    noisy = "/orbax/" in record.pathname or "/tensorstore/" in record.pathname
    return record.levelno >= py_logging.WARNING or not noisy


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a bad flag, override or config file reported as bad input (exit 2)."""
  try:
    args = flags.FLAGS(argv)
    if config := flags.FLAGS["config"].value:
      config.keys()  # a config file that failed to load raises only when used
    return args
  except SystemExit:
    if set(argv) & {"--help", "-h", "-?", "--helpshort", "--helpfull"}:
      sys.exit(0)  # absl exits with 1 after printing the help that was asked for
    raise
  except (flags.Error, OSError, AttributeError, KeyError) as e:
    # ml_collections reports an unknown `--config.x` as AttributeError/KeyError, a missing
    # config file as OSError, an error inside get_config with its traceback as text.
    message = str(e).strip().strip("'\"").replace("\\n", " ").replace("\\'", "'")
    if isinstance(e, (AttributeError, KeyError)):
      given = [a.split("=")[0] for a in argv if a.startswith("--config.")]
      message = f"an override names no field of the config ({', '.join(given)}): {message}"
    elif "Traceback (most recent call last)" in message or "[Errno" in message:
      lines = [line.strip() for line in message.splitlines() if line.strip()]
      message = f"{lines[0]} {lines[-1]}"
    print(f"vivit_jax: bad input: {message}\n(`python -m vivit_jax.main --help` lists the flags "
          "and conventions)", file=sys.stderr, flush=True)
    sys.exit(EXIT_BAD_INPUT)


def run() -> None:
  flags.mark_flags_as_required(["config"])
  py_logging.getLogger("absl").setLevel(py_logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
