#!/usr/bin/env bash
# CIFAR-10 continuous rows at the default --preset cpu budget (same as results/cifar/preset_cpu's discrete rows).
set -u
cd "$(dirname "$0")/../.."
for m in deq skipdeq skipregdeq; do
  echo "=== cifar continuous $m $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  OMP_NUM_THREADS=1 python -m train.cifar --model $m --solver continuous --data-dir ../shared/data \
    --out results/cifar/preset_cpu --checkpoint-dir runs/ckpt/cifar_cont --threads 1 --no-progress
done
echo "=== done $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
