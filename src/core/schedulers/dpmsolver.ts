// DPMSolverMultistepScheduler (DPM-Solver and DPM-Solver++, Lu et al. 2022,
// arXiv 2206.00927 / 2211.01095) with diffusers' semantics: same options,
// timesteps and sigmas, and per step the same float32 scalars, combined in
// the engine's fused solver kernel (solver_kernel.ts).

import { OptionReader, type CommonSchedulerOptions, type KeyStyle, type PredictionType, type ResolvedCommonOptions } from './config.js';
import {
  karrasSigmas,
  lambdaOf,
  logSigmasF32,
  multistepTimesteps,
  npInterp,
  npRound,
  sigmaToAlphaSigmaT,
  sigmaToT,
  f32,
} from './sigmas.js';
import { Convert, ConvClip, Lin, type SolverCoefficients } from './solver_kernel.js';
import {
  readSolverOptions,
  refuseUnsupported,
  SolverSchedulerBase,
  solverOptionsFromConfig,
  type SolverPlan,
} from './solver_base.js';

const f = Math.fround;

export type DPMAlgorithmType = 'dpmsolver' | 'dpmsolver++' | 'sde-dpmsolver' | 'sde-dpmsolver++';
export type DPMSolverType = 'midpoint' | 'heun';
export type FinalSigmasType = 'zero' | 'sigma_min';

export interface DPMSolverMultistepOptions extends Omit<CommonSchedulerOptions, 'clipSample' | 'clipSampleRange'> {
  /** 1, 2 (default) or 3. */
  solverOrder?: number;
  algorithmType?: DPMAlgorithmType; // 'dpmsolver++'
  solverType?: DPMSolverType; // 'midpoint'
  /** Lower-order steps at the end for fewer than 15 steps. Default true. */
  lowerOrderFinal?: boolean;
  /** First order at the last step. Default false. */
  eulerAtFinal?: boolean;
  useKarrasSigmas?: boolean; // false
  finalSigmasType?: FinalSigmasType; // 'zero'
  /** Clips lambda(t) from below (-Infinity: no clipping). */
  lambdaMinClipped?: number;
  /** A 2C-channel model output (learned variance): its first half is used. */
  varianceType?: 'learned' | 'learned_range' | null;
}

export type ResolvedDPMOptions = ResolvedCommonOptions & {
  solverOrder: number;
  algorithmType: DPMAlgorithmType;
  solverType: DPMSolverType;
  lowerOrderFinal: boolean;
  eulerAtFinal: boolean;
  useKarrasSigmas: boolean;
  finalSigmasType: FinalSigmasType;
  lambdaMinClipped: number;
  varianceType: 'learned' | 'learned_range' | null;
};

const OWN_KEYS = [
  'solverOrder', 'algorithmType', 'solverType', 'lowerOrderFinal', 'eulerAtFinal', 'useKarrasSigmas',
  'useExponentialSigmas', 'useBetaSigmas', 'useLuLambdas', 'useFlowSigmas', 'flowShift', 'finalSigmasType',
  'lambdaMinClipped', 'varianceType', 'useDynamicShifting', 'timeShiftType',
];

const NAME = 'DPMSolverMultistepScheduler';

export class DPMSolverMultistepScheduler extends SolverSchedulerBase<ResolvedDPMOptions> {
  readonly initNoiseSigma = 1.0;
  private lowerOrderNums = 0;

