// DDPMScheduler (Ho et al. 2020, arXiv 2006.11239) with diffusers'
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

export type VarianceType =
  | 'fixed_small'
  | 'fixed_small_log'
  | 'fixed_large'
  | 'fixed_large_log'
  | 'learned'
  | 'learned_range';

const VARIANCE_TYPES: readonly VarianceType[] = [
  'fixed_small', 'fixed_small_log', 'fixed_large', 'fixed_large_log', 'learned', 'learned_range',
];
const BETA_SCHEDULES: readonly BetaSchedule[] = ['linear', 'scaled_linear', 'squaredcos_cap_v2', 'sigmoid', 'laplace'];

export interface DDPMSchedulerOptions extends CommonSchedulerOptions {
  /** How the step's noise is scaled; 'fixed_small' by default. */
  varianceType?: VarianceType;
}

export type ResolvedDDPMOptions = ResolvedCommonOptions & { varianceType: VarianceType };

export interface DDPMStepOptions {
  /** Variance noise, same length as the sample. Needed for t > 0 unless `generator` is given. */
  noise?: Float32Array;
  /** Draws the variance noise as diffusers' randn_tensor(shape, generator) on CPU. */
  generator?: TorchGenerator;
  /** Batch size B of the [B, C, H, W] arrays; required with learned variance or thresholding. */
  batchSize?: number;
}

export class DDPMScheduler extends BaseScheduler<ResolvedDDPMOptions> {
  /** True after setTimesteps({ timesteps }). */
  customTimesteps = false;

  /** @param keyStyle internal: how option names appear in errors. */
  constructor(options: DDPMSchedulerOptions = {}, keyStyle: KeyStyle = 'camel') {
    const r = new OptionReader(options as Record<string, unknown>, keyStyle);
    const common = resolveCommonOptions(r, BETA_SCHEDULES, 'DDPMScheduler');
    super({ ...common, varianceType: r.oneOf('varianceType', 'fixed_small', VARIANCE_TYPES) });
  }

  /** Build from diffusers' scheduler_config.json (snake_case; unknown keys ignored). */
  static fromConfig(json: unknown): DDPMScheduler {
    const opts = optionsFromConfig(json, [...COMMON_OPTION_KEYS, 'varianceType']);
    return new DDPMScheduler(opts as DDPMSchedulerOptions, 'snake');
  }

