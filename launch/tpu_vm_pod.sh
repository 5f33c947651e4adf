#!/usr/bin/env bash
# A TPU VM pod slice: the same command on every host; jax.distributed.initialize() finds the
# coordinator and process ids itself. WORKDIR must be shared by all hosts (a gs:// bucket).
#   launch/tpu_vm_pod.sh TPU_NAME ZONE configs/k400_fe.py gs://bucket/runs/k400 [FLAGS...]
set -euo pipefail
TPU=${1:?usage: tpu_vm_pod.sh TPU_NAME ZONE CONFIG WORKDIR [FLAGS...]}
ZONE=${2:?}
CONFIG=${3:?}
WORKDIR=${4:?}
shift 4
REPO_DIR=${REPO_DIR:-\~/vivit_jax}  # where the repository is checked out on every host
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  cd $REPO_DIR && python3 -m vivit_jax.main --config=$CONFIG --workdir=$WORKDIR $*"
