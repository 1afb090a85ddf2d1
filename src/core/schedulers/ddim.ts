// DDIMScheduler (Song et al. 2020, arXiv 2010.02502) with diffusers'
// semantics: same options, same timesteps, same float32 arithmetic.

import { InputError } from '../errors.js';
import { F32_MATH, type ScalarMath } from '../math/float32.js';
import type { TorchGenerator } from '../rng/torch.js';
import { runStepKernel } from './engine_step.js';
import { BaseScheduler, checkStepInputs, PREDICTION, varianceNoise, type SchedulerStepOutput } from './base.js';
import {
  COMMON_OPTION_KEYS,
  OptionReader,
  optionsFromConfig,
  resolveCommonOptions,
  type BetaSchedule,
  type CommonSchedulerOptions,
  type KeyStyle,
  type ResolvedCommonOptions,
} from './config.js';
import { Combine, EpsilonFrom, NoiseTerm, X0Clip, type StepCoefficients } from './step_kernel.js';

const f = Math.fround;

// diffusers' DDIMScheduler raises NotImplementedError for 'sigmoid' and 'laplace'.
const BETA_SCHEDULES: readonly BetaSchedule[] = ['linear', 'scaled_linear', 'squaredcos_cap_v2'];

export interface DDIMSchedulerOptions extends CommonSchedulerOptions {
  /**
   * At the last step there is no previous alphas_cumprod: use 1 (true, the
   * default) or alphas_cumprod[0] (false).
   */
  setAlphaToOne?: boolean;
}

export type ResolvedDDIMOptions = ResolvedCommonOptions & { setAlphaToOne: boolean };

export interface DDIMStepScalars {
  /** Weight of the noise: 0 is deterministic DDIM, 1 is DDPM-like. Default 0. */
  eta?: number;
  /** Re-derive epsilon from the clipped x0 (Glide). Default false. */
  useClippedModelOutput?: boolean;
}

export interface DDIMStepOptions extends DDIMStepScalars {
  /** diffusers' variance_noise: used when eta > 0, same length as the sample. */
  noise?: Float32Array;
  /** Draws the variance noise as diffusers' randn_tensor(shape, generator) on CPU. */
  generator?: TorchGenerator;
  /** Batch size B of the [B, C, H, W] arrays; required with thresholding. */
  batchSize?: number;
}

export class DDIMScheduler extends BaseScheduler<ResolvedDDIMOptions> {
  /** alpha_prod for the step after the last one. */
  readonly finalAlphaCumprod: number;

  /** @param keyStyle internal: how option names appear in errors. */
  constructor(options: DDIMSchedulerOptions = {}, keyStyle: KeyStyle = 'camel') {
    const r = new OptionReader(options as Record<string, unknown>, keyStyle);
    const common = resolveCommonOptions(r, BETA_SCHEDULES, 'DDIMScheduler');
    super({ ...common, setAlphaToOne: r.boolean('setAlphaToOne', true) });
    this.finalAlphaCumprod = this.config.setAlphaToOne ? 1 : this.alphasCumprod[0];
  }

  /** Build from diffusers' scheduler_config.json (snake_case; unknown keys ignored). */
  static fromConfig(json: unknown): DDIMScheduler {
    const opts = optionsFromConfig(json, [...COMMON_OPTION_KEYS, 'setAlphaToOne']);
    return new DDIMScheduler(opts as DDIMSchedulerOptions, 'snake');
  }

  /** set_timesteps(n): n steps spaced per config.timestepSpacing. */
  setTimesteps(numInferenceSteps: number): void {
    this.timesteps = this.spacedTimesteps(numInferenceSteps);
    this.numInferenceSteps = numInferenceSteps;
  }

  /** DDIM steps by a fixed stride T // n, whatever the spacing. */
  previousTimestep(t: number): number {
    if (this.numInferenceSteps === null) {
      throw new InputError('call setTimesteps before step: DDIM needs the number of inference steps');
    }
    return t - Math.floor(this.config.numTrainTimesteps / this.numInferenceSteps);
  }

  /**
   * The per-step scalars of step(t), float32 as diffusers computes them.
   * `math`: the float32 sqrt to use (see ScalarMath).
   */
  stepCoefficients(
    t: number,
    { eta = 0, useClippedModelOutput = false }: DDIMStepScalars = {},
    math: ScalarMath = F32_MATH,
  ): StepCoefficients {
    if (typeof eta !== 'number' || !(eta >= 0)) throw new InputError(`eta ${eta} must be a number >= 0`);
    const cfg = this.config;
    const prevT = this.previousTimestep(t);
    const alphaProdT = this.alphaProd(t, 'step');
    const alphaProdTPrev = prevT >= 0 ? this.alphaProd(prevT, 'step') : this.finalAlphaCumprod;
    const betaProdT = f(1 - alphaProdT);
    const betaProdTPrev = f(1 - alphaProdTPrev);

    // Formula (16): sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev).
    const variance = f(f(betaProdTPrev / betaProdT) * f(1 - f(alphaProdT / alphaProdTPrev)));
    const stdDevT = f(f(eta) * math.sqrt(variance));

    return {
      prediction: PREDICTION[cfg.predictionType],
      sqrtAlphaProd: math.sqrt(alphaProdT),
      sqrtBetaProd: math.sqrt(betaProdT),
      x0Clip: cfg.thresholding ? X0Clip.DynamicThreshold : cfg.clipSample ? X0Clip.Clamp : X0Clip.None,
      clipSampleRange: f(cfg.clipSampleRange),
      dynamicThresholdingRatio: f(cfg.dynamicThresholdingRatio),
      sampleMaxValue: f(cfg.sampleMaxValue),
      // Formula (12): x_{t-1} = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma_t^2) eps + sigma_t z.
      // (1 - a_prev - sigma^2 can round below 0; diffusers then yields NaN, and so does this.)
      combine: Combine.Epsilon,
      x0Coeff: math.sqrt(alphaProdTPrev),
      otherCoeff: math.sqrt(f(betaProdTPrev - f(stdDevT * stdDevT))),
      epsilonFrom: useClippedModelOutput ? EpsilonFrom.ClippedX0 : EpsilonFrom.ModelOutput,
      noiseTerm: eta > 0 ? NoiseTerm.ScalarStd : NoiseTerm.None,
      noiseStd: stdDevT,
      minLog: 0,
      maxLog: 0,
    };
  }

  /** One reverse step x_t -> x_{t-1}. Arrays are [B, C, H, W] flattened. */
  step(
    modelOutput: Float32Array,
    t: number,
    sample: Float32Array,
    options: DDIMStepOptions = {},
  ): SchedulerStepOutput {
    const layout = checkStepInputs('step', modelOutput, sample, options.batchSize, false, this.config.thresholding);
    const coeffs = this.stepCoefficients(t, options);
    const noise = coeffs.noiseTerm === NoiseTerm.None ? null : varianceNoise(sample.length, options);
    const prevSample = new Float32Array(sample.length);
    const predOriginalSample = new Float32Array(sample.length);
    runStepKernel(this.kernelBackend(), coeffs, layout, modelOutput, sample, noise, prevSample, predOriginalSample);
    return { prevSample, predOriginalSample };
  }
}
