#!/usr/bin/env bash
# CPU-budget benchmark of every MNIST NODE variant (issue 3), reproducible with one command:
#   bash results/mnist/run_budget.sh            # from the repository root
#   SEED=1 STREAM_B="sr+er steer+er steer+sr" bash results/mnist/run_budget.sh   # another seed, no TayNODE
#   OUT=results/mnist/longer LIMIT_TRAIN=8000 EPOCHS=6 STREAM_A="node ernode" STREAM_B="srnode" \
#     bash results/mnist/run_budget.sh                                          # a longer run
# then: python -m train.report results/mnist
#
# Budget (stated in results/mnist/README.md): the same 4,000-image training subset and 2,000-image
# test subset for every variant, 4 epochs, batch 128, SGD lr 0.1 momentum 0.9 inverse decay 1e-5,
# rtol = atol = 1e-5, seed 0, one torch thread per process. Two streams run side by side (the
# machine has 2 cores, shared with other work): stream A node, ernode, srnode, steer; stream B
# sr+er, steer+er, steer+sr, taynode (TayNODE's nested forward-mode derivatives cost ~7x per step).
set -u
cd "$(dirname "$0")/../.."
DATA=${IMPLICIT_DATA:-../shared/data}
OUT=${OUT:-results/mnist}
CKPT=${CKPT:-runs/mnist_bench_checkpoints}
SEED=${SEED:-0}
COMMON=(--data-dir "$DATA" --out "$OUT" --checkpoint-dir "$CKPT" --limit-train "${LIMIT_TRAIN:-4000}" --limit-test 2000
        --epochs "${EPOCHS:-4}" --batch-size 128 --eval-batch-size 1000 --seed "$SEED" --threads 1 --no-progress)
stream() {
  for m in "$@"; do
    echo "=== $m $(date -u +%H:%M:%S)"
    OMP_NUM_THREADS=1 python -m train.mnist --model "$m" "${COMMON[@]}" || echo "=== $m FAILED (exit $?)"
  done
}
# shellcheck disable=SC2086  # the stream lists are meant to split into words
stream ${STREAM_A:-node ernode srnode steer} > "${LOG_A:-/tmp/mnist_bench_A_seed$SEED.log}" 2>&1 &
# shellcheck disable=SC2086
stream ${STREAM_B:-sr+er steer+er steer+sr taynode} > "${LOG_B:-/tmp/mnist_bench_B_seed$SEED.log}" 2>&1 &
wait
echo "=== all done $(date -u +%H:%M:%S)"
python -m train.report "$OUT"
