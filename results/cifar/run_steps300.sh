#!/usr/bin/env bash
# CIFAR-10 discrete deq vs skipdeq vs skipregdeq at 300 steps of batch 32 (45 pre-training), one thread.
#   bash results/cifar/run_steps300.sh <stopping test> <model> ...    # from the repository root
# The per_sample runs (session 2, before the batch test was the default) are in steps300/, the
# batch runs in steps300_batch/.
set -u
cd "$(dirname "$0")/../.."
test=$1; shift
out=results/cifar/steps300; [[ $test == batch ]] && out=results/cifar/steps300_batch
for m in "$@"; do
  echo "=== cifar300 $test $m $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  OMP_NUM_THREADS=1 python -m train.cifar --model $m --solver discrete --stopping-test $test \
    --data-dir "${IMPLICIT_DATA:-../shared/data}" --steps 300 --pretrain-steps 45 --eval-every 100 --limit-test 500 \
    --out "${OUT:-.}/$out" --checkpoint-dir "${CKPT:-runs/ckpt}/cifar300_$test" --threads 1 --no-progress
done
echo "=== done $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
