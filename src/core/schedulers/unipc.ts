// UniPCMultistepScheduler (Zhao et al. 2023, arXiv 2302.04867) with
// diffusers' semantics: the bh1 / bh2 predictor-corrector of orders 1-3,
// predict_x0 or noise prediction, disable_corrector, Karras sigmas. Each step
// (corrector of the previous step's prediction, then the next predictor) is
// one pass of the engine's fused solver kernel (solver_kernel.ts).

import { OptionReader, type CommonSchedulerOptions, type KeyStyle, type ResolvedCommonOptions } from './config.js';
import { convertFor, type FinalSigmasType } from './dpmsolver.js';
import {
  f32,
  karrasSigmas,
  lambdaOf,
  logSigmasF32,
  multistepTimesteps,
  npInterp,
  npRound,
  sigmaToAlphaSigmaT,
  sigmaToT,
} from './sigmas.js';
import { ConvClip, Lin, type SolverCoefficients, type Term } from './solver_kernel.js';
import {
  readSolverOptions,
  refuseUnsupported,
  SolverSchedulerBase,
  solverOptionsFromConfig,
  type SolverPlan,
} from './solver_base.js';

const f = Math.fround;

export type UniPCSolverType = 'bh1' | 'bh2';

export interface UniPCMultistepOptions extends Omit<CommonSchedulerOptions, 'clipSample' | 'clipSampleRange'> {
  solverOrder?: number; // 2
  /** Predict x0 (true, default) or the noise. */
  predictX0?: boolean;
  solverType?: UniPCSolverType; // 'bh2'
  lowerOrderFinal?: boolean; // true
  /** Step indices whose corrector is skipped. */
  disableCorrector?: number[];
  useKarrasSigmas?: boolean; // false
  finalSigmasType?: FinalSigmasType; // 'zero'
  /** Karras sigma bounds (default: the training schedule's). */
  sigmaMin?: number | null;
  sigmaMax?: number | null;
}

export type ResolvedUniPCOptions = ResolvedCommonOptions & {
  solverOrder: number;
  predictX0: boolean;
  solverType: UniPCSolverType;
  lowerOrderFinal: boolean;
  disableCorrector: number[];
  useKarrasSigmas: boolean;
  finalSigmasType: FinalSigmasType;
  sigmaMin: number | null;
  sigmaMax: number | null;
};

const OWN_KEYS = [
  'solverOrder', 'predictX0', 'solverType', 'lowerOrderFinal', 'disableCorrector', 'solverP', 'useKarrasSigmas',
  'useExponentialSigmas', 'useBetaSigmas', 'useFlowSigmas', 'flowShift', 'finalSigmasType', 'useDynamicShifting',
  'timeShiftType', 'sigmaMin', 'sigmaMax', 'shiftTerminal',
];

const NAME = 'UniPCMultistepScheduler';

/** torch.linalg.solve for a small float32 system: LU with partial pivoting, float32 arithmetic. */
export function solveF32(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row) => row.map(f));
  const x = b.map(f);
  for (let k = 0; k < n; k++) {
    let p = k;
    for (let i = k + 1; i < n; i++) if (Math.abs(M[i]![k]!) > Math.abs(M[p]![k]!)) p = i;
    [M[k], M[p]] = [M[p]!, M[k]!];
    [x[k], x[p]] = [x[p]!, x[k]!];
    const inv = f(1 / M[k]![k]!);
    for (let i = k + 1; i < n; i++) {
      const l = f(M[i]![k]! * inv);
      for (let j = k + 1; j < n; j++) M[i]![j] = f(M[i]![j]! - f(l * M[k]![j]!));
      x[i] = f(x[i]! - f(l * x[k]!));
    }
  }
  for (let k = n - 1; k >= 0; k--) {
    let s = x[k]!;
    for (let j = k + 1; j < n; j++) s = f(s - f(M[k]![j]! * x[j]!));
    x[k] = f(s / M[k]![k]!);
  }
  return x;
}

export class UniPCMultistepScheduler extends SolverSchedulerBase<ResolvedUniPCOptions> {
  readonly initNoiseSigma = 1.0;
  private lowerOrderNums = 0;
  private thisOrder = 1;
  private hasLast = false;

