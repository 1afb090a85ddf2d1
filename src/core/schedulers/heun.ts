// HeunDiscreteScheduler (Karras et al. 2022, arXiv 2206.00364, Algorithm 1)
// with diffusers' semantics: each inference timestep appears twice in
// `timesteps` (an Euler stage, then the trapezoidal correction), the same
// float32 sigmas (Karras optional), one fused kernel pass per stage; the
// first stage's sample and x0 stay beside the sample for the second.

import type { CommonSchedulerOptions, KeyStyle, ResolvedCommonOptions } from './config.js';
import { sigmaSpaceConvert } from './euler.js';
import { f32, karrasSigmas, logSigmasF32, npInterp, sigmaTimesteps, sigmaToT } from './sigmas.js';
import { ConvClip, Lin, type SolverCoefficients } from './solver_kernel.js';
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

export interface HeunDiscreteOptions
  extends Omit<CommonSchedulerOptions, 'thresholding' | 'dynamicThresholdingRatio' | 'sampleMaxValue' | 'rescaleBetasZeroSnr'> {
  useKarrasSigmas?: boolean; // false
}

export type ResolvedHeunOptions = ResolvedCommonOptions & { useKarrasSigmas: boolean };

const NAME = 'HeunDiscreteScheduler';

export class HeunDiscreteScheduler extends SolverSchedulerBase<ResolvedHeunOptions> {
  /** dt of the pending second stage; null in the first stage (diffusers' state_in_first_order). */
  private dt: number | null = null;

  /** @param keyStyle internal: how option names appear in errors. */
  constructor(options: HeunDiscreteOptions = {}, keyStyle: KeyStyle = 'camel') {
    // Heun's own defaults: beta_start 0.00085, beta_end 0.012, clip_sample false.
    const { r, opts, common } = readSolverOptions(options as Record<string, unknown>, keyStyle, NAME, {
      timestepSpacing: 'linspace',
      betaStart: 0.00085,
      betaEnd: 0.012,
      clipSample: false,
    });
    refuseUnsupported(r, opts, NAME, [
      ['useExponentialSigmas', false],
      ['useBetaSigmas', false],
    ]);
    super({ ...common, useKarrasSigmas: r.boolean('useKarrasSigmas', false) }, 1);
    this.setTimesteps(this.config.numTrainTimesteps);
    this.numInferenceSteps = null;
  }

  static fromConfig(json: unknown): HeunDiscreteScheduler {
    const keys = ['useKarrasSigmas', 'useExponentialSigmas', 'useBetaSigmas'];
    return new HeunDiscreteScheduler(solverOptionsFromConfig(json, keys) as HeunDiscreteOptions, 'snake');
  }

  get initNoiseSigma(): number {
    let max = 0;
    for (const s of this.sigmas) if (s > max) max = s;
    const sp = this.config.timestepSpacing;
    return sp === 'linspace' || sp === 'trailing' ? max : f32.sqrt(f(f(max * max) + 1));
  }

  /** Whether the next step is an Euler (first) stage. */
  get stateInFirstOrder(): boolean {
    return this.dt === null;
  }

  setTimesteps(numInferenceSteps: number): void {
    this.checkInferenceSteps(numInferenceSteps);
    const cfg = this.config;
    let timesteps = sigmaTimesteps(cfg.timestepSpacing, cfg.numTrainTimesteps, numInferenceSteps, cfg.stepsOffset);
    const full = this.trainSigmas;
    let sigmas = timesteps.map((t) => npInterp(t, full));
    if (cfg.useKarrasSigmas) {
      const logSigmas = logSigmasF32(full);
      sigmas = karrasSigmas(sigmas[sigmas.length - 1]!, sigmas[0]!, numInferenceSteps);
      timesteps = sigmas.map((s) => sigmaToT(s, logSigmas));
    }
    const s32 = Float32Array.from([...sigmas, 0]);
    // sigmas: [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]; timesteps: [t0, t1, t1, ...]
    const sig: number[] = [s32[0]!];
    for (let i = 1; i < s32.length - 1; i++) sig.push(s32[i]!, s32[i]!);
    sig.push(s32[s32.length - 1]!);
    const ts: number[] = [f(timesteps[0]!)];
    for (let i = 1; i < timesteps.length; i++) ts.push(f(timesteps[i]!), f(timesteps[i]!));
    this.sigmas = Float32Array.from(sig);
    this.timesteps = ts;
    this.numInferenceSteps = numInferenceSteps;
    this.dt = null;
    this.resetRun();
  }

  scaleModelInput(sample: Float32Array, timestep: number): Float32Array {
    const i = this.initStepIndex(timestep, 'error');
    return scaleBySigma(sample, this.sigmas[i]!);
  }

  /** The kernel record of the stage at step index i. */
  stepCoefficients(i: number, firstOrder: boolean, dt: number | null): SolverCoefficients {
    const cfg = this.config;
    const sigma = firstOrder ? this.sigmas[i]! : this.sigmas[i - 1]!;
    const sigmaNext = firstOrder ? this.sigmas[i + 1]! : this.sigmas[i]!;
    const sigmaInput = firstOrder ? sigma : sigmaNext;
    let update: Lin;
    if (firstOrder) {
      // derivative = (x - x0) / sigma; prev = x + derivative * (sigma_next - sigma); keep x and x0
      const k = f(sigmaNext - sigma) / sigma;
      update = Lin.of('x', 1 + k).plus('conv', -k);
    } else {
      // prev = L + dt * ((L - x0_1) / sigma + (x - x0) / sigma_next) / 2
      const d = dt! / 2;
      update = Lin.of('last', 1 + d / sigma).plus('h0', -d / sigma).plus('x', d / sigmaNext).plus('conv', -d / sigmaNext);
    }
    return {
      ...sigmaSpaceConvert(cfg.predictionType, sigmaInput),
      clip: cfg.clipSample ? ConvClip.Clamp : ConvClip.None,
      clipSampleRange: f(cfg.clipSampleRange),
      dynamicThresholdingRatio: 0.995,
      sampleMaxValue: 1,
      corrector: null,
      update,
      keepLast: firstOrder,
    };
  }

  /** The next stage (step() runs it; the model was called at this stage's timestep). */
  planStep(t: number): SolverPlan {
    const i = this.initStepIndex(t, 'error');
    const first = this.dt === null;
    return {
      index: i,
      coefficients: this.stepCoefficients(i, first, this.dt),
      inputScale: sigmaInputScale(this.sigmas[i]!),
      x0: true,
      allowTwoHalves: false,
      commit: () => {
        this.dt = first ? f(this.sigmas[i + 1]! - this.sigmas[i]!) : null;
        this.stepIndexValue = i + 1;
      },
    };
  }
}
