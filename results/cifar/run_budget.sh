#!/usr/bin/env bash
# CPU-budget benchmark of the CIFAR-10 MDEQ-small variants (issue 5), reproducible with one command:
#   bash results/cifar/run_budget.sh          # from the repository root
#
# Budget: the default `--preset cpu` run of train.cifar for every variant, same seed and data:
# 40 optimizer steps of batch 32 (the first 15 pre-train the unrolled depth-5 network), Adam 1e-3
# cosine to 1e-6, weight decay 2.5e-5, λ_skip 0.01, discrete solve = limited-memory Broyden to
# relative residual 0.05 with ≤ 10 iterations, backward GMRES tol 0.05 ≤ 10 iterations, the node
# baseline Tsit5 over [0, 1] with rtol = atol = 0.05; tested on a fixed 500-image test subset.
# After training each run times 3 training steps on the same fixed batch (median). One torch
# thread per process; two streams side by side on a 2-core machine shared with other work, so
# absolute seconds are inflated and noisy; ratios are taken within this one run.
set -u
cd "$(dirname "$0")/../.."
DATA=${IMPLICIT_DATA:-../shared/data}
OUT=${OUT:-results/cifar}
CKPT=${CKPT:-runs/cifar_bench_checkpoints}
COMMON=(--data-dir "$DATA" --out "$OUT" --checkpoint-dir "$CKPT" --preset cpu --limit-test 500
        --eval-every 20 --seed 0 --threads 1 --no-progress)
stream() {
  for m in "$@"; do
    echo "=== $m $(date -u +%H:%M:%S)"
    OMP_NUM_THREADS=1 python -m train.cifar --model "$m" "${COMMON[@]}" || echo "=== $m FAILED (exit $?)"
  done
}
stream deq skipdeq > "${LOG_A:-/tmp/cifar_bench_A.log}" 2>&1 &
stream skipregdeq node > "${LOG_B:-/tmp/cifar_bench_B.log}" 2>&1 &
wait
echo "=== all done $(date -u +%H:%M:%S)"
python -m train.cifar --table "$OUT"
