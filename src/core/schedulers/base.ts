// What DDPMScheduler and DDIMScheduler share: the noise schedule
// (betas, alphas_cumprod), add_noise / get_velocity, and input checks.

import { ConfigError, InputError } from '../errors.js';
import { F32_MATH } from '../math/float32.js';
import type { Backend } from '../backend/backend.js';
import { defaultStepBackend } from '../host.js';
import type { TorchGenerator } from '../rng/torch.js';
import { makeAlphasCumprod, makeBetas, type ResolvedCommonOptions } from './config.js';
import { Prediction } from './step_kernel.js';
import { spacedTimesteps } from './timesteps.js';

const f = Math.fround;

/** Result of a scheduler step; arrays are [B, C, H, W] flattened. */
export interface SchedulerStepOutput {
  /** x_{t-1}: the next model input. */
  prevSample: Float32Array;
  /** The model's estimate of x_0 at this step (after clipping / thresholding). */
  predOriginalSample: Float32Array;
}

export abstract class BaseScheduler<O extends ResolvedCommonOptions> {
  /** The resolved options (camelCase), defaults filled in. */
  readonly config: Readonly<O>;
  /** betas, float32 as diffusers' tensor. */
  readonly betas: Float32Array;
  /** 1 - betas */
  readonly alphas: Float32Array;
  /** cumprod(alphas): alpha_prod_t for t in [0, numTrainTimesteps). */
  readonly alphasCumprod: Float32Array;
  /** Timesteps of the current schedule, descending. All training steps until setTimesteps. */
  timesteps: number[];
  /** Set by setTimesteps(n); null before, or with custom timesteps. */
  numInferenceSteps: number | null = null;
  /** Standard deviation of the initial noise distribution. */
  readonly initNoiseSigma = 1.0;
  /** Where step()'s elementwise pass runs; default: the native addon, else wasm. */
  private backend: Backend | null = null;

  protected constructor(config: O) {
    this.config = Object.freeze(config);
    this.betas = makeBetas(config);
    this.alphas = new Float32Array(this.betas.length);
    for (let i = 0; i < this.betas.length; i++) this.alphas[i] = 1 - this.betas[i];
    this.alphasCumprod = makeAlphasCumprod(this.betas);
    this.timesteps = [];
    for (let t = config.numTrainTimesteps - 1; t >= 0; t--) this.timesteps.push(t);
  }

  /** Runs step()'s fused elementwise kernel on this backend (e.g. the UNet's). */
  useBackend(backend: Backend): this {
    this.backend = backend;
    return this;
  }

  protected kernelBackend(): Backend {
    // sample() hands the UNet's backend over; this default serves step() called on its own.
    this.backend ??= defaultStepBackend();
    return this.backend;
  }

  /** Number of training timesteps (len(scheduler) in diffusers). */
  get length(): number {
    return this.config.numTrainTimesteps;
  }

  /** Identity, as for both of these schedulers; kept for pipeline symmetry. */
  scaleModelInput(sample: Float32Array, _timestep?: number): Float32Array {
    return sample;
  }

  /**
   * Forward diffusion: sqrt(a_t) * x0 + sqrt(1 - a_t) * noise, with one t per
   * batch item. x0 and noise are [B, ...] flattened, B = timesteps.length.
   */
  addNoise(originalSamples: Float32Array, noise: Float32Array, timesteps: readonly number[]): Float32Array {
    return this.mixPerItem(originalSamples, noise, timesteps, 'addNoise', (sa, sb, x, z) => f(f(sa * x) + f(sb * z)));
  }

  /**
   * The per-sample add_noise coefficients sqrt(a_t) and sqrt(1 - a_t), float32
   * as diffusers computes them; the engine's training step takes these.
   */
  noiseCoefficients(timesteps: readonly number[]): { sqrtAlphaProd: Float32Array; sqrtOneMinusAlphaProd: Float32Array } {
    const sqrtAlphaProd = new Float32Array(timesteps.length);
    const sqrtOneMinusAlphaProd = new Float32Array(timesteps.length);
    timesteps.forEach((t, b) => {
      const a = this.alphaProd(t, 'noiseCoefficients');
      sqrtAlphaProd[b] = F32_MATH.sqrt(a);
      sqrtOneMinusAlphaProd[b] = F32_MATH.sqrt(f(1 - a));
    });
    return { sqrtAlphaProd, sqrtOneMinusAlphaProd };
  }

  /** v-prediction target: sqrt(a_t) * noise - sqrt(1 - a_t) * sample, one t per batch item. */
  getVelocity(sample: Float32Array, noise: Float32Array, timesteps: readonly number[]): Float32Array {
    return this.mixPerItem(sample, noise, timesteps, 'getVelocity', (sa, sb, x, z) => f(f(sa * z) - f(sb * x)));
  }

