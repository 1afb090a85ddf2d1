// What the multistep (DPM-Solver++, UniPC) and sigma-space (Euler, Euler
// ancestral, Heun) schedulers share: option reading with diffusers' names
// and defaults, the noise schedule, the step index, and running a step's
// coefficients through the engine's fused solver kernel.

import type { Backend } from '../backend/backend.js';
import { ConfigError, InputError } from '../errors.js';
import { defaultStepBackend } from '../host.js';
import { checkGuidanceScale } from '../model/guidance.js';
import {
  COMMON_OPTION_KEYS,
  makeAlphasCumprod,
  makeBetas,
  OptionReader,
  optionsFromConfig,
  resolveCommonOptions,
  type BetaSchedule,
  type KeyStyle,
  type ResolvedCommonOptions,
} from './config.js';
import { needsNoise, SolverHistory, type SolverCoefficients } from './solver_kernel.js';
import { trainingSigmas } from './sigmas.js';

/** A source of standard normals (TorchGenerator, or the sampler's Philox draws). */
export interface NoiseSource {
  randn(n: number): Float32Array;
}

export interface SolverStepOptions {
  /** The step's noise (stochastic solvers only), same length as the sample. */
  noise?: Float32Array;
  /** Draws the step's noise as diffusers' randn_tensor(shape, generator) does. */
  generator?: NoiseSource;
  /** Batch size B of the [B, C, H, W] arrays; needed with dynamic thresholding or a 2C-channel output. */
  batchSize?: number;
  /**
   * Classifier-free guidance (StepLayout.guidanceScale): 1 or absent,
   * unguided; otherwise modelOutput holds the conditional then the
   * unconditional pass's batch (twice the sample's items) and the step uses
   * eps_u + s * (eps_c - eps_u). Needs batchSize.
   */
  guidanceScale?: number;
}

export interface SolverStepOutput {
  /** The next sample. */
  prevSample: Float32Array;
  /** The model's x0 estimate at this step (after clipping / thresholding); null where the solver works in epsilon. */
  predOriginalSample: Float32Array | null;
}

/** Beta schedules these schedulers build (diffusers raises for the others). */
export const SOLVER_BETA_SCHEDULES: readonly BetaSchedule[] = ['linear', 'scaled_linear', 'squaredcos_cap_v2'];

/**
 * Options given as null in a scheduler_config.json mean "unset"; drop them so
 * defaults apply (diffusers writes None for sigma_min, variance_type, ...).
 */
export function dropNulls(opts: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(opts)) if (v !== null) out[k] = v;
  return out;
}

/** Reads the options these schedulers share; `defaults` overrides diffusers' DDPM-family defaults. */
export function readSolverOptions(
  options: Record<string, unknown>,
  keyStyle: KeyStyle,
  schedulerName: string,
  defaults: Record<string, unknown>,
): { r: OptionReader; opts: Record<string, unknown>; common: ResolvedCommonOptions } {
  const opts = { ...defaults, ...dropNulls(options) };
  const r = new OptionReader(opts, keyStyle);
  const common = resolveCommonOptions(r, SOLVER_BETA_SCHEDULES, schedulerName);
  return { r, opts, common };
}

/** Options diffusers has that this port does not implement: a value other than the default is a ConfigError. */
export function refuseUnsupported(
  r: OptionReader,
  opts: Record<string, unknown>,
  schedulerName: string,
  keys: readonly [camelKey: string, dflt: unknown][],
): void {
  for (const [key, dflt] of keys) {
    const v = opts[key];
    if (v === undefined || v === null || v === dflt) continue;
    if (Array.isArray(v) && Array.isArray(dflt) && v.length === 0 && dflt.length === 0) continue;
    r.fail(key, v, `is not supported by ${schedulerName} in marble (only ${JSON.stringify(dflt)})`);
  }
}

/** fromConfig's key filter: the common keys plus the scheduler's own. */
export function solverOptionsFromConfig(json: unknown, ownKeys: readonly string[]): Record<string, unknown> {
  return optionsFromConfig(json, [...COMMON_OPTION_KEYS, ...ownKeys]);
}

/** One step as the kernel will run it, before it runs. */
export interface SolverPlan {
  /** The step's index in timesteps. */
  index: number;
  coefficients: SolverCoefficients;
  /** scaleModelInput's divisor at this step (1 where the input is not scaled). */
  inputScale: number;
  /** Whether the converted output is x0 (else epsilon). */
  x0: boolean;
  /** Whether a 2C-channel model output is accepted (its first half used). */
  allowTwoHalves: boolean;
  /** Advances the scheduler's state past this step (step index, warm-up counters). */
  commit(): void;
}

export abstract class SolverSchedulerBase<O extends ResolvedCommonOptions> {
  readonly config: Readonly<O>;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  /** ((1 - a) / a) ** 0.5 per training step, float32. */
  protected readonly trainSigmas: Float32Array;
  /** Timesteps of the current schedule (the model's t per step; may be fractional). */
  timesteps: number[] = [];
  /** Sigmas of the current schedule, one more than the timesteps (float32). */
  sigmas: Float32Array = new Float32Array(0);
  numInferenceSteps: number | null = null;
  /** The step index of the next step; null until the first step (or scaleModelInput). */
  protected stepIndexValue: number | null = null;
  private backend: Backend | null = null;
  protected readonly state: SolverHistory;