  /**
   * set_timesteps: `n` evenly spaced steps (per config.timestepSpacing), or an
   * explicit strictly descending list of timesteps below numTrainTimesteps.
   */
  setTimesteps(arg: number | { timesteps: readonly number[] }): void {
    if (typeof arg === 'number') {
      this.timesteps = this.spacedTimesteps(arg);
      this.numInferenceSteps = arg;
      this.customTimesteps = false;
      return;
    }
    const ts = [...arg.timesteps];
    if (ts.length === 0) throw new InputError('timesteps must not be empty');
    ts.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0) throw new InputError(`timesteps[${i}] ${t} is not a non-negative integer`);
      if (i > 0 && t >= ts[i - 1]) throw new InputError('custom timesteps must be in descending order');
    });
    if (ts[0] >= this.config.numTrainTimesteps) {
      throw new InputError(`timesteps must start before num_train_timesteps ${this.config.numTrainTimesteps}, got ${ts[0]}`);
    }
    this.timesteps = ts;
    this.numInferenceSteps = null;
    this.customTimesteps = true;
  }

  /** The timestep after t in the schedule, -1 at the end; t - 1 before setTimesteps. */
  previousTimestep(t: number): number {
    if (this.customTimesteps || this.numInferenceSteps) {
      const index = this.timesteps.indexOf(t);
      if (index < 0) throw new InputError(`timestep ${t} is not in the schedule set by setTimesteps`);
      return index === this.timesteps.length - 1 ? -1 : this.timesteps[index + 1];
    }
    return t - 1;
  }

  /**
   * The per-step scalars of step(t), float32 as diffusers computes them.
   * `hasPredictedVariance`: the model output carries 2C channels.
   * `math`: the float32 sqrt / log / exp to use (see ScalarMath).
   */
  stepCoefficients(t: number, hasPredictedVariance = false, math: ScalarMath = F32_MATH): StepCoefficients {
    const cfg = this.config;
    const prevT = this.previousTimestep(t);
    const alphaProdT = this.alphaProd(t, 'step');
    const alphaProdTPrev = prevT >= 0 ? this.alphaProd(prevT, 'step') : 1;
    const betaProdT = f(1 - alphaProdT);
    const betaProdTPrev = f(1 - alphaProdTPrev);
    const currentAlphaT = f(alphaProdT / alphaProdTPrev);
    const currentBetaT = f(1 - currentAlphaT);

    const coeffs: StepCoefficients = {
      prediction: PREDICTION[cfg.predictionType],
      sqrtAlphaProd: math.sqrt(alphaProdT),
      sqrtBetaProd: math.sqrt(betaProdT),
      x0Clip: cfg.thresholding ? X0Clip.DynamicThreshold : cfg.clipSample ? X0Clip.Clamp : X0Clip.None,
      clipSampleRange: f(cfg.clipSampleRange),
      dynamicThresholdingRatio: f(cfg.dynamicThresholdingRatio),
      sampleMaxValue: f(cfg.sampleMaxValue),
      // Formula (7): mu = sqrt(a_prev) beta_t / (1 - a_t) x0 + sqrt(alpha_t) (1 - a_prev) / (1 - a_t) x_t
      combine: Combine.Sample,
      x0Coeff: f(f(math.sqrt(alphaProdTPrev) * currentBetaT) / betaProdT),
      otherCoeff: f(f(math.sqrt(currentAlphaT) * betaProdTPrev) / betaProdT),
      epsilonFrom: EpsilonFrom.ModelOutput,
      noiseTerm: NoiseTerm.None,
      noiseStd: 0,
      minLog: 0,
      maxLog: 0,
    };
    if (t <= 0) return coeffs; // diffusers adds noise only for t > 0

    // Formulas (6)-(7): posterior variance, clamped so its log is finite.
    const variance = Math.max(f(f(betaProdTPrev / betaProdT) * currentBetaT), f(1e-20));
    switch (cfg.varianceType) {
      case 'fixed_small':
        return { ...coeffs, noiseTerm: NoiseTerm.ScalarStd, noiseStd: math.sqrt(variance) };
      case 'fixed_small_log': // rl-diffuser: exp(0.5 * log(variance)), used as the std directly
        return { ...coeffs, noiseTerm: NoiseTerm.ScalarStd, noiseStd: math.exp(f(0.5 * math.log(variance))) };
      case 'fixed_large':
        return { ...coeffs, noiseTerm: NoiseTerm.ScalarStd, noiseStd: math.sqrt(currentBetaT) };
      case 'fixed_large_log':
        // diffusers takes sqrt(log(beta_t)): the square root of a negative
        // number, so NaN. Reproduced as is.
        return { ...coeffs, noiseTerm: NoiseTerm.ScalarStd, noiseStd: math.sqrt(math.log(currentBetaT)) };
      case 'learned':
      case 'learned_range':
        if (!hasPredictedVariance) {
          throw new InputError(`variance_type '${cfg.varianceType}' needs a model output with 2C channels (mean and variance)`);
        }
        return cfg.varianceType === 'learned'
          ? { ...coeffs, noiseTerm: NoiseTerm.LearnedVariance }
          : {
              ...coeffs,
              noiseTerm: NoiseTerm.LearnedRange,
              minLog: math.log(variance),
              maxLog: math.log(currentBetaT),
            };
    }
  }

  /**
   * One reverse step x_t -> x_{t-1}. Arrays are [B, C, H, W] flattened; with
   * variance_type learned / learned_range the model output may carry 2C
   * channels (prediction, then variance), split per batch item as diffusers.
   */
  step(
    modelOutput: Float32Array,
    t: number,
    sample: Float32Array,
    options: DDPMStepOptions = {},
  ): SchedulerStepOutput {
    const learned = this.config.varianceType === 'learned' || this.config.varianceType === 'learned_range';
    const layout = checkStepInputs('step', modelOutput, sample, options.batchSize, learned, this.config.thresholding);
    const coeffs = this.stepCoefficients(t, layout.hasPredictedVariance);
    const noise = coeffs.noiseTerm === NoiseTerm.None ? null : varianceNoise(sample.length, options);
    const prevSample = new Float32Array(sample.length);
    const predOriginalSample = new Float32Array(sample.length);
    runStepKernel(this.kernelBackend(), coeffs, layout, modelOutput, sample, noise, prevSample, predOriginalSample);
    return { prevSample, predOriginalSample };
  }
}