  private mixPerItem(
    x: Float32Array,
    z: Float32Array,
    timesteps: readonly number[],
    what: string,
    mix: (sqrtAlpha: number, sqrtOneMinusAlpha: number, x: number, z: number) => number,
  ): Float32Array {
    const B = timesteps.length;
    if (B === 0) throw new InputError(`${what}: timesteps must not be empty`);
    if (z.length !== x.length) {
      throw new InputError(`${what}: noise has ${z.length} elements, the samples ${x.length}`);
    }
    if (x.length % B !== 0) {
      throw new InputError(`${what}: ${x.length} elements do not split into ${B} batch items`);
    }
    const per = x.length / B;
    const out = new Float32Array(x.length);
    for (let b = 0; b < B; b++) {
      const a = this.alphaProd(timesteps[b], what);
      const sa = F32_MATH.sqrt(a);
      const sb = F32_MATH.sqrt(f(1 - a));
      for (let i = b * per; i < (b + 1) * per; i++) out[i] = mix(sa, sb, x[i], z[i]);
    }
    return out;
  }

  /** alphas_cumprod[t], with t checked. */
  protected alphaProd(t: number, what: string): number {
    if (!Number.isInteger(t) || t < 0 || t >= this.alphasCumprod.length) {
      throw new InputError(`${what}: timestep ${t} is not an integer in [0, ${this.alphasCumprod.length})`);
    }
    return this.alphasCumprod[t];
  }

  /** Validate numInferenceSteps and build the spaced schedule. */
  protected spacedTimesteps(numInferenceSteps: number): number[] {
    const T = this.config.numTrainTimesteps;
    if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > T) {
      throw new ConfigError(
        `numInferenceSteps ${numInferenceSteps} must be an integer in [1, num_train_timesteps = ${T}]`,
      );
    }
    return spacedTimesteps(this.config.timestepSpacing, T, numInferenceSteps, this.config.stepsOffset);
  }
}

/**
 * Shared checks on step() arrays; returns the batch layout. `perItemPass`:
 * the step needs per-item statistics (dynamic thresholding).
 */
export function checkStepInputs(
  what: string,
  modelOutput: Float32Array,
  sample: Float32Array,
  batchSize: number | undefined,
  allowLearnedVariance: boolean,
  perItemPass: boolean,
): { batchSize: number; sampleSize: number; modelOutputStride: number; hasPredictedVariance: boolean } {
  const hasPredictedVariance = modelOutput.length === 2 * sample.length && sample.length > 0;
  if (modelOutput.length !== sample.length && !(hasPredictedVariance && allowLearnedVariance)) {
    throw new InputError(
      `${what}: model output has ${modelOutput.length} elements, the sample ${sample.length}` +
        (hasPredictedVariance ? ' (a 2C-channel output needs variance_type learned or learned_range)' : ''),
    );
  }
  // The channel split and dynamic thresholding work per batch item, so they
  // need the batch size; guessing 1 would silently mix items.
  if (batchSize === undefined && (hasPredictedVariance || perItemPass)) {
    throw new InputError(
      `${what}: pass batchSize (needed for ${hasPredictedVariance ? 'the learned-variance channel split' : 'dynamic thresholding'})`,
    );
  }
  const B = batchSize ?? 1;
  if (!Number.isInteger(B) || B < 1 || sample.length % B !== 0) {
    throw new InputError(`${what}: batchSize ${batchSize} does not divide the ${sample.length}-element sample`);
  }
  const sampleSize = sample.length / B;
  return {
    batchSize: B,
    sampleSize,
    modelOutputStride: hasPredictedVariance ? 2 * sampleSize : sampleSize,
    hasPredictedVariance,
  };
}

/** config.prediction_type to the kernel's code. */
export const PREDICTION = {
  epsilon: Prediction.Epsilon,
  sample: Prediction.Sample,
  v_prediction: Prediction.VPrediction,
} as const;

/** The caller's noise, or a draw from their generator. */
export function varianceNoise(n: number, options: { noise?: Float32Array; generator?: TorchGenerator }): Float32Array {
  if (options.noise && options.generator) {
    throw new InputError('pass either noise or generator, not both');
  }
  if (options.noise) {
    if (options.noise.length !== n) {
      throw new InputError(`noise has ${options.noise.length} elements, the sample ${n}`);
    }
    return options.noise;
  }
  if (options.generator) return options.generator.randn(n);
  throw new InputError('this step adds noise: pass noise or a generator');
}
