#!/usr/bin/env bash
# CPU-budget benchmark of the CIFAR-10 MDEQ-small variants (issue 5), reproducible with one command:
#   bash results/cifar/run_budget.sh          # from the repository root
#
# Budget (smaller than the default `--preset cpu` run, because the 2 cores were shared by ~12
# processes when it ran): 16 optimizer steps of batch 16 (the first 6 pre-train the unrolled
# depth-5 network), Adam 1e-3 cosine to 1e-6, weight decay 2.5e-5, λ_skip 0.01, discrete solve =
# limited-memory Broyden to relative residual 0.05 with ≤ 10 iterations, backward GMRES tol 0.05
# ≤ 10 iterations, the node baseline Tsit5 over [0, 1] with rtol = atol = 0.05; tested on a fixed
# 200-image test subset (batches of 100) after steps 8 and 16. After training each run times 2
# training steps on the same fixed batch of 16 (median). This measures per-batch cost and NFE at
# (almost) initialization; the accuracies are near chance and say nothing about the papers'. One torch
# thread per process; two streams side by side on a 2-core machine shared with other work, so
# absolute seconds are inflated and noisy; ratios are taken within this one run.
set -u
cd "$(dirname "$0")/../.."
DATA=${IMPLICIT_DATA:-../shared/data}
OUT=${OUT:-results/cifar}
CKPT=${CKPT:-runs/cifar_bench_checkpoints}
COMMON=(--data-dir "$DATA" --out "$OUT" --checkpoint-dir "$CKPT" --preset cpu --steps 16 --pretrain-steps 6
        --batch-size 16 --limit-test 200 --eval-every 8 --eval-batch-size 100 --timing-repeats 2 --seed 0
        --threads 1 --no-progress)
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
