#!/usr/bin/env bash
# The paper's schedule for the MNIST FC DEQ table: 25 epochs on all 60,000 images, one torch thread.
#   bash results/mnist_deq/run_25ep.sh newton newton_jr              # from the repository root
#   bash results/mnist_deq/run_25ep.sh continuous continuous_jr      # (the two streams ran side by side)
# Each group runs deq, skipdeq, skipregdeq; a group name ending in _jr adds Jacobian regularization.
set -u
cd "$(dirname "$0")/../.."
OUT=results/mnist_deq
COMMON=(--data-dir "${IMPLICIT_DATA:-../shared/data}" --limit-train 0 --limit-test 0 --epochs 25 --batch-size 32
        --optimizer adam --lr 1e-3 --eval-batch-size 1000 --seed 0 --threads 1 --no-progress)
for g in "$@"; do
  extra=(--solver "${g%_jr}"); [[ $g == *_jr ]] && extra+=(--jacobian-reg)
  for m in deq skipdeq skipregdeq; do
    echo "=== ${g}_25ep $m $(date -u +%H:%M:%S)"
    OMP_NUM_THREADS=1 python -m train.mnist --model "$m" "${extra[@]}" "${COMMON[@]}" \
      --out "$OUT/${g}_25ep" --checkpoint-dir "runs/ckpt/${g}_25ep"
  done
done
echo "=== done $(date -u +%H:%M:%S)"
