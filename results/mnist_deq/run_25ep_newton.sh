#!/usr/bin/env bash
# 25-epoch Newton–Krylov groups (± JR) of the MNIST FC DEQ table, one thread (ran from a git worktree at a fixed commit; see the records).
set -u
cd "$(dirname "$0")/../.."
OUT=results/mnist_deq
COMMON=(--data-dir ../shared/data --limit-train 0 --limit-test 0 --epochs 25 --batch-size 32 --optimizer adam --lr 1e-3
        --eval-batch-size 1000 --seed 0 --threads 1 --no-progress)
for g in newton newton_jr; do
  extra=(--solver newton); [ $g = newton_jr ] && extra+=(--jacobian-reg)
  for m in deq skipdeq skipregdeq; do
    echo "=== ${g}_25ep $m $(date -u +%H:%M:%S)"
    OMP_NUM_THREADS=1 python -m train.mnist --model "$m" "${extra[@]}" "${COMMON[@]}" \
      --out "$OUT/${g}_25ep" --checkpoint-dir "runs/ckpt/${g}_25ep"
  done
done
echo "=== done $(date -u +%H:%M:%S)"