  /** @param keyStyle internal: how option names appear in errors. */
  constructor(options: DPMSolverMultistepOptions = {}, keyStyle: KeyStyle = 'camel') {
    const { r, opts, common } = readSolverOptions(options as Record<string, unknown>, keyStyle, NAME, {
      timestepSpacing: 'linspace',
    });
    refuseUnsupported(r, opts, NAME, [
      ['useExponentialSigmas', false],
      ['useBetaSigmas', false],
      ['useLuLambdas', false],
      ['useFlowSigmas', false],
      ['useDynamicShifting', false],
    ]);
    if (common.predictionType !== 'epsilon' && common.predictionType !== 'sample' && common.predictionType !== 'v_prediction') {
      r.fail('predictionType', common.predictionType, `is not supported by ${NAME}`);
    }
    // diffusers maps the deis algorithm and the UniPC / logrho solver types onto these.
    const algo = opts.algorithmType === 'deis' ? 'dpmsolver++' : opts.algorithmType;
    const solverTypeRaw = ['logrho', 'bh1', 'bh2'].includes(opts.solverType as string) ? 'midpoint' : opts.solverType;
    const r2 = new OptionReader({ ...opts, algorithmType: algo, solverType: solverTypeRaw }, keyStyle);
    const algorithmType = r2.oneOf<DPMAlgorithmType>('algorithmType', 'dpmsolver++', ['dpmsolver', 'dpmsolver++', 'sde-dpmsolver', 'sde-dpmsolver++'], ` by ${NAME}`);
    const solverType = r2.oneOf<DPMSolverType>('solverType', 'midpoint', ['midpoint', 'heun'], ` by ${NAME}`);
    const solverOrder = r.integer('solverOrder', 2, 1, 3);
    const finalSigmasType = r.oneOf<FinalSigmasType>('finalSigmasType', 'zero', ['zero', 'sigma_min']);
    if (algorithmType !== 'dpmsolver++' && algorithmType !== 'sde-dpmsolver++' && finalSigmasType === 'zero') {
      r.fail('finalSigmasType', finalSigmasType, `is not supported with algorithm_type ${algorithmType}; use 'sigma_min'`);
    }
    if (algorithmType === 'sde-dpmsolver' && solverOrder === 3) {
      r.fail('solverOrder', solverOrder, 'is not supported with sde-dpmsolver (diffusers has no third-order sde-dpmsolver)');
    }
    if (common.thresholding && (algorithmType === 'dpmsolver' || algorithmType === 'sde-dpmsolver')) {
      r.fail('thresholding', true, `is not supported by marble with algorithm_type ${algorithmType} (use dpmsolver++)`);
    }
    const lmc = opts.lambdaMinClipped;
    if (lmc !== undefined && (typeof lmc !== 'number' || Number.isNaN(lmc))) r.fail('lambdaMinClipped', lmc, 'must be a number');
    // Only learned / learned_range mean anything to DPM-Solver (a 2C-channel
    // output); other values, e.g. a DDPM config's fixed_small, act as None.
    const vt = opts.varianceType;
    const varianceType = vt === 'learned' || vt === 'learned_range' ? vt : null;
    super(
      {
        ...common,
        solverOrder,
        algorithmType,
        solverType,
        lowerOrderFinal: r.boolean('lowerOrderFinal', true),
        eulerAtFinal: r.boolean('eulerAtFinal', false),
        useKarrasSigmas: r.boolean('useKarrasSigmas', false),
        finalSigmasType,
        lambdaMinClipped: (lmc as number | undefined) ?? -Infinity,
        varianceType,
      },
      3,
    );
  }

  /** Build from diffusers' scheduler_config.json (snake_case; unknown keys ignored). */
  static fromConfig(json: unknown): DPMSolverMultistepScheduler {
    return new DPMSolverMultistepScheduler(solverOptionsFromConfig(json, OWN_KEYS) as DPMSolverMultistepOptions, 'snake');
  }

  /** set_timesteps(n): timesteps and sigmas as diffusers computes them. */
  setTimesteps(numInferenceSteps: number): void {
    this.checkInferenceSteps(numInferenceSteps);
    const cfg = this.config;
    const T = cfg.numTrainTimesteps;
    // lambda_t = log(alpha_t) - log(sigma_t); searchsorted on its flip.
    let clippedIdx = 0;
    if (cfg.lambdaMinClipped > -Infinity) {
      const lambdas: number[] = [];
      for (let t = T - 1; t >= 0; t--) {
        const a = this.alphasCumprod[t]!;
        lambdas.push(f(f32.log(f32.sqrt(a)) - f32.log(f32.sqrt(f(1 - a)))));
      }
      while (clippedIdx < lambdas.length && lambdas[clippedIdx]! < cfg.lambdaMinClipped) clippedIdx++;
    }
    const last = T - clippedIdx;
    let timesteps = multistepTimesteps(cfg.timestepSpacing, T, last, numInferenceSteps, cfg.stepsOffset);
    const full = this.trainSigmas;
    let sigmas: number[];
    if (cfg.useKarrasSigmas) {
      const logSigmas = logSigmasF32(full);
      sigmas = karrasSigmas(full[0]!, full[full.length - 1]!, numInferenceSteps);
      const ts = sigmas.map((s) => sigmaToT(s, logSigmas));
      timesteps = cfg.betaSchedule !== 'squaredcos_cap_v2' ? ts.map((t) => Math.trunc(npRound(t))) : ts.map(Math.trunc);
    } else {
      sigmas = timesteps.map((t) => npInterp(t, full));
    }
    const a0 = this.alphasCumprod[0]!;
    const sigmaLast = cfg.finalSigmasType === 'sigma_min' ? f32.sqrt(f(f(1 - a0) / a0)) : 0;
    this.sigmas = Float32Array.from([...sigmas, sigmaLast]);
    this.timesteps = timesteps;
    this.numInferenceSteps = timesteps.length;
    this.lowerOrderNums = 0;
    this.resetRun();
  }

