// Options shared by DDPMScheduler and DDIMScheduler: camelCase in code,
// snake_case in diffusers' scheduler_config.json. Both spellings go through
// the same validation, and errors name the key the way the caller spelled it.

import { ConfigError } from '../errors.js';
import {
  betasForAlphaBar,
  cumprodF32,
  linearBetas,
  oneMinusF32,
  rescaleZeroTerminalSnr,
  scaledLinearBetas,
  sigmoidBetas,
} from './betas.js';

export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2' | 'sigmoid' | 'laplace';
export type PredictionType = 'epsilon' | 'sample' | 'v_prediction';
export type TimestepSpacing = 'leading' | 'linspace' | 'trailing';

export const PREDICTION_TYPES: readonly PredictionType[] = ['epsilon', 'sample', 'v_prediction'];
export const TIMESTEP_SPACINGS: readonly TimestepSpacing[] = ['leading', 'linspace', 'trailing'];

/** Options common to both schedulers, with diffusers' defaults. */
export interface CommonSchedulerOptions {
  numTrainTimesteps?: number; // 1000 (or trainedBetas.length)
  betaStart?: number; // 0.0001
  betaEnd?: number; // 0.02
  betaSchedule?: BetaSchedule; // 'linear'
  /** Explicit betas; overrides betaStart / betaEnd / betaSchedule. */
  trainedBetas?: ArrayLike<number> | null;
  rescaleBetasZeroSnr?: boolean; // false
  predictionType?: PredictionType; // 'epsilon'
  clipSample?: boolean; // true
  clipSampleRange?: number; // 1.0
  thresholding?: boolean; // false
  dynamicThresholdingRatio?: number; // 0.995
  sampleMaxValue?: number; // 1.0
  timestepSpacing?: TimestepSpacing; // 'leading'
  stepsOffset?: number; // 0
}

export type ResolvedCommonOptions = Required<Omit<CommonSchedulerOptions, 'trainedBetas'>> & {
  trainedBetas: number[] | null;
};

/** Largest num_train_timesteps accepted (the UNet config's bound too). */
export const MAX_TRAIN_TIMESTEPS = 1 << 20;

/** How the caller spelled option names: decides how errors name them. */
export type KeyStyle = 'camel' | 'snake';