  protected constructor(config: O, historyDepth: number) {
    this.config = Object.freeze(config);
    this.betas = makeBetas(config);
    const ac = makeAlphasCumprod(this.betas);
    // diffusers: with rescaled betas the last alphas_cumprod becomes 2^-24, not 0.
    if (config.rescaleBetasZeroSnr) ac[ac.length - 1] = 2 ** -24;
    this.alphasCumprod = ac;
    this.trainSigmas = trainingSigmas(ac);
    this.state = new SolverHistory(historyDepth);
  }

  /** Standard deviation of the initial noise. */
  abstract get initNoiseSigma(): number;

  /** Number of training timesteps (len(scheduler) in diffusers). */
  get length(): number {
    return this.config.numTrainTimesteps;
  }

  /** The index of the next step (diffusers' step_index). */
  get stepIndex(): number | null {
    return this.stepIndexValue;
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

  /** Validate n, then clear the per-run state. */
  protected checkInferenceSteps(n: number): void {
    const T = this.config.numTrainTimesteps;
    if (!Number.isInteger(n) || n < 1 || n > T) {
      throw new ConfigError(`numInferenceSteps ${n} must be an integer in [1, num_train_timesteps = ${T}]`);
    }
  }

  protected resetRun(): void {
    this.stepIndexValue = null;
    this.state.reset();
  }

  /** diffusers' index_for_timestep: the second match when t repeats; `missing` when absent. */
  protected indexForTimestep(t: number, missing: 'last' | 'error'): number {
    const hits: number[] = [];
    this.timesteps.forEach((s, i) => {
      if (s === t) hits.push(i);
    });
    if (hits.length === 0) {
      if (missing === 'last') return this.timesteps.length - 1;
      throw new InputError(`timestep ${t} is not in this schedule (pass one of scheduler.timesteps)`);
    }
    return hits.length > 1 ? hits[1]! : hits[0]!;
  }

  protected initStepIndex(t: number, missing: 'last' | 'error'): number {
    if (this.numInferenceSteps === null) {
      throw new InputError('call setTimesteps before step');
    }
    this.stepIndexValue ??= this.indexForTimestep(t, missing);
    if (this.stepIndexValue >= this.timesteps.length) {
      throw new InputError(`step: the schedule's ${this.timesteps.length} steps are done (call setTimesteps again)`);
    }
    return this.stepIndexValue;
  }

  /**
   * The next step's kernel record for timestep t, without running it; call
   * commit() to move on (the sampler's device loop plans a whole run).
   */
  abstract planStep(t: number): SolverPlan;

  /** One step from the model output at timestep t. Arrays are [B, C, H, W] flattened. */
  step(modelOutput: Float32Array, t: number, sample: Float32Array, options: SolverStepOptions = {}): SolverStepOutput {
    const plan = this.planStep(t);
    const { prevSample, converted } = this.runKernel(plan.coefficients, modelOutput, sample, options, plan.allowTwoHalves);
    plan.commit();
    return { prevSample, predOriginalSample: plan.x0 ? converted.slice() : null };
  }

  /** Checks the arrays and runs the kernel; advances nothing. */
  protected runKernel(
    c: SolverCoefficients,
    modelOutput: Float32Array,
    sample: Float32Array,
    options: SolverStepOptions,
    allowTwoHalves: boolean,
  ): { prevSample: Float32Array; converted: Float32Array } {
    const n = sample.length;
    const guidanceScale = checkGuidanceScale(options.guidanceScale);
    // Guided, the model output holds two passes of the batch.
    const passes = guidanceScale !== 1 ? 2 : 1;
    const twoHalves = modelOutput.length === 2 * passes * n && n > 0;
    if (modelOutput.length !== passes * n && !(twoHalves && allowTwoHalves)) {
      throw new InputError(`step: model output has ${modelOutput.length} elements, the sample ${n}${passes === 2 ? ' (guided: two passes expected)' : ''}`);
    }
    const perItem = c.clip === 2 || twoHalves || passes === 2;
    if (perItem && options.batchSize === undefined) {
      throw new InputError(
        `step: pass batchSize (needed for ${passes === 2 ? 'guidance' : twoHalves ? 'the 2C-channel model output' : 'dynamic thresholding'})`,
      );
    }
    const B = options.batchSize ?? 1;
    if (!Number.isInteger(B) || B < 1 || n % B !== 0) {
      throw new InputError(`step: batchSize ${options.batchSize} does not divide the ${n}-element sample`);
    }
    const layout = { batchSize: B, sampleSize: n / B, modelOutputStride: (twoHalves ? 2 : 1) * (n / B), guidanceScale };
    let noise: Float32Array | null = null;
    if (needsNoise(c)) {
      if (options.noise && options.generator) throw new InputError('pass either noise or generator, not both');
      if (options.noise) {
        if (options.noise.length !== n) throw new InputError(`noise has ${options.noise.length} elements, the sample ${n}`);
        noise = options.noise;
      } else if (options.generator) {
        noise = options.generator.randn(n);
      } else {
        throw new InputError('this step adds noise: pass noise or a generator');
      }
    }
    return this.state.run(this.kernelBackend(), c, layout, modelOutput, sample, noise);
  }
}

/** (sigma ** 2 + 1) ** 0.5 in float32: scale_model_input's divisor. */
export function sigmaInputScale(sigma: number): number {
  const f = Math.fround;
  return f(Math.sqrt(f(f(sigma * sigma) + 1)));
}

/** sample / ((sigma ** 2 + 1) ** 0.5), float32 (scale_model_input of the sigma-space schedulers). */
export function scaleBySigma(sample: Float32Array, sigma: number): Float32Array {
  const d = sigmaInputScale(sigma);
  const out = new Float32Array(sample.length);
  for (let i = 0; i < sample.length; i++) out[i] = sample[i]! / d;
  return out;
}