  /** Identity: DPM-Solver takes the sample as it is. */
  scaleModelInput(sample: Float32Array, _timestep?: number): Float32Array {
    return sample;
  }

  /** The order the next step uses (diffusers' step() logic). */
  private orderFor(i: number): number {
    const cfg = this.config;
    const N = this.timesteps.length;
    const lowerOrderFinal =
      i === N - 1 && (cfg.eulerAtFinal || (cfg.lowerOrderFinal && N < 15) || cfg.finalSigmasType === 'zero');
    const lowerOrderSecond = i === N - 2 && cfg.lowerOrderFinal && N < 15;
    if (cfg.solverOrder === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) return 1;
    if (cfg.solverOrder === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) return 2;
    return 3;
  }

  /** The kernel record of step i at `order` (history: h0 the previous converted output, h1 the one before). */
  stepCoefficients(i: number, order: number): SolverCoefficients {
    const cfg = this.config;
    const s = this.sigmas;
    const { alphaT: alphaS0, sigmaT: sigmaS0 } = sigmaToAlphaSigmaT(s[i]!);
    const { alphaT, sigmaT } = sigmaToAlphaSigmaT(s[i + 1]!);
    const plusPlus = cfg.algorithmType === 'dpmsolver++' || cfg.algorithmType === 'sde-dpmsolver++';
    const conv = convertFor(cfg.predictionType, plusPlus, alphaS0, sigmaS0);

    const lambdaT = lambdaOf(alphaT, sigmaT);
    const lambdaS0 = lambdaOf(alphaS0, sigmaS0);
    const h = f(lambdaT - lambdaS0);
    const lambdaAt = (j: number) => {
      const { alphaT: a, sigmaT: sg } = sigmaToAlphaSigmaT(s[j]!);
      return lambdaOf(a, sg);
    };

    // D0 and the differences D1 (and D2), as combinations of conv (m0), h0 (m1), h1 (m2).
    const D0 = Lin.of('conv');
    let D1 = Lin.zero();
    let D2 = Lin.zero();
    if (order === 2) {
      const h0 = f(lambdaS0 - lambdaAt(i - 1));
      const r0 = f(h0 / h);
      D1 = Lin.of('conv').sub(Lin.of('h0')).scale(f(1 / r0));
    } else if (order === 3) {
      const lambdaS1 = lambdaAt(i - 1);
      const h0 = f(lambdaS0 - lambdaS1);
      const h1 = f(lambdaS1 - lambdaAt(i - 2));
      const r0 = f(h0 / h);
      const r1 = f(h1 / h);
      const D10 = Lin.of('conv').sub(Lin.of('h0')).scale(f(1 / r0));
      const D11 = Lin.of('h0').sub(Lin.of('h1')).scale(f(1 / r1));
      const rs = f(r0 + r1);
      D1 = D10.add(D10.sub(D11).scale(f(r0 / rs)));
      D2 = D10.sub(D11).scale(f(1 / rs));
    }

    const x = Lin.of('x');
    const expNegH = f32.exp(f(-h));
    const expH = f32.exp(h);
    const e2 = f32.exp(f(-2 * h));
    let update: Lin;
    switch (cfg.algorithmType) {
      case 'dpmsolver++': {
        const A = f(sigmaT / sigmaS0);
        const B = f(alphaT * f(expNegH - 1));
        update = x.scale(A).sub(D0.scale(B));
        if (order === 2 && cfg.solverType === 'midpoint') update = update.sub(D1.scale(f(0.5 * B)));
        if ((order === 2 && cfg.solverType === 'heun') || order === 3)
          update = update.add(D1.scale(f(alphaT * f(f(f(expNegH - 1) / h) + 1))));
        if (order === 3) update = update.sub(D2.scale(f(alphaT * f(f(f(f(expNegH - 1) + h) / f(h * h)) - 0.5))));
        break;
      }
      case 'dpmsolver': {
        const A = f(alphaT / alphaS0);
        const B = f(sigmaT * f(expH - 1));
        update = x.scale(A).sub(D0.scale(B));
        if (order === 2 && cfg.solverType === 'midpoint') update = update.sub(D1.scale(f(0.5 * B)));
        if ((order === 2 && cfg.solverType === 'heun') || order === 3)
          update = update.sub(D1.scale(f(sigmaT * f(f(f(expH - 1) / h) - 1))));
        if (order === 3) update = update.sub(D2.scale(f(sigmaT * f(f(f(f(expH - 1) - h) / f(h * h)) - 0.5))));
        break;
      }
      case 'sde-dpmsolver++': {
        const A = f(f(sigmaT / sigmaS0) * expNegH);
        const E = f(alphaT * f(1 - e2));
        update = x.scale(A).add(D0.scale(E));
        if (order === 2 && cfg.solverType === 'midpoint') update = update.add(D1.scale(f(0.5 * E)));
        if ((order === 2 && cfg.solverType === 'heun') || order === 3)
          update = update.add(D1.scale(f(alphaT * f(f(f(1 - e2) / f(-2 * h)) + 1))));
        if (order === 3) {
          const h2 = f(2 * h);
          update = update.add(D2.scale(f(alphaT * f(f(f(f(1 - e2) - h2) / f(h2 * h2)) - 0.5))));
        }
        update = update.plus('noise', f(sigmaT * f32.sqrt(f(1 - e2))));
        break;
      }
      case 'sde-dpmsolver': {
        const A = f(alphaT / alphaS0);
        const B = f(sigmaT * f(expH - 1));
        update = x.scale(A).sub(D0.scale(f(2 * B)));
        if (order === 2 && cfg.solverType === 'midpoint') update = update.sub(D1.scale(B));
        if (order === 2 && cfg.solverType === 'heun')
          update = update.sub(D1.scale(f(2 * f(sigmaT * f(f(f(expH - 1) / h) - 1)))));
        update = update.plus('noise', f(sigmaT * f32.sqrt(f(f32.exp(f(2 * h)) - 1))));
        break;
      }
    }
    return {
      ...conv,
      clip: cfg.thresholding ? ConvClip.DynamicThreshold : ConvClip.None,
      clipSampleRange: 1,
      dynamicThresholdingRatio: f(cfg.dynamicThresholdingRatio),
      sampleMaxValue: f(cfg.sampleMaxValue),
      corrector: null,
      update,
      keepLast: false,
    };
  }

