// Runs the per-element part of a scheduler step on an engine backend: packs
// the StepCoefficients record into the 15 slots the fused kernel reads
// (native/cpu/diffusion_step.cpp, StepCoefficients, in this order).
import type { Backend } from '../backend/backend.js';
import type { StepCoefficients, StepLayout } from './step_kernel.js';

/** The record's length in floats (StepCoefficients in native/cpu/ops.h). */
export const kStepCoefficientSlots = 15;

export function packStepCoefficients(c: StepCoefficients): Float32Array {
  return Float32Array.of(
    c.prediction,
    c.x0Clip,
    c.combine,
    c.epsilonFrom,
    c.noiseTerm,
    c.sqrtAlphaProd,
    c.sqrtBetaProd,
    c.clipSampleRange,
    c.dynamicThresholdingRatio,
    c.sampleMaxValue,
    c.x0Coeff,
    c.otherCoeff,
    c.noiseStd,
    c.minLog,
    c.maxLog,
  );
}

export function runStepKernel(
  backend: Backend,
  c: StepCoefficients,
  layout: StepLayout,
  modelOutput: Float32Array,
  sample: Float32Array,
  noise: Float32Array | null,
  prevSample: Float32Array,
  predOriginalSample: Float32Array,
): void {
  backend.diffusionStep(packStepCoefficients(c), layout, modelOutput, sample, noise, prevSample, predOriginalSample);
}
