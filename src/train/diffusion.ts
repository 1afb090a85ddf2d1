// The per-sample scalars of a training step, computed the way diffusers'
// training scripts compute them: timesteps from torch.randint, add_noise's
// sqrt(alphas_cumprod[t]) and sqrt(1 - alphas_cumprod[t]) in float32, and
// the min-SNR-gamma loss weights of training_utils.compute_snr.
import { Mt19937 } from '../core/rng/mt19937.js';
import type { TorchGenerator } from '../core/rng/torch.js';
import type { PredictionType } from '../core/schedulers/config.js';

const f = Math.fround;

/**
 * torch.randint(low, high, (n,), generator=g) on CPU, drawn from a
 * TorchGenerator: ATen's random_from_to kernel takes one 32-bit mt19937
 * output per element (ranges below 2^32) and returns low + (bits % range).
 * The draw advances the generator exactly as torch's does, so noise and
 * timesteps drawn in the script's order stay in step with torch.
 */
export function torchRandint(generator: TorchGenerator, low: number, high: number, n: number): number[] {
  const range = high - low;
  if (!Number.isInteger(low) || !Number.isInteger(high) || range < 1 || range > 0xffffffff)
    throw new RangeError(`randint needs integers low < high with high - low < 2^32, got [${low}, ${high})`);
  // TorchGenerator keeps its twister private; borrow it through its state.
  const state = generator.getState();
  const twister = new Mt19937(0);
  twister.setState(state.mt19937);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(low + (twister.nextUint32() % range));
  generator.setState({ ...state, mt19937: twister.getState() });
  return out;
}

/**
 * DDPMScheduler.add_noise's coefficients per sample, float32:
 * alphas_cumprod[t] ** 0.5 and (1 - alphas_cumprod[t]) ** 0.5 (torch's pow
 * with exponent 0.5 is a correctly rounded sqrt).
 */
export function addNoiseCoefficients(
  alphasCumprod: Float32Array,
  timesteps: readonly number[],
): { sqrtAlphaProd: Float32Array; sqrtOneMinusAlphaProd: Float32Array } {
  const sqrtAlphaProd = new Float32Array(timesteps.length);
  const sqrtOneMinusAlphaProd = new Float32Array(timesteps.length);
  timesteps.forEach((t, b) => {
    const a = alphasCumprod[t]!;
    sqrtAlphaProd[b] = f(Math.sqrt(a));
    sqrtOneMinusAlphaProd[b] = f(Math.sqrt(f(1 - a)));
  });
  return { sqrtAlphaProd, sqrtOneMinusAlphaProd };
}

/** compute_snr: (sqrt(a_t) / sqrt(1 - a_t)) ** 2 in float32, i.e. a_t / (1 - a_t). */
export function computeSnr(alphasCumprod: Float32Array, timesteps: readonly number[]): Float32Array {
  const { sqrtAlphaProd, sqrtOneMinusAlphaProd } = addNoiseCoefficients(alphasCumprod, timesteps);
  const snr = new Float32Array(timesteps.length);
  for (let b = 0; b < snr.length; b++) {
    const ratio = f(sqrtAlphaProd[b]! / sqrtOneMinusAlphaProd[b]!);
    snr[b] = f(ratio * ratio);
  }
  return snr;
}

/**
 * Min-SNR-gamma loss weights (Hang et al. 2023, arXiv 2303.09556) as diffusers'
 * training scripts apply them: w = min(snr, gamma), divided by snr for epsilon
 * and by snr + 1 for v_prediction. At snr = 0 (a zero-terminal-SNR schedule's
 * last step) the epsilon weight is its limit, 1, instead of 0 / 0.
 */
export function minSnrLossWeights(
  alphasCumprod: Float32Array,
  timesteps: readonly number[],
  gamma: number,
  predictionType: PredictionType,
): Float32Array {
  const snr = computeSnr(alphasCumprod, timesteps);
  const g = f(gamma);
  const weights = new Float32Array(snr.length);
  for (let b = 0; b < snr.length; b++) {
    const s = snr[b]!;
    const clipped = Math.min(s, g);
    if (predictionType === 'epsilon') weights[b] = s === 0 ? 1 : f(clipped / s);
    else if (predictionType === 'v_prediction') weights[b] = f(clipped / f(s + 1));
    else weights[b] = clipped;
  }
  return weights;
}

/** The engine's code for the regression target (TrainStepArgs.target). */
export const TARGET_CODE: Readonly<Record<PredictionType, 0 | 1 | 2>> = { epsilon: 0, sample: 1, v_prediction: 2 };

/**
 * A 53-bit seed for the engine's dropout masks, one per micro-batch:
 * splitmix64 of (seed, counter), so masks differ between micro-batches and
 * repeat exactly after a resume.
 */
export function dropoutSeed(seed: bigint, counter: number): number {
  const mask = (1n << 64n) - 1n;
  let z = (seed + BigInt(counter + 1) * 0x9e3779b97f4a7c15n) & mask;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & mask;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & mask;
  z ^= z >> 31n;
  return Number(z >> 11n);
}
