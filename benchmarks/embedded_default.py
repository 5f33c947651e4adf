r"""Times the embedded default end to end: README's first command, from an empty data folder.

  python benchmarks/embedded_default.py [--workdir=runs/demo_bench] [--keep_data]

Runs `python -m vivit_jax.main --config=configs/synthetic.py --workdir=WORKDIR` with
`VIVIT_DATA_DIR` pointing at a fresh temporary folder (so the synthetic set is generated, as on
a first run), and prints the wall time, the test accuracy from `eval_results.json`, the
summary line and the machine's load average before and after (the target: >= 95% top-1 in
<= 10 minutes on a 2-core CPU).
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load() -> str:
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default=str(REPO / "runs" / "demo_bench"))
  parser.add_argument("--keep_data", action="store_true", help="keep the generated dataset")
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir)
  if workdir.exists():
    shutil.rmtree(workdir)  # a leftover run would be resumed, not timed
  data_dir = tempfile.mkdtemp(prefix="vivit_bench_data_")
  env = dict(os.environ, VIVIT_DATA_DIR=data_dir, PYTHONPATH=str(REPO))
  load_before = _load()
  start = time.time()
  proc = subprocess.run(
      [sys.executable, "-m", "vivit_jax.main", "--config=configs/synthetic.py",
       f"--workdir={workdir}"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
  wall = time.time() - start
  load_after = _load()
  if not args.keep_data:
    shutil.rmtree(data_dir, ignore_errors=True)
  if proc.returncode:
    print(proc.stderr[-3000:], file=sys.stderr)
    return proc.returncode
  results = json.loads((workdir / "eval_results.json").read_text())
  print(f"summary: {proc.stdout.strip().splitlines()[-1]}")
  print(f"wall time {wall:.0f} s ({wall / 60:.1f} min, dataset generation included); "
        f"test top1 {100 * results['top1']:.2f}%, top5 {100 * results['top5']:.2f}%, "
        f"mean class accuracy {100 * results['mean_class_accuracy']:.2f}% on "
        f"{results['num_videos']} videos; load average before {load_before}, after {load_after}; "
        f"{os.cpu_count()} CPUs")
  return 0


if __name__ == "__main__":
  sys.exit(main())
