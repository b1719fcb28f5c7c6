#!/usr/bin/env bash
# CPU-budget benchmark of the MNIST fully connected DEQs (issue 5), reproducible with one command:
#   bash results/mnist_deq/run_budget.sh          # from the repository root
#
# Budget: the same 10,000-image training subset for every variant, 1 epoch, batch 32, Adam 1e-3,
# λ_skip 0.01, λ_jac 1.0 (with --jacobian-reg), relative tolerance 0.005, seed 0, the full
# 10,000-image test set, one torch thread per process. The paper trains 25 epochs on all 60,000
# images. Two streams run side by side (2 cores, shared with other work): stream A the continuous
# solve (Tsit5 steady state) without and with Jacobian regularization, stream B Newton-Krylov.
# Each (solver, JR) group has its own folder so that ratios compare runs of the same group.
set -u
cd "$(dirname "$0")/../.."
DATA=${IMPLICIT_DATA:-../shared/data}
OUT=${OUT:-results/mnist_deq}
CKPT=${CKPT:-runs/mnist_deq_bench_checkpoints}
EPOCHS=${EPOCHS:-1}
LIMIT=${LIMIT:-10000}
COMMON=(--data-dir "$DATA" --limit-train "$LIMIT" --limit-test 0 --epochs "$EPOCHS" --batch-size 32
        --optimizer adam --lr 1e-3 --eval-batch-size 1000 --seed 0 --threads 1 --no-progress)
stream() {
  local solver=$1; shift
  for jr in "" "--jacobian-reg"; do
    local group=$solver${jr:+_jr}
    for m in deq skipdeq skipregdeq; do
      echo "=== $group $m $(date -u +%H:%M:%S)"
      OMP_NUM_THREADS=1 python -m train.mnist --model "$m" --solver "$solver" $jr "${COMMON[@]}" \
        --out "$OUT/$group" --checkpoint-dir "$CKPT/$group" || echo "=== $group $m FAILED (exit $?)"
    done
  done
}
stream continuous > "${LOG_A:-/tmp/mnist_deq_bench_A.log}" 2>&1 &
stream newton > "${LOG_B:-/tmp/mnist_deq_bench_B.log}" 2>&1 &
wait
echo "=== all done $(date -u +%H:%M:%S)"
# one table for all groups (the paper's numbers per JR setting): results/mnist_deq/table.md + nfe.png
python results/mnist_deq/make_table.py > /dev/null
