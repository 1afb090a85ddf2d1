// Learning-rate schedules with diffusers' get_scheduler semantics
// (diffusers/optimization.py, torch LambdaLR): the rate of an update is
// lr * factor(k), where k counts the updates already made. Training scripts
// call optimizer.step() and then lr_scheduler.step(), so optimizer step s
// (1-based) uses factor(s - 1): with warmup, the very first update has rate 0.
import { InputError } from '../core/errors.js';

export type LrScheduleKind = 'constant' | 'cosine' | 'linear';

export interface LrScheduleOptions {
  kind: LrScheduleKind;
  /** Linear ramp from 0 over this many updates (0: none). */
  warmupSteps: number;
  /** Updates in the whole run; cosine and linear reach 0 there (constant ignores it). */
  totalSteps?: number | null;
}

export interface ResolvedLrSchedule {
  kind: LrScheduleKind;
  warmupSteps: number;
  totalSteps: number | null;
}

export function resolveLrSchedule(o: LrScheduleOptions): ResolvedLrSchedule {
  if (typeof o !== 'object' || o === null) throw new InputError('lrSchedule must be an object { kind, warmupSteps, totalSteps }');
  if (!['constant', 'cosine', 'linear'].includes(o.kind))
    throw new InputError(`lrSchedule.kind must be 'constant', 'cosine' or 'linear', got ${JSON.stringify(o.kind)}`);
  if (!Number.isInteger(o.warmupSteps) || o.warmupSteps < 0)
    throw new InputError(`lrSchedule.warmupSteps must be an integer >= 0, got ${o.warmupSteps}`);
  const total = o.totalSteps ?? null;
  if (total === null) {
    if (o.kind !== 'constant') throw new InputError(`lrSchedule.totalSteps is required for the ${o.kind} schedule`);
  } else if (!Number.isInteger(total) || total < 1) {
    throw new InputError(`lrSchedule.totalSteps must be an integer >= 1, got ${total}`);
  }
  return { kind: o.kind, warmupSteps: o.warmupSteps, totalSteps: total };
}

/**
 * The multiplier of the base rate after `k` updates (k = 0 for the first).
 * constant: get_constant_schedule_with_warmup (plain constant when warmupSteps is 0);
 * cosine: get_cosine_schedule_with_warmup with num_cycles 0.5;
 * linear: get_linear_schedule_with_warmup.
 */
export function lrFactor(o: ResolvedLrSchedule, k: number): number {
  const { kind, warmupSteps: warmup } = o;
  if (k < warmup) return k / Math.max(1, warmup);
  if (kind === 'constant') return 1;
  const total = o.totalSteps ?? 1;
  switch (kind) {
    case 'linear':
      return Math.max(0, (total - k) / Math.max(1, total - warmup));
    case 'cosine': {
      const progress = (k - warmup) / Math.max(1, total - warmup);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    }
  }
}

/** The learning rate of optimizer step `step` (1-based). */
export function learningRate(baseLr: number, o: ResolvedLrSchedule, step: number): number {
  return baseLr * lrFactor(o, step - 1);
}
