"""launch/tpu_vm_pod.sh: what it prints with --dry_run is what it runs, on every worker."""
import os
import shlex
import subprocess

from tests.train_procs import REPO

SCRIPT = REPO / "launch" / "tpu_vm_pod.sh"
ARGS = ["my-pod", "us-central2-b", "configs/k400_fe.py", "gs://my-bucket/runs/k400",
        "--config.batch_size=256", "--config.mesh=(('data', 4), ('fsdp', 4))"]
TRAIN = ("cd ~/vivit_jax && export VIVIT_DATA_DIR=gs://my-bucket/data PYTHONUNBUFFERED=1 "
         "TF_CPP_MIN_LOG_LEVEL=2 && python3 -m vivit_jax.main --config=configs/k400_fe.py "
         "--workdir=gs://my-bucket/runs/k400 --config.batch_size=256 ")


def _script(tmp_path, *args, fake_gcloud=False):
  env = dict(os.environ, VIVIT_DATA_DIR="gs://my-bucket/data")
  if fake_gcloud:  # records each call's arguments, one per line, instead of reaching Google
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(
        f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> {tmp_path}/calls\necho ---- >> '
        f'{tmp_path}/calls\n')
    (bin_dir / "gcloud").chmod(0o755)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
  return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                        text=True, timeout=60, cwd=tmp_path)


def test_dry_run_prints_the_gcloud_commands(tmp_path):
  out = _script(tmp_path, "--dry_run", "--project=my-project", *ARGS)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[0] == "vivit_jax on TPU my-pod (zone us-central2-b): every worker of the slice runs"
  assert lines[2] == "commands:" and len(lines) == 4  # no --setup: one command
  # Pasted into a shell, the printed command is exactly this argv.
  argv = shlex.split(lines[3])
  assert argv[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-pod",
                      "--zone=us-central2-b", "--project=my-project"]
  assert argv[8] == "--worker=all"
  command = argv[9].removeprefix("--command=")
  assert command.startswith(TRAIN)
  # ... and the workers' shell gives vivit_jax.main its flags back unchanged.
  assert shlex.split(command.split(" && ")[-1])[3:] == [
      "--config=configs/k400_fe.py", "--workdir=gs://my-bucket/runs/k400",
      "--config.batch_size=256", "--config.mesh=(('data', 4), ('fsdp', 4))"]
  assert not (tmp_path / "calls").exists()


def test_setup_ships_the_code_and_installs_the_tpu_extra(tmp_path):
  out = _script(tmp_path, "--dry_run", "--setup", *ARGS)
  lines = out.stdout.splitlines()[3:]
  assert shlex.split(lines[0])[:2] == ["git", "-C"] and "archive" in lines[0]
  assert shlex.split(lines[1])[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert "--worker=all" in lines[1] and "my-pod:~/vivit_jax_src.tar.gz" in lines[1]
  install = shlex.split(lines[2])[-1]
  assert install.endswith("python3 -m pip install -q -e '.[tpu]'"), install


def test_the_run_calls_gcloud_as_printed(tmp_path):
  out = _script(tmp_path, *ARGS, fake_gcloud=True)
  assert out.returncode == 0, out.stderr
  calls = (tmp_path / "calls").read_text().split("----\n")[:-1]
  assert len(calls) == 1
  printed = shlex.split(out.stdout.splitlines()[3])[1:]  # without "gcloud"
  assert calls[0].splitlines() == printed


def test_missing_arguments_and_local_workdir(tmp_path):
  out = _script(tmp_path, "--dry_run", "my-pod", "us-central2-b")
  assert out.returncode == 2
  assert "TPU_NAME ZONE CONFIG WORKDIR are required" in out.stderr and "--setup" in out.stderr
  out = _script(tmp_path, "--dry_run", "my-pod", "us-central2-b", "configs/k400_fe.py", "runs/x")
  assert out.returncode == 0 and "WORKDIR=runs/x is not a gs:// path" in out.stderr
  out = _script(tmp_path, "--dryrun", *ARGS)
  assert out.returncode == 2 and "unknown option --dryrun" in out.stderr
