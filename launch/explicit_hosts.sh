#!/usr/bin/env bash
# Hosts JAX cannot detect (plain GPU machines, or several processes on one machine for
# testing): run this on every host with its own PROCESS_ID.
#   launch/explicit_hosts.sh 10.0.0.1:12345 2 0 configs/k400_fe.py /shared/runs/k400   # host 0
#   launch/explicit_hosts.sh 10.0.0.1:12345 2 1 configs/k400_fe.py /shared/runs/k400   # host 1
# On CPU the processes exchange data through gloo.
set -euo pipefail
COORD=${1:?usage: explicit_hosts.sh COORDINATOR:PORT NUM_PROCESSES PROCESS_ID CONFIG WORKDIR [FLAGS...]}
NUM=${2:?}
ID=${3:?}
CONFIG=${4:?}
WORKDIR=${5:?}
shift 5
cd "$(dirname "$0")/.."
exec python -m vivit_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  --coordinator_address="$COORD" --num_processes="$NUM" --process_id="$ID" "$@"
