// EulerDiscreteScheduler and EulerAncestralDiscreteScheduler (Karras et al.
// 2022, arXiv 2206.00364, Algorithm 2 / k-diffusion's sample_euler_ancestral)
// with diffusers' semantics: sigma-space samples (initial noise times
// init_noise_sigma, model input scaled by 1 / sqrt(sigma^2 + 1)), the same
// float32 timesteps and sigmas, one fused kernel pass per step.

import type { CommonSchedulerOptions, KeyStyle, PredictionType, ResolvedCommonOptions } from './config.js';
import type { FinalSigmasType } from './dpmsolver.js';
import { f32, karrasSigmas, logSigmasF32, npInterp, sigmaTimesteps, sigmaToT } from './sigmas.js';
import { Convert, ConvClip, Lin, type SolverCoefficients } from './solver_kernel.js';
import {
  readSolverOptions,
  refuseUnsupported,
  scaleBySigma,
  SolverSchedulerBase,
  solverOptionsFromConfig,
  sigmaInputScale,
  type SolverPlan,
} from './solver_base.js';

const f = Math.fround;

export interface EulerDiscreteOptions
  extends Omit<CommonSchedulerOptions, 'clipSample' | 'clipSampleRange' | 'thresholding' | 'dynamicThresholdingRatio' | 'sampleMaxValue'> {
  useKarrasSigmas?: boolean; // false
  /** Karras sigma bounds (default: the schedule's). */
  sigmaMin?: number | null;
  sigmaMax?: number | null;
  finalSigmasType?: FinalSigmasType; // 'zero'
}

export type ResolvedEulerOptions = ResolvedCommonOptions & {
  useKarrasSigmas: boolean;
  sigmaMin: number | null;
  sigmaMax: number | null;
  finalSigmasType: FinalSigmasType;
};

/** The x0 estimate of the sigma-space schedulers as a kernel conversion. */
export function sigmaSpaceConvert(prediction: PredictionType, sigma: number): Pick<SolverCoefficients, 'convert' | 'p' | 'q'> {
  // epsilon: sample - sigma * model_output
  if (prediction === 'epsilon') return { convert: Convert.Sub, p: 1, q: sigma };
  // v: model_output * (-sigma / (sigma^2 + 1) ** 0.5) + sample / (sigma^2 + 1)
  if (prediction === 'v_prediction') {
    const s2p1 = f(f(sigma * sigma) + 1);
    return { convert: Convert.AddDiv, p: f(-sigma / f32.sqrt(s2p1)), q: s2p1 };
  }
  return { convert: Convert.Identity, p: 0, q: 0 };
}

/** init_noise_sigma of the Euler / Heun schedulers from their sigmas. */
function initSigma(sigmas: Float32Array, spacing: string): number {
  let max = 0;
  for (const s of sigmas) if (s > max) max = s;
  if (spacing === 'linspace' || spacing === 'trailing') return max;
  return f32.sqrt(f(f(max * max) + 1));
}

const NO_THRESHOLD = { clipSampleRange: 1, dynamicThresholdingRatio: 0.995, sampleMaxValue: 1, corrector: null } as const;

abstract class SigmaScheduler<O extends ResolvedCommonOptions> extends SolverSchedulerBase<O> {
  protected constructor(config: O, depth: number) {
    super(config, depth);
    // Before setTimesteps: every training step (diffusers' __init__).
    const full = this.trainSigmas;
    this.sigmas = Float32Array.from([...Array.from(full).reverse(), 0]);
    this.timesteps = Array.from({ length: full.length }, (_, i) => full.length - 1 - i);
  }

  get initNoiseSigma(): number {
    return initSigma(this.sigmas, this.config.timestepSpacing);
  }

  /** sample / sqrt(sigma^2 + 1) at this timestep's sigma. */
  scaleModelInput(sample: Float32Array, timestep: number): Float32Array {
    const i = this.initStepIndex(timestep, 'error');
    return scaleBySigma(sample, this.sigmas[i]!);
  }

  protected plan(i: number, coefficients: SolverCoefficients): SolverPlan {
    return {
      index: i,
      coefficients,
      inputScale: sigmaInputScale(this.sigmas[i]!),
      x0: true,
      allowTwoHalves: false,
      commit: () => {
        this.stepIndexValue = i + 1;
      },
    };
  }
}

export class EulerDiscreteScheduler extends SigmaScheduler<ResolvedEulerOptions> {
  /** @param keyStyle internal: how option names appear in errors. */
  constructor(options: EulerDiscreteOptions = {}, keyStyle: KeyStyle = 'camel') {
    const { r, opts, common } = readSolverOptions(options as Record<string, unknown>, keyStyle, 'EulerDiscreteScheduler', {
      timestepSpacing: 'linspace',
    });
    refuseUnsupported(r, opts, 'EulerDiscreteScheduler', [
      ['useExponentialSigmas', false],
      ['useBetaSigmas', false],
      ['interpolationType', 'linear'],
      ['timestepType', 'discrete'],
    ]);
    const bound = (key: string) => (opts[key] === undefined ? null : r.number(key, 0));
    super(
      {
        ...common,
        useKarrasSigmas: r.boolean('useKarrasSigmas', false),
        sigmaMin: bound('sigmaMin'),
        sigmaMax: bound('sigmaMax'),
        finalSigmasType: r.oneOf<FinalSigmasType>('finalSigmasType', 'zero', ['zero', 'sigma_min']),
      },
      1,
    );
  }

