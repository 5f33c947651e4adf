#!/usr/bin/env bash
# A TPU VM (v4-8, v5e-8: one host) or a pod slice (v4-32: four hosts): the same command on every
# worker at once; jax.distributed.initialize() finds the coordinator and process ids itself.
#
#   launch/tpu_vm_pod.sh [OPTIONS] TPU_NAME ZONE CONFIG WORKDIR [MAIN_FLAGS...]
#
#   --setup      first ship this checkout's committed code (git archive HEAD) to every worker
#                and `pip install -e ".[tpu]"` there
#   --dry_run    print the gcloud commands and run nothing
#   --project=P  the Google Cloud project (default: gcloud's configured one)
#
# WORKDIR must be shared by all hosts: a gs:// path (checkpoints, metrics, results).
# Everything after WORKDIR goes to `python -m vivit_jax.main` (e.g. --config.batch_size=256,
# or --dry_run to print the devices, mesh and memory the trainer sees on the pod).
# Environment: VIVIT_DATA_DIR (the datasets, e.g. gs://bucket/data; exported on every worker),
# REPO_DIR (checkout on the workers, default ~/vivit_jax), PYTHON (default python3).
set -euo pipefail

usage() {
  sed -n '5,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

DRY_RUN=0
SETUP=0
PROJECT_FLAG=()
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --dry_run) DRY_RUN=1 ;;
    --setup) SETUP=1 ;;
    --project=*) PROJECT_FLAG=("--project=${1#--project=}") ;;
    --help|-h) usage ;;
    *) echo "tpu_vm_pod.sh: unknown option $1 (options come before TPU_NAME)" >&2; usage ;;
  esac
  shift
done
[[ $# -ge 4 ]] || { echo "tpu_vm_pod.sh: TPU_NAME ZONE CONFIG WORKDIR are required" >&2; usage; }
TPU=$1
ZONE=$2
CONFIG=$3
WORKDIR=$4
shift 4
if [[ $WORKDIR != gs://* ]]; then
  echo "tpu_vm_pod.sh: warning: WORKDIR=$WORKDIR is not a gs:// path; every host of a pod" \
       "must see the same folder" >&2
fi
REPO_DIR=${REPO_DIR:-'~/vivit_jax'}  # expanded by the workers' shell
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)

q() {  # one word quoted for a shell, readably: bare when safe, else in single quotes
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,~-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

# The pod environment on every worker: where the data is, unbuffered logs, quiet TensorFlow
# (the input pipeline's tf.data runs on the host CPU; it must not claim the TPU).
ENV="export VIVIT_DATA_DIR=$(q "${VIVIT_DATA_DIR:-gs://YOUR_BUCKET/data}")"
ENV+=" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2"
TRAIN="cd $REPO_DIR && $ENV && $PYTHON -m vivit_jax.main $(q "--config=$CONFIG")"
TRAIN+=" $(q "--workdir=$WORKDIR")"
for flag in "$@"; do TRAIN+=" $(q "$flag")"; done

SSH=(gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all)
SCP=(gcloud compute tpus tpu-vm scp "${PROJECT_FLAG[@]}" --zone="$ZONE" --worker=all)
ARCHIVE=/tmp/vivit_jax_src.tar.gz
INSTALL="mkdir -p $REPO_DIR && tar -xzf ~/vivit_jax_src.tar.gz -C $REPO_DIR"
INSTALL+=" && cd $REPO_DIR && $PYTHON -m pip install -q -e '.[tpu]'"

show() {  # prints a command so that it can be pasted into a shell
  local line=" "
  for word in "$@"; do line+=" $(q "$word")"; done
  echo "$line"
}

echo "vivit_jax on TPU $TPU (zone $ZONE): every worker of the slice runs"
echo "  $TRAIN"
echo "commands:"
if [[ $SETUP == 1 ]]; then
  show git -C "$HERE" archive --format=tar.gz -o "$ARCHIVE" HEAD
  show "${SCP[@]}" "$ARCHIVE" "$TPU:~/vivit_jax_src.tar.gz"
  show "${SSH[@]}" --command="$INSTALL"
fi
show "${SSH[@]}" --command="$TRAIN"
[[ $DRY_RUN == 1 ]] && exit 0

if [[ $SETUP == 1 ]]; then
  git -C "$HERE" archive --format=tar.gz -o "$ARCHIVE" HEAD
  "${SCP[@]}" "$ARCHIVE" "$TPU:~/vivit_jax_src.tar.gz"
  "${SSH[@]}" --command="$INSTALL"
fi
exec "${SSH[@]}" --command="$TRAIN"
