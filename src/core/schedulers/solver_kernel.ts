// The per-element half of a multistep / sigma-space solver step: the record
// the fused engine kernel reads (native/cpu/diffusion_step.cpp, solver_step;
// SolverCoefficients in native/cpu/ops.h), and the host-side state that keeps
// the solver's history buffers beside the sample.
//
// Every update of DPM-Solver(++), UniPC, Euler, Euler ancestral and Heun is,
// per element, a linear combination of the sample x, the converted model
// output conv (x0 or epsilon, possibly clamped or dynamically thresholded),
// up to three previous converted outputs h0..h2 (h0 the most recent), one
// kept sample L (UniPC's last sample, Heun's first-stage sample) and noise z:
//   conv = convert(m, x)                      (see Convert)
//   y    = corrector ? u . [x, L, conv, h0, h1, h2] : x      (UniPC's corrector)
//   out  = v . [y, L, conv, h0, h1, h2, z]
// The schedulers compute u and v per step in TypeScript, from float32
// scalars evaluated as diffusers' torch expressions are, combining the
// expressions' terms into one coefficient per array (see Lin).

import type { Backend } from '../backend/backend.js';
import { InputError } from '../errors.js';
import type { StepLayout } from './step_kernel.js';

/** How the kernel converts the model output m (with the sample x). */
export const Convert = {
  /** m */
  Identity: 0,
  /** (x - p m) / q */
  SubDiv: 1,
  /** p x - q m */
  Sub: 2,
  /** p m + q x */
  Add: 3,
  /** p m + x / q */
  AddDiv: 4,
} as const;

/** What happens to the converted output: nothing, clamp(-r, r), or dynamic thresholding. */
export const ConvClip = { None: 0, Clamp: 1, DynamicThreshold: 2 } as const;

type Values<T> = T[keyof T];

/** The arrays a step combines, by name. */
export type Term = 'x' | 'last' | 'conv' | 'h0' | 'h1' | 'h2' | 'noise';
const TERMS: readonly Term[] = ['x', 'last', 'conv', 'h0', 'h1', 'h2', 'noise'];

/**
 * A linear combination of the step's arrays, coefficients in float64 (they
 * are rounded to float32 once, when packed).
 */
export class Lin {
  private constructor(readonly k: Readonly<Record<Term, number>>) {}

  static zero(): Lin {
    return new Lin({ x: 0, last: 0, conv: 0, h0: 0, h1: 0, h2: 0, noise: 0 });
  }

  static of(term: Term, coefficient = 1): Lin {
    return Lin.zero().plus(term, coefficient);
  }

  plus(term: Term, coefficient: number): Lin {
    return new Lin({ ...this.k, [term]: this.k[term] + coefficient });
  }

  add(o: Lin): Lin {
    const k = { ...this.k };
    for (const t of TERMS) k[t] += o.k[t];
    return new Lin(k);
  }

  sub(o: Lin): Lin {
    return this.add(o.scale(-1));
  }

  scale(s: number): Lin {
    const k = { ...this.k };
    for (const t of TERMS) k[t] = k[t] * s;
    return new Lin(k);
  }

  /** Substitutes `by` for the array `term` (e.g. UniPC's corrected sample for x). */
  substitute(term: Term, by: Lin): Lin {
    const c = this.k[term];
    return new Lin({ ...this.k, [term]: 0 }).add(by.scale(c));
  }

  /** Makes every coefficient NaN when `poison` is NaN (torch's 0 * inf terms). */
  poisonedBy(poison: number): Lin {
    return Number.isNaN(poison) ? this.plus('conv', NaN) : this;
  }
}

/** The per-step record. All numbers are float32 values once packed. */
export interface SolverCoefficients {
  convert: Values<typeof Convert>;
  p: number;
  q: number;
  clip: Values<typeof ConvClip>;
  clipSampleRange: number;
  dynamicThresholdingRatio: number;
  sampleMaxValue: number;
  /** UniPC's corrector: y = corrector(x, L, conv, h); null: y = x. Its 'noise' and 'y' terms must be 0. */
  corrector: Lin | null;
  /** out; its 'x' coefficient multiplies y. */
  update: Lin;
  /** Keep y as the next step's L. */
  keepLast: boolean;
}

/** The record's length in floats (kSolverCoefficientSlots in native/cpu/ops.h). */
export const kSolverCoefficientSlots = 21;

export function packSolverCoefficients(c: SolverCoefficients): Float32Array {
  const u = c.corrector?.k;
  const v = c.update.k;
  return Float32Array.of(
    c.convert,
    c.clip,
    c.p,
    c.q,
    c.clipSampleRange,
    c.dynamicThresholdingRatio,
    c.sampleMaxValue,
    u ? 1 : 0,
    u?.x ?? 0,
    u?.last ?? 0,
    u?.conv ?? 0,
    u?.h0 ?? 0,
    u?.h1 ?? 0,
    u?.h2 ?? 0,
    v.x,
    v.last,
    v.conv,
    v.h0,
    v.h1,
    v.h2,
    v.noise,
  );
}

/** Whether a step reads the noise array. */
export function needsNoise(c: SolverCoefficients): boolean {
  return Math.fround(c.update.k.noise) !== 0;
}

/**
 * The solver's arrays between steps: the last converted outputs (most recent
 * first) and the kept sample, on the host, reused from step to step.
 */
export class SolverHistory {
  private history: Float32Array[] = [];
  private last: Float32Array | null = null;
  private spare: Float32Array[] = [];

  constructor(private readonly depth: number) {}

  reset(): void {
    this.spare.push(...this.history);
    this.history = [];
    this.last = null;
  }

  /** Runs one step; returns the new sample and the converted model output (a view kept as history). */
  run(
    backend: Backend,
    c: SolverCoefficients,
    layout: StepLayout,
    modelOutput: Float32Array,
    sample: Float32Array,
    noise: Float32Array | null,
  ): { prevSample: Float32Array; converted: Float32Array } {
    const n = layout.batchSize * layout.sampleSize;
    let converted = this.spare.pop();
    if (!converted || converted.length !== n) converted = new Float32Array(n);
    const prevSample = new Float32Array(n);
    const uses = (t: 'last' | 'h0' | 'h1' | 'h2') =>
      (c.corrector !== null && c.corrector.k[t] !== 0) || c.update.k[t] !== 0;
    if (uses('last') && !this.last) throw new InputError('solver step: this step needs the previous step (call steps in order from the first)');
    const history = [0, 1, 2].map((i) => this.history[i] ?? null);
    (['h0', 'h1', 'h2'] as const).forEach((t, i) => {
      if (uses(t) && !history[i]) throw new InputError('solver step: this step needs the previous steps (call steps in order from the first)');
    });
    let lastOut: Float32Array | null = null;
    if (c.keepLast) lastOut = this.last && this.last.length === n ? this.last : new Float32Array(n);
    backend.solverStep(packSolverCoefficients(c), layout, {
      modelOutput,
      sample,
      last: this.last,
      history,
      noise,
      prevSample,
      converted,
      lastOut,
    });
    if (lastOut) this.last = lastOut;
    this.history.unshift(converted);
    while (this.history.length > this.depth) this.spare.push(this.history.pop()!);
    return { prevSample, converted };
  }
}
