#!/usr/bin/env bash
# Trains the embedded default model and exports it to models/mnist
# (`npm run train:default`; models/README.md says what it is and what it cost).
#
# Every setting of the run is here, so this script is the model's recipe:
# same marble commit + same CPU backend kernel family => the same weights
# (see models/README.md, "Reproducing"). Run it again after an interruption
# (Ctrl-C saves a checkpoint): it resumes the run where it stopped and
# produces the same model as an uninterrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=runs/mnist-default
STEPS=2400
MARBLE=(node dist/src/cli/main.js)

if [[ -f "$RUN/checkpoint/trainer_state/state.json" ]]; then
  # The run's settings live in the checkpoint; --resume takes them from there.
  "${MARBLE[@]}" train --out "$RUN" --resume --steps "$STEPS" \
    --backend cpu --save-every 200 --sample-every 0
else
  "${MARBLE[@]}" train --data mnist --holdout 1000 --class-conditional \
    --config models/mnist-train-config.json \
    --out "$RUN" --steps "$STEPS" --batch 64 \
    --lr 5e-4 --lr-schedule cosine --warmup 240 \
    --adam-beta1 0.95 --adam-beta2 0.999 --adam-eps 1e-8 --weight-decay 1e-6 \
    --grad-clip 1 --min-snr-gamma 5 \
    --ema --ema-decay 0.9999 \
    --prediction-type epsilon --num-train-timesteps 1000 \
    --seed 0 --backend cpu --save-every 200 --sample-every 0
fi

# The EMA weights (the checkpoint's unet/) in f16, with the scheduler and model index.
"${MARBLE[@]}" export --checkpoint "$RUN/checkpoint" --out models/mnist --dtype f16 --force

# A first look: the grid the README's newcomer command makes.
"${MARBLE[@]}" sample --model models/mnist --class 7 --batch 16 --seed 0 --out "$RUN/sevens.png"