export function snakeCase(camel: string): string {
  return camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function camelCase(snake: string): string {
  return snake.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Reads and validates option values, naming keys in the caller's style. */
export class OptionReader {
  constructor(
    private readonly opts: Record<string, unknown>,
    readonly style: KeyStyle,
  ) {}

  /** The key as the caller wrote it, for error messages. */
  name(camelKey: string): string {
    return this.style === 'snake' ? snakeCase(camelKey) : camelKey;
  }

  fail(camelKey: string, value: unknown, why: string): never {
    throw new ConfigError(`${this.name(camelKey)} ${show(value)} ${why}`);
  }

  private get(key: string): unknown {
    return this.opts[key];
  }

  has(key: string): boolean {
    return this.opts[key] !== undefined;
  }

  number(key: string, dflt: number): number {
    const v = this.get(key);
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, v, 'must be a finite number');
    return v;
  }

  integer(key: string, dflt: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
    const v = this.number(key, dflt);
    if (!Number.isInteger(v) || v < min) this.fail(key, v, `must be an integer >= ${min}`);
    if (v > max) this.fail(key, v, `must be at most ${max}`);
    return v;
  }

  boolean(key: string, dflt: boolean): boolean {
    const v = this.get(key);
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') this.fail(key, v, 'must be true or false');
    return v;
  }

  oneOf<T extends string>(key: string, dflt: T, allowed: readonly T[], what = ''): T {
    const v = this.get(key);
    if (v === undefined) return dflt;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.fail(key, v, `is not supported${what}; expected one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
    }
    return v as T;
  }

  numberArray(key: string): number[] | null {
    const v = this.get(key);
    if (v === undefined || v === null) return null;
    const isArrayLike =
      Array.isArray(v) || ArrayBuffer.isView(v) && !(v instanceof DataView);
    if (!isArrayLike) this.fail(key, v, 'must be an array of numbers');
    const arr = Array.from(v as ArrayLike<unknown>);
    if (arr.length === 0) this.fail(key, v, 'must not be empty');
    arr.forEach((x, i) => {
      if (typeof x !== 'number' || !Number.isFinite(x)) this.fail(key, x, `has a non-number at index ${i}`);
    });
    return arr as number[];
  }
}

function show(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`;
  if (Array.isArray(v)) return `[${v.length} items]`;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Validate the common options. `betaSchedules` lists what the scheduler implements. */
export function resolveCommonOptions(
  r: OptionReader,
  betaSchedules: readonly BetaSchedule[],
  schedulerName: string,
): ResolvedCommonOptions {
  const trainedBetas = r.numberArray('trainedBetas');
  // Each timestep costs a few arrays' entries: bound them as UNet2DConfig does.
  const numTrainTimesteps = r.integer('numTrainTimesteps', trainedBetas?.length ?? 1000, 1, MAX_TRAIN_TIMESTEPS);
  // A beta outside [0, 1) makes alphas_cumprod zero, negative or above one,
  // and every sample NaN: refuse it here rather than return NaN images.
  trainedBetas?.forEach((beta, i) => {
    if (!(beta >= 0 && beta < 1)) r.fail('trainedBetas', trainedBetas, `has ${beta} at index ${i}; betas must be in [0, 1)`);
  });
  if (trainedBetas && trainedBetas.length !== numTrainTimesteps) {
    r.fail('trainedBetas', trainedBetas, `has ${trainedBetas.length} values but ${r.name('numTrainTimesteps')} is ${numTrainTimesteps}`);
  }
  const dynamicThresholdingRatio = r.number('dynamicThresholdingRatio', 0.995);
  if (dynamicThresholdingRatio < 0 || dynamicThresholdingRatio > 1) {
    r.fail('dynamicThresholdingRatio', dynamicThresholdingRatio, 'must be in [0, 1] (it is a quantile)');
  }
  const betaSchedule = r.oneOf<BetaSchedule>('betaSchedule', 'linear', betaSchedules, ` by ${schedulerName}`);
  const betaStart = r.number('betaStart', 0.0001);
  const betaEnd = r.number('betaEnd', 0.02);
  // linear, scaled_linear and sigmoid betas lie between beta_start and beta_end.
  if (!trainedBetas && (betaSchedule === 'linear' || betaSchedule === 'scaled_linear' || betaSchedule === 'sigmoid')) {
    if (!(betaStart >= 0 && betaStart < 1)) r.fail('betaStart', betaStart, 'must be in [0, 1) (it is a beta)');
    if (!(betaEnd >= 0 && betaEnd < 1)) r.fail('betaEnd', betaEnd, 'must be in [0, 1) (it is a beta)');
  }
  const clipSampleRange = r.number('clipSampleRange', 1.0);
  if (!(clipSampleRange > 0)) r.fail('clipSampleRange', clipSampleRange, 'must be > 0');
  const sampleMaxValue = r.number('sampleMaxValue', 1.0);
  if (!(sampleMaxValue > 0)) r.fail('sampleMaxValue', sampleMaxValue, 'must be > 0');
  return {
    numTrainTimesteps,
    betaStart,
    betaEnd,
    betaSchedule,
    trainedBetas,
    rescaleBetasZeroSnr: r.boolean('rescaleBetasZeroSnr', false),
    predictionType: r.oneOf('predictionType', 'epsilon', PREDICTION_TYPES),
    clipSample: r.boolean('clipSample', true),
    clipSampleRange,
    thresholding: r.boolean('thresholding', false),
    dynamicThresholdingRatio,
    sampleMaxValue,
    timestepSpacing: r.oneOf('timestepSpacing', 'leading', TIMESTEP_SPACINGS),
    stepsOffset: r.integer('stepsOffset', 0, 0),
  };
}

/**
 * Convert diffusers' snake_case scheduler_config.json into camelCase options,
 * keeping only the keys this scheduler knows (diffusers ignores the rest too:
 * _class_name, _diffusers_version, other schedulers' options...).
 */
export function optionsFromConfig(json: unknown, knownCamelKeys: readonly string[]): Record<string, unknown> {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError('scheduler config must be a JSON object');
  }
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(json as Record<string, unknown>)) {
    const camel = camelCase(key);
    if (!knownCamelKeys.includes(camel)) continue;
    // diffusers writes unset optional arrays as null.
    if (value === null && camel === 'trainedBetas') continue;
    out[camel] = value;
  }
  return out;
}

export const COMMON_OPTION_KEYS: readonly string[] = [
  'numTrainTimesteps', 'betaStart', 'betaEnd', 'betaSchedule', 'trainedBetas',
  'rescaleBetasZeroSnr', 'predictionType', 'clipSample', 'clipSampleRange',
  'thresholding', 'dynamicThresholdingRatio', 'sampleMaxValue', 'timestepSpacing',
  'stepsOffset',
];

/** Betas for the resolved options, as the float32 tensor diffusers builds. */
export function makeBetas(o: ResolvedCommonOptions): Float32Array {
  const T = o.numTrainTimesteps;
  let betas: Float32Array;
  if (o.trainedBetas) betas = Float32Array.from(o.trainedBetas);
  else if (o.betaSchedule === 'linear') betas = linearBetas(o.betaStart, o.betaEnd, T);
  else if (o.betaSchedule === 'scaled_linear') betas = scaledLinearBetas(o.betaStart, o.betaEnd, T);
  else if (o.betaSchedule === 'squaredcos_cap_v2') betas = betasForAlphaBar(T, 'cosine');
  else if (o.betaSchedule === 'laplace') betas = betasForAlphaBar(T, 'laplace');
  else betas = sigmoidBetas(o.betaStart, o.betaEnd, T);
  return o.rescaleBetasZeroSnr ? rescaleZeroTerminalSnr(betas) : betas;
}

/** alphas_cumprod = cumprod(1 - betas), float32 with torch's double accumulator. */
export function makeAlphasCumprod(betas: Float32Array): Float32Array {
  return cumprodF32(oneMinusF32(betas));
}
