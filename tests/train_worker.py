"""A training process for the multi-process and crash tests (run as a script by the tests).

Usage: python tests/train_worker.py WORKDIR STEPS [--process_id=I --num_processes=N --port=P]
       [--slow_data=SECONDS] [--kill_in_save=STEP] [--mesh_data=N]
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
  parser.add_argument("--kill_in_save", type=int, default=0)
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

  import jax  # pylint: disable=g-import-not-at-top
  if args.num_processes > 1:
    from vivit_jax import distributed  # pylint: disable=g-import-not-at-top
    distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                           num_processes=args.num_processes, process_id=args.process_id)
  import train_helpers as th  # pylint: disable=g-import-not-at-top
  from vivit_jax import checkpointing, train  # pylint: disable=g-import-not-at-top

  if args.kill_in_save:
    real_save = checkpointing.save

    def save_then_die(manager, step, state, **kw):
      real_save(manager, step, state, **kw)
      if step == args.kill_in_save:  # the async write has started, not finished
        os.kill(os.getpid(), signal.SIGKILL)
    checkpointing.save = save_then_die

  def data_fn(*a, **kw):
    for batch in th.fake_data_fn(*a, **kw):
      time.sleep(args.slow_data)
      yield batch

  config = th.tiny_config(num_training_steps=args.steps, checkpoint_steps=2)
  train.train_and_evaluate(config, args.workdir, mode="train", data_fn=data_fn)
  print("processes", jax.process_count(), "devices", jax.device_count(), flush=True)


if __name__ == "__main__":
  main()
