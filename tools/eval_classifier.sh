#!/usr/bin/env bash
# The embedded model measured by the MNIST CNN (issue #24): class accuracy by
# the CNN, and the Fréchet distance between the samples' and the held-out
# digits' CNN features beside its real-data floor, with DDIM 50 (eta 0,
# `marble sample`'s default), DPM-Solver++ 20, and DDIM 10 and 50 at eta 1,
# 1,000 digits each (the k-NN rows come along). Writes
# models/mnist-eval-cnn-*.json (the table in models/README.md, "Results");
# about 20 minutes on two cores (batches are cached in runs/eval-cache,
# shared with tools/eval_default.sh and tools/eval_solvers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
EVAL=(node dist/src/cli/main.js eval --model models/mnist --samples 1000 --batch 100 --seed 0 --backend cpu --cache runs/eval-cache)
"${EVAL[@]}" --scheduler ddim --steps 50 --json models/mnist-eval-cnn-ddim50.json
"${EVAL[@]}" --scheduler dpm++ --steps 20 --json models/mnist-eval-cnn-dpmpp20.json
"${EVAL[@]}" --scheduler ddim --steps 10 --eta 1 --json models/mnist-eval-cnn-ddim10-eta1.json
"${EVAL[@]}" --scheduler ddim --steps 50 --eta 1 --json models/mnist-eval-cnn-ddim50-eta1.json