  /** @param keyStyle internal: how option names appear in errors. */
  constructor(options: UniPCMultistepOptions = {}, keyStyle: KeyStyle = 'camel') {
    const { r, opts, common } = readSolverOptions(options as Record<string, unknown>, keyStyle, NAME, {
      timestepSpacing: 'linspace',
    });
    refuseUnsupported(r, opts, NAME, [
      ['useExponentialSigmas', false],
      ['useBetaSigmas', false],
      ['useFlowSigmas', false],
      ['useDynamicShifting', false],
      ['solverP', null],
      ['shiftTerminal', null],
    ]);
    // diffusers maps the DPM-Solver solver types onto bh2.
    const st = ['midpoint', 'heun', 'logrho'].includes(opts.solverType as string) ? 'bh2' : opts.solverType;
    const solverType = new OptionReader({ solverType: st }, keyStyle).oneOf<UniPCSolverType>('solverType', 'bh2', ['bh1', 'bh2'], ` by ${NAME}`);
    const dc = opts.disableCorrector ?? [];
    if (!Array.isArray(dc) || dc.some((v) => !Number.isInteger(v))) r.fail('disableCorrector', dc, 'must be an array of step indices');
    const bound = (key: string) => (opts[key] === undefined ? null : r.number(key, 0));
    super(
      {
        ...common,
        solverOrder: r.integer('solverOrder', 2, 1, 3),
        predictX0: r.boolean('predictX0', true),
        solverType,
        lowerOrderFinal: r.boolean('lowerOrderFinal', true),
        disableCorrector: dc as number[],
        useKarrasSigmas: r.boolean('useKarrasSigmas', false),
        finalSigmasType: r.oneOf<FinalSigmasType>('finalSigmasType', 'zero', ['zero', 'sigma_min']),
        sigmaMin: bound('sigmaMin'),
        sigmaMax: bound('sigmaMax'),
      },
      3,
    );
  }

  /** Build from diffusers' scheduler_config.json (snake_case; unknown keys ignored). */
  static fromConfig(json: unknown): UniPCMultistepScheduler {
    return new UniPCMultistepScheduler(solverOptionsFromConfig(json, OWN_KEYS) as UniPCMultistepOptions, 'snake');
  }

  setTimesteps(numInferenceSteps: number): void {
    this.checkInferenceSteps(numInferenceSteps);
    const cfg = this.config;
    const T = cfg.numTrainTimesteps;
    let timesteps = multistepTimesteps(cfg.timestepSpacing, T, T, numInferenceSteps, cfg.stepsOffset);
    const full = this.trainSigmas;
    let sigmas: number[];
    let sigmaLast: number;
    if (cfg.useKarrasSigmas) {
      const logSigmas = logSigmasF32(full);
      sigmas = karrasSigmas(cfg.sigmaMin ?? full[0]!, cfg.sigmaMax ?? full[full.length - 1]!, numInferenceSteps);
      timesteps = sigmas.map((s) => Math.trunc(npRound(sigmaToT(s, logSigmas))));
      sigmaLast = cfg.finalSigmasType === 'sigma_min' ? sigmas[sigmas.length - 1]! : 0;
    } else {
      sigmas = timesteps.map((t) => npInterp(t, full));
      const a0 = this.alphasCumprod[0]!;
      sigmaLast = cfg.finalSigmasType === 'sigma_min' ? f32.sqrt(f(f(1 - a0) / a0)) : 0;
    }
    this.sigmas = Float32Array.from([...sigmas, sigmaLast]);
    this.timesteps = timesteps;
    this.numInferenceSteps = timesteps.length;
    this.lowerOrderNums = 0;
    this.thisOrder = 1;
    this.hasLast = false;
    this.resetRun();
  }

  scaleModelInput(sample: Float32Array, _timestep?: number): Float32Array {
    return sample;
  }

