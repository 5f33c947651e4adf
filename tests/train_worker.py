"""A training process for the multi-process and crash tests (run as a script by the tests).

Usage: python tests/train_worker.py WORKDIR STEPS [--process_id=I --num_processes=N --port=P]
       [--slow_data=SECONDS] [--synthetic_device] [--kill_in_save=STEP [--kill_point=POINT]]
       [--mesh_data=N]

--kill_in_save: SIGKILL itself while the checkpoint of STEP is saved, at POINT: `started` (the
async write was started), `arrays_written` (the arrays are written, not yet finalised),
`before_rename` (finalised, the temporary folder not yet renamed), `after_rename` (renamed: the
step is complete on disk).
"""
import argparse
import logging
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("workdir")
  parser.add_argument("steps", type=int)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("--slow_data", type=float, default=0.0)
  parser.add_argument("--synthetic_device", action="store_true",
                      help="dataset_name='synthetic_device' (clips made on the devices)")
  parser.add_argument("--heartbeat_timeout", type=int, default=None)
  parser.add_argument("--kill_in_save", type=int, default=0)
  parser.add_argument("--kill_point", default="started",
                      choices=("started", "arrays_written", "before_rename", "after_rename"))
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

  import jax  # pylint: disable=g-import-not-at-top
  from vivit_jax import distributed  # pylint: disable=g-import-not-at-top
  if args.num_processes > 1:
    distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                           num_processes=args.num_processes, process_id=args.process_id,
                           heartbeat_timeout_seconds=args.heartbeat_timeout)
  import train_helpers as th  # pylint: disable=g-import-not-at-top
  from vivit_jax import run_state, train  # pylint: disable=g-import-not-at-top

  if args.kill_in_save:
    _kill_in_save(args.kill_in_save, args.kill_point, run_state)

  def data_fn(*a, **kw):
    for batch in th.fake_data_fn(*a, **kw):
      time.sleep(args.slow_data)
      yield batch

  config = th.tiny_config(num_training_steps=args.steps, checkpoint_steps=2)
  if args.synthetic_device:
    config.dataset_name = "synthetic_device"
    data_fn = None  # the trainer's own: data.synthetic_device
  with distributed.stop_if_a_process_dies():
    train.train_and_evaluate(config, args.workdir, mode="train", data_fn=data_fn)
  print("processes", jax.process_count(), "devices", jax.device_count(), flush=True)


def _kill_in_save(step: int, point: str, run_state) -> None:
  """Patches the save path so that the process SIGKILLs itself at `point` of saving `step`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from orbax.checkpoint._src.path import async_path  # pylint: disable=g-import-not-at-top

  def die():
    os.kill(os.getpid(), signal.SIGKILL)

  real_save = run_state.save

  def save(manager, s, state, **kw):
    real_save(manager, s, state, **kw)
    if s == step and point == "started":  # the async write has started, not finished
      die()
  run_state.save = save

  real_finalize = ocp.CompositeCheckpointHandler.finalize

  def finalize(self, directory):
    # `directory` is the step's temporary folder, `<step>.orbax-checkpoint-tmp...`.
    if directory.name.split(".")[0] == str(step) and point == "arrays_written":
      die()
    return real_finalize(self, directory)
  ocp.CompositeCheckpointHandler.finalize = finalize

  real_rename = async_path.rename

  async def rename(src, dst):
    final = getattr(dst, "name", "") == str(step)
    if final and point == "before_rename":
      die()
    result = await real_rename(src, dst)
    if final and point == "after_rename":
      die()
    return result
  async_path.rename = rename


if __name__ == "__main__":
  main()
