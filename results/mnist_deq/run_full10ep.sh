#!/usr/bin/env bash
# The 10-epoch, all-60,000-image groups of the MNIST FC DEQ table (continuous ± JR, Newton–Krylov),
# two streams side by side, one torch thread each:
#   bash results/mnist_deq/run_full10ep.sh        # from the repository root
# Same settings as run_budget.sh (batch 32, Adam 1e-3, λ_skip 0.01, λ_jac 1.0, tol 0.005, seed 0)
# but all training images and 10 epochs (the paper: 25).
set -u
cd "$(dirname "$0")/../.."
DATA=${IMPLICIT_DATA:-../shared/data}
COMMON=(--data-dir "$DATA" --limit-train 0 --limit-test 0 --epochs 10 --batch-size 32 --optimizer adam --lr 1e-3
        --eval-batch-size 1000 --seed 0 --threads 1 --no-progress)
group() {  # group <folder> <train.mnist options...>
  local name=$1; shift
  for m in deq skipdeq skipregdeq; do
    echo "=== $name $m $(date -u +%H:%M:%S)"
    OMP_NUM_THREADS=1 python -m train.mnist --model "$m" "$@" "${COMMON[@]}" \
      --out "results/mnist_deq/$name" --checkpoint-dir "runs/mnist_deq_bench_checkpoints/$name"
  done
}
(group newton_full10ep --solver newton; group continuous_full10ep --solver continuous) > /tmp/mnist_deq_10ep_A.log 2>&1 &
group continuous_jr_full10ep --solver continuous --jacobian-reg > /tmp/mnist_deq_10ep_B.log 2>&1 &
wait
python results/mnist_deq/make_table.py > /dev/null
