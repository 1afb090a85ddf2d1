#!/usr/bin/env bash
# The fast solvers on the embedded model (issue #21): DPM-Solver++ and UniPC at
# 5, 10 and 20 steps beside DDIM at 10, 20 and 50 (eta 0), 1,000 digits each,
# measured as tools/eval_default.sh measures DDIM; the DDPM 1000 row comes
# from models/mnist-eval-ddpm1000.json. Writes models/mnist-solvers.md.
# About 10 minutes on two cores (batches are cached in runs/eval-cache).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/solver-eval
mkdir -p "$OUT"
EVAL=(node dist/src/cli/main.js eval --model models/mnist --samples 1000 --batch 100 --seed 0 --backend cpu --cache runs/eval-cache)
for s in dpm++ unipc; do
  for n in 5 10 20; do "${EVAL[@]}" --scheduler "$s" --steps "$n" --json "$OUT/$s-$n.json"; done
done
for n in 10 20 50; do "${EVAL[@]}" --scheduler ddim --steps "$n" --json "$OUT/ddim-$n.json"; done
node tools/time_samplers.mjs > models/mnist-solvers-time.json
node tools/solver_table.mjs "$OUT" models/mnist-eval-ddpm1000.json models/mnist-solvers-time.json > models/mnist-solvers.md
