#!/usr/bin/env bash
# CIFAR-10 discrete deq vs skipdeq vs skipregdeq at 300 steps of batch 32 (45 pre-training), one thread.
set -u
cd "$(dirname "$0")/../.."
for m in "$@"; do
  echo "=== cifar300 $m $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  OMP_NUM_THREADS=1 python -m train.cifar --model $m --solver discrete --data-dir ../shared/data \
    --steps 300 --pretrain-steps 45 --eval-every 100 --limit-test 500 \
    --out results/cifar/steps300 --checkpoint-dir runs/ckpt/cifar300 --threads 1 --no-progress
done
echo "=== done $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
