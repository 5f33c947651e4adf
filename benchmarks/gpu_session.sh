#!/usr/bin/env bash
# Issue 8's GPU checks and benchmarks, for a session lent a GPU through the device tool.
#
#   bash benchmarks/gpu_session.sh wheels          # here: ml_collections + clu wheels into .whl/
#   bash benchmarks/gpu_session.sh STEP [OUT]      # on the GPU machine, from the repo root
#
# The GPU machine's python3 has jax (CUDA), flax, optax, orbax, torch, transformers, pytest and
# tensorboard but not ml_collections or clu: the device call carries `.whl` and this script
# installs them into /tmp/site first. TensorFlow is not needed (nothing on these paths imports it).
# Steps, most important first; each fits one 10-minute device call:
#   numerics  real cuDNN vs XLA attention, bf16, every variant (tests/test_attention_kernels.py)
#   b         ViViT-B/16x2, Models 1-4, bf16, 32x224, batch 8: ours vs 'xla' vs Hugging Face
#   trainer   the whole trainer on synthetic_device vs the bare step (Models 1 and 2, B)
#   l         ViViT-L/16x2 FE: the step, and the largest batch within 80 GB; --dry_run memory
# Figures go to OUT (default $OUT, else /tmp/gpu_session) as JSON and logs; copy them into
# docs/benchmarks.md with the command, card and date.
set -uo pipefail
step=${1:?usage: gpu_session.sh wheels|numerics|b|trainer|l [OUT]}
if [[ $step == wheels ]]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp -d .whl ml-collections==1.1.0 clu==0.0.12
fi
out=${2:-${OUT:-/tmp/gpu_session}}
mkdir -p "$out"
if ! python3 -c "import ml_collections, clu" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda
export XLA_PYTHON_CLIENT_MEM_FRACTION=.95  # Model 1's XLA baseline needs ~75 GB at batch 8
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
bench() { python3 benchmarks/train_step.py --dtype=bfloat16 --batch=8 --frames=32 --crop=224 \
    --timeout_s=500 "$@"; }
case $step in
  numerics)
    python3 -m pytest -p no:cacheprovider -q tests/test_attention_kernels.py -k "gpu" 2>&1 |
        tee "$out/numerics.log" ;;
  b)
    bench --size=B --json="$out/train_step_B_bf16.json" 2>&1 | tee "$out/train_step_B.log" ;;
  trainer)
    bench --size=B --variants=spacetime,factorized_encoder --no_baselines --trainer_steps=60 \
        --json="$out/trainer_B_bf16.json" 2>&1 | tee "$out/trainer_B.log" ;;
  l)
    bench --size=L --variants=factorized_encoder --no_baselines --memory_budget_gb=80 \
        --json="$out/train_step_L_fe.json" 2>&1 | tee "$out/train_step_L.log"
    for remat in none dots_saveable; do
      python3 -m vivit_jax.main --config=configs/k400_fe_large.py --dry_run \
          --config.init_from.checkpoint_path=None --config.batch_size=8 \
          --config.model_dtype_str=bfloat16 --config.model.remat=$remat 2>&1 | tail -3
    done | tee "$out/dry_run_L.log" ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
