#!/usr/bin/env bash
# One machine (CPU, one GPU, or a single TPU VM host): all local devices, one process.
#   launch/single_host.sh configs/k400_fe.py runs/k400 [--config.batch_size=64 ...]
set -euo pipefail
CONFIG=${1:?usage: single_host.sh CONFIG WORKDIR [FLAGS...]}
WORKDIR=${2:?usage: single_host.sh CONFIG WORKDIR [FLAGS...]}
shift 2
cd "$(dirname "$0")/.."
exec python -m vivit_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