  static fromConfig(json: unknown): EulerDiscreteScheduler {
    const keys = ['useKarrasSigmas', 'useExponentialSigmas', 'useBetaSigmas', 'sigmaMin', 'sigmaMax', 'finalSigmasType', 'interpolationType', 'timestepType'];
    return new EulerDiscreteScheduler(solverOptionsFromConfig(json, keys) as EulerDiscreteOptions, 'snake');
  }

  setTimesteps(numInferenceSteps: number): void {
    this.checkInferenceSteps(numInferenceSteps);
    const cfg = this.config;
    let timesteps = sigmaTimesteps(cfg.timestepSpacing, cfg.numTrainTimesteps, numInferenceSteps, cfg.stepsOffset);
    const full = this.trainSigmas;
    let sigmas = timesteps.map((t) => npInterp(t, full));
    if (cfg.useKarrasSigmas) {
      const logSigmas = logSigmasF32(full);
      sigmas = karrasSigmas(cfg.sigmaMin ?? sigmas[sigmas.length - 1]!, cfg.sigmaMax ?? sigmas[0]!, numInferenceSteps);
      timesteps = sigmas.map((s) => f(sigmaToT(s, logSigmas)));
    }
    const a0 = this.alphasCumprod[0]!;
    const sigmaLast = cfg.finalSigmasType === 'sigma_min' ? f32.sqrt(f(f(1 - a0) / a0)) : 0;
    this.sigmas = Float32Array.from([...sigmas, sigmaLast]);
    this.timesteps = timesteps;
    this.numInferenceSteps = numInferenceSteps;
    this.resetRun();
  }

  stepCoefficients(i: number): SolverCoefficients {
    const sigma = this.sigmas[i]!;
    // derivative = (x - x0) / sigma; prev = x + derivative * (sigma_next - sigma)
    const dt = f(this.sigmas[i + 1]! - sigma);
    const k = dt / sigma;
    return {
      ...sigmaSpaceConvert(this.config.predictionType, sigma),
      clip: ConvClip.None,
      ...NO_THRESHOLD,
      update: Lin.of('x', 1 + k).plus('conv', -k),
      keepLast: false,
    };
  }

  /** The next Euler step (s_churn 0, as diffusers' pipelines call it; step() runs it). */
  planStep(t: number): SolverPlan {
    const i = this.initStepIndex(t, 'error');
    return this.plan(i, this.stepCoefficients(i));
  }
}

export type EulerAncestralDiscreteOptions = Omit<EulerDiscreteOptions, 'useKarrasSigmas' | 'sigmaMin' | 'sigmaMax' | 'finalSigmasType'>;

export class EulerAncestralDiscreteScheduler extends SigmaScheduler<ResolvedCommonOptions> {
  /** @param keyStyle internal: how option names appear in errors. */
  constructor(options: EulerAncestralDiscreteOptions = {}, keyStyle: KeyStyle = 'camel') {
    const { common } = readSolverOptions(options as Record<string, unknown>, keyStyle, 'EulerAncestralDiscreteScheduler', {
      timestepSpacing: 'linspace',
    });
    super(common, 1);
  }

  static fromConfig(json: unknown): EulerAncestralDiscreteScheduler {
    return new EulerAncestralDiscreteScheduler(solverOptionsFromConfig(json, []) as EulerAncestralDiscreteOptions, 'snake');
  }

  setTimesteps(numInferenceSteps: number): void {
    this.checkInferenceSteps(numInferenceSteps);
    const cfg = this.config;
    const timesteps = sigmaTimesteps(cfg.timestepSpacing, cfg.numTrainTimesteps, numInferenceSteps, cfg.stepsOffset);
    const full = this.trainSigmas;
    this.sigmas = Float32Array.from([...timesteps.map((t) => npInterp(t, full)), 0]);
    this.timesteps = timesteps;
    this.numInferenceSteps = numInferenceSteps;
    this.resetRun();
  }

  stepCoefficients(i: number): SolverCoefficients {
    const sigma = this.sigmas[i]!;
    const to = this.sigmas[i + 1]!;
    const from2 = f(sigma * sigma);
    const to2 = f(to * to);
    const sigmaUp = f32.sqrt(f(f(to2 * f(from2 - to2)) / from2));
    const sigmaDown = f32.sqrt(f(to2 - f(sigmaUp * sigmaUp)));
    const k = f(sigmaDown - sigma) / sigma;
    return {
      ...sigmaSpaceConvert(this.config.predictionType, sigma),
      clip: ConvClip.None,
      ...NO_THRESHOLD,
      update: Lin.of('x', 1 + k).plus('conv', -k).plus('noise', sigmaUp),
      keepLast: false,
    };
  }

  /** The next ancestral step (step() runs it, drawing noise from options.noise or options.generator). */
  planStep(t: number): SolverPlan {
    const i = this.initStepIndex(t, 'error');
    return this.plan(i, this.stepCoefficients(i));
  }
}
