#!/usr/bin/env bash
# Measures the embedded default model (`npm run eval:default`; issue #6):
#   1. DDIM 50 steps, 1,000 digits: precision/recall (k = 3) against the 1,000
#      held-out digits, nearest-training-digit distances, a grid of the first 100;
#   2. DDPM 1,000 steps, 1,000 digits: the same measures;
#   3. the DDIM steps-versus-quality table (10, 20, 50, 100, 1000 steps x eta 0, 1);
#   4. the same at eta 0 with epsilon re-derived from the clipped x0
#      (--clipped-model-output): the model's scheduler clips x0, and at eta 0
#      the model's own epsilon then drifts from the clipped x0 over many steps.
# Results go to models/mnist-eval-*.json, models/mnist-steps.{md,json} and
# models/mnist-steps-clipped.{md,json}. Each run also has the MNIST CNN's rows
# (class accuracy by the CNN, Fréchet distance and its floor; issue #24),
# which need TensorFlow.js (a development dependency, so `npm ci` installs it).
#
# The 1000-step runs cost about 100 minutes each on two cores, so every
# finished batch of 100 digits is kept in runs/eval-cache (keyed by weights,
# sampler, steps, eta, seed and batch): run the script again after an
# interruption and it resumes; finished rows come back from the cache. Pass
# step counts to limit the table, e.g. `bash tools/eval_default.sh 10,20,50,100`.
set -euo pipefail
cd "$(dirname "$0")/.."

TABLE_STEPS=${1:-10,20,50,100,1000}
EVAL=(node dist/src/cli/main.js eval --model models/mnist --samples 1000 --batch 100 --seed 0 --backend cpu --cache runs/eval-cache)

"${EVAL[@]}" --scheduler ddim --steps 50 --json models/mnist-eval-ddim50.json --grid models/mnist-eval-samples.png
"${EVAL[@]}" --table models/mnist-steps.md --table-steps "$TABLE_STEPS" --json models/mnist-steps.json
if [[ -z "${SKIP_DDPM:-}" ]]; then
  "${EVAL[@]}" --scheduler ddpm --json models/mnist-eval-ddpm1000.json
fi
"${EVAL[@]}" --table models/mnist-steps-clipped.md --table-steps "$TABLE_STEPS" --table-etas 0 --clipped-model-output --json models/mnist-steps-clipped.json