  /**
   * The next step (step() runs it: arrays [B, C, H, W] flattened; the sde
   * algorithms draw noise from options.noise or options.generator).
   */
  planStep(t: number): SolverPlan {
    const i = this.initStepIndex(t, 'last');
    return {
      index: i,
      coefficients: this.stepCoefficients(i, this.orderFor(i)),
      inputScale: 1,
      x0: this.config.algorithmType.endsWith('++'),
      allowTwoHalves: this.config.varianceType !== null,
      commit: () => {
        if (this.lowerOrderNums < this.config.solverOrder) this.lowerOrderNums++;
        this.stepIndexValue = i + 1;
      },
    };
  }
}

/** convert_model_output as a kernel conversion: x0 (dpmsolver++) or epsilon (dpmsolver). */
export function convertFor(
  prediction: PredictionType,
  toX0: boolean,
  alphaT: number,
  sigmaT: number,
): Pick<SolverCoefficients, 'convert' | 'p' | 'q'> {
  if (toX0) {
    if (prediction === 'epsilon') return { convert: Convert.SubDiv, p: sigmaT, q: alphaT };
    if (prediction === 'sample') return { convert: Convert.Identity, p: 0, q: 0 };
    return { convert: Convert.Sub, p: alphaT, q: sigmaT };
  }
  if (prediction === 'epsilon') return { convert: Convert.Identity, p: 0, q: 0 };
  if (prediction === 'sample') return { convert: Convert.SubDiv, p: alphaT, q: sigmaT };
  return { convert: Convert.Add, p: alphaT, q: sigmaT };
}
