#!/usr/bin/env bash
# The paper's schedule (25 epochs on all 60,000 images, batch 32, Adam 1e-3, test batch 32 as in the
# authors' MNIST FC script) for several seeds and skip-loss weights, one torch thread per process.
#   bash results/mnist_deq/run_seeds.sh <group> <seed> <model>[:<λ_skip>] ...     # from the repository root
# e.g. bash results/mnist_deq/run_seeds.sh continuous_jr 1 deq skipdeq:5 skipregdeq:5
# A group name ending in _jr adds Jacobian regularization (λ 1.0). Records go to
# $OUT/<group>_seeds_25ep/<model>[_lskip<λ>]_seed<seed>.json (OUT defaults to results/mnist_deq).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-results/mnist_deq}
g=$1 seed=$2; shift 2
extra=(--solver "${g%_jr}"); [[ $g == *_jr ]] && extra+=(--jacobian-reg)
for job in "$@"; do
  m=${job%%:*} name=${job%%:*}
  w=(); [[ $job == *:* ]] && { w=(--reg-weight "skip=${job#*:}"); name="${m}_lskip${job#*:}"; }
  echo "=== ${g}_seeds_25ep ${name}_seed$seed $(date -u +%H:%M:%S)"
  OMP_NUM_THREADS=1 python -m train.mnist --model "$m" "${extra[@]}" "${w[@]}" \
    --data-dir "${IMPLICIT_DATA:-../shared/data}" --limit-train 0 --limit-test 0 --epochs 25 --batch-size 32 \
    --optimizer adam --lr 1e-3 --eval-batch-size 32 --seed "$seed" --threads 1 --no-progress \
    --out "$OUT/${g}_seeds_25ep" --run-name "${name}_seed$seed" --checkpoint-dir "${CKPT:-runs/ckpt}/${g}_seeds_25ep"
done
echo "=== done $(date -u +%H:%M:%S)"