  /**
   * The bh update from sigma index `s0` to `t` as a combination of x (the
   * sample it starts from), m0 and the older outputs `older` (m1, m2...),
   * with the corrector's extra term `modelT` (the new output) when given.
   */
  private bhUpdate(tIdx: number, s0Idx: number, order: number, x: Term, m0: Term, older: Term[], modelT: Term | null): Lin {
    const s = this.sigmas;
    const { alphaT, sigmaT } = sigmaToAlphaSigmaT(s[tIdx]!);
    const { alphaT: alphaS0, sigmaT: sigmaS0 } = sigmaToAlphaSigmaT(s[s0Idx]!);
    const lambdaT = lambdaOf(alphaT, sigmaT);
    const lambdaS0 = lambdaOf(alphaS0, sigmaS0);
    const h = f(lambdaT - lambdaS0);
    const rks: number[] = [];
    const D1s: Lin[] = [];
    for (let i = 1; i < order; i++) {
      const { alphaT: a, sigmaT: sg } = sigmaToAlphaSigmaT(s[s0Idx - i]!);
      const rk = f(f(lambdaOf(a, sg) - lambdaS0) / h);
      rks.push(rk);
      D1s.push(Lin.of(older[i - 1]!).sub(Lin.of(m0)).scale(1 / rk));
    }
    rks.push(1);
    const hh = this.config.predictX0 ? -h : h;
    const hPhi1 = f32.expm1(hh);
    let hPhiK = f(f(hPhi1 / hh) - 1);
    let factorial = 1;
    const Bh = this.config.solverType === 'bh1' ? hh : f32.expm1(hh);
    const R: number[][] = [];
    const b: number[] = [];
    for (let i = 1; i <= order; i++) {
      R.push(rks.map((r) => (i === 1 ? 1 : i === 2 ? r : f(r * r))));
      b.push(f(f(hPhiK * factorial) / Bh));
      factorial *= i + 1;
      hPhiK = f(f(hPhiK / hh) - f(1 / factorial));
    }
    const [scaleX, scaleM0, outScale] = this.config.predictX0
      ? [f(sigmaT / sigmaS0), f(alphaT * hPhi1), f(alphaT * Bh)]
      : [f(alphaT / alphaS0), f(sigmaT * hPhi1), f(sigmaT * Bh)];
    const base = Lin.of(x, scaleX).sub(Lin.of(m0, scaleM0));
    const combine = (rhos: number[]) => D1s.reduce((acc, d, k) => acc.add(d.scale(rhos[k]!)), Lin.zero());
    if (modelT === null) {
      // predictor
      if (D1s.length === 0) return base.poisonedBy(f(outScale * 0)); // x_t_ - alpha_t B_h * 0
      const rhosP = order === 2 ? [0.5] : solveF32(R.slice(0, -1).map((row) => row.slice(0, -1)), b.slice(0, -1));
      return base.sub(combine(rhosP).scale(outScale));
    }
    const rhosC = order === 1 ? [0.5] : solveF32(R, b);
    const D1t = Lin.of(modelT).sub(Lin.of(m0));
    const corr = combine(rhosC).add(D1t.scale(rhosC[rhosC.length - 1]!));
    return base.sub(corr.scale(outScale));
  }

  /** The kernel record of step i (with the corrector of order `corrOrder`, or none) and predictor order `order`. */
  stepCoefficients(i: number, corrOrder: number | null, order: number): SolverCoefficients {
    const cfg = this.config;
    const { alphaT, sigmaT } = sigmaToAlphaSigmaT(this.sigmas[i]!);
    const conv = convertFor(cfg.predictionType, cfg.predictX0, alphaT, sigmaT);
    // Corrector: last sample L, m0 = h0 (the previous output), older h1, h2, this output conv.
    const corrector = corrOrder === null ? null : this.bhUpdate(i, i - 1, corrOrder, 'last', 'h0', ['h1', 'h2'], 'conv');
    // Predictor from the (corrected) sample y: m0 = conv, older h0, h1.
    const update = this.bhUpdate(i + 1, i, order, 'x', 'conv', ['h0', 'h1'], null);
    return {
      ...conv,
      clip: cfg.thresholding && cfg.predictX0 ? ConvClip.DynamicThreshold : ConvClip.None,
      clipSampleRange: 1,
      dynamicThresholdingRatio: f(cfg.dynamicThresholdingRatio),
      sampleMaxValue: f(cfg.sampleMaxValue),
      corrector,
      update,
      keepLast: true,
    };
  }

  /** The next predictor-corrector step (step() runs it). */
  planStep(t: number): SolverPlan {
    const i = this.initStepIndex(t, 'last');
    const cfg = this.config;
    const useCorrector = i > 0 && !cfg.disableCorrector.includes(i - 1) && this.hasLast;
    const N = this.timesteps.length;
    const thisOrder = Math.min(cfg.lowerOrderFinal ? Math.min(cfg.solverOrder, N - i) : cfg.solverOrder, this.lowerOrderNums + 1);
    return {
      index: i,
      coefficients: this.stepCoefficients(i, useCorrector ? this.thisOrder : null, thisOrder),
      inputScale: 1,
      x0: cfg.predictX0,
      allowTwoHalves: false,
      commit: () => {
        this.thisOrder = thisOrder;
        this.hasLast = true;
        if (this.lowerOrderNums < cfg.solverOrder) this.lowerOrderNums++;
        this.stepIndexValue = i + 1;
      },
    };
  }
}
