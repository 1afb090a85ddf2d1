// Label dropout for classifier-free guidance (Ho & Salimans 2022): while
// training a class-conditional model whose config records a null class
// (core/model/guidance.ts), each label is replaced by the null label with
// probability p, so one model learns both the conditional and the
// unconditional noise prediction that guided sampling combines.
//
// The draws come from their own counter-based stream, not from the torch
// generator of noise and timesteps: a model trained with dropout 0 (or
// without the record) sees exactly the noise and timesteps it saw before,
// and a resumed run drops the same labels, since each draw depends only on
// (seed, update, position in the batch).
import { dropoutSeed } from './diffusion.js';

// Keeps this stream apart from the engine's dropout masks (dropoutSeed of the same seed).
const kLabelStream = 0x6c6162656c64726fn; // "labeldro"

/** Uniform in [0, 1) for label `index` of update `step` (53 random bits). */
function uniform(seed: bigint, step: number, batchSize: number, index: number): number {
  return dropoutSeed(seed ^ kLabelStream, step * batchSize + index) / 2 ** 53;
}

/**
 * Which labels of update `step` (1-based) are dropped, for a batch of
 * `batchSize`: true where the label becomes the null label.
 */
export function labelDropoutMask(seed: bigint, step: number, batchSize: number, p: number): boolean[] {
  return Array.from({ length: batchSize }, (_, b) => p > 0 && uniform(seed, step, batchSize, b) < p);
}

/** The labels with the dropped ones replaced by the null label (a copy). */
export function dropLabels(labels: Float32Array, nullLabel: number, p: number, seed: bigint, step: number): Float32Array {
  const mask = labelDropoutMask(seed, step, labels.length, p);
  return labels.map((label, b) => (mask[b] ? nullLabel : label));
}
