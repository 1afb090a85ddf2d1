// Exponential moving average of the weights, with diffusers' EMAModel
// decay schedule (diffusers/training_utils.py, EMAModel.get_decay).
import { InputError } from '../core/errors.js';

export interface EmaOptions {
  /** Upper bound of the decay (diffusers' `decay`). Default 0.9999. */
  decay?: number;
  /** Lower bound of the decay. Default 0. */
  minDecay?: number;
  /** Optimizer steps before averaging starts (the EMA copies the weights until then). Default 0. */
  updateAfterStep?: number;
  /** Warmup 1 - (1 + step / invGamma)^-power instead of (1 + step) / (10 + step). Default false. */
  useEmaWarmup?: boolean;
  /** Default 1. */
  invGamma?: number;
  /** Default 2/3 (diffusers suggests 3/4 for short runs, 2/3 for long ones). */
  power?: number;
}

export type ResolvedEmaOptions = Required<EmaOptions>;

export function resolveEmaOptions(o: EmaOptions): ResolvedEmaOptions {
  if (typeof o !== 'object' || o === null) throw new InputError('ema must be an object');
  const r: ResolvedEmaOptions = {
    decay: o.decay ?? 0.9999,
    minDecay: o.minDecay ?? 0,
    updateAfterStep: o.updateAfterStep ?? 0,
    useEmaWarmup: o.useEmaWarmup ?? false,
    invGamma: o.invGamma ?? 1,
    power: o.power ?? 2 / 3,
  };
  const inUnit = (v: number) => typeof v === 'number' && v >= 0 && v <= 1;
  if (!inUnit(r.decay)) throw new InputError(`ema.decay must be in [0, 1], got ${r.decay}`);
  if (!inUnit(r.minDecay) || r.minDecay > r.decay)
    throw new InputError(`ema.minDecay must be in [0, ema.decay], got ${r.minDecay}`);
  if (!Number.isInteger(r.updateAfterStep) || r.updateAfterStep < 0)
    throw new InputError(`ema.updateAfterStep must be an integer >= 0, got ${r.updateAfterStep}`);
  if (typeof r.useEmaWarmup !== 'boolean') throw new InputError('ema.useEmaWarmup must be true or false');
  if (!(r.invGamma > 0) || !Number.isFinite(r.invGamma)) throw new InputError(`ema.invGamma must be > 0, got ${r.invGamma}`);
  if (!(r.power > 0) || !Number.isFinite(r.power)) throw new InputError(`ema.power must be > 0, got ${r.power}`);
  return r;
}

/**
 * EMAModel.get_decay(optimization_step): the decay of the EMA update made
 * after optimizer step `optimizationStep` (1-based; EMAModel.step increments
 * its counter before asking). 0 means "copy the weights".
 */
export function emaDecay(o: ResolvedEmaOptions, optimizationStep: number): number {
  const step = Math.max(0, optimizationStep - o.updateAfterStep - 1);
  if (step <= 0) return 0;
  const value = o.useEmaWarmup ? 1 - (1 + step / o.invGamma) ** -o.power : (1 + step) / (10 + step);
  return Math.max(Math.min(value, o.decay), o.minDecay);
}
