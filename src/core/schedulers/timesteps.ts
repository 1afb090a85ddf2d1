// Inference timesteps for DDPM / DDIM set_timesteps, reproducing the numpy
// expressions diffusers uses (Table 2 of arXiv 2305.08891):
//   linspace: np.linspace(0, T - 1, n).round()[::-1]
//   leading:  (np.arange(0, n) * (T // n)).round()[::-1] + steps_offset
//   trailing: np.round(np.arange(T, 0, -T / n)) - 1
// np.round rounds half to even, and np.arange with a float step fills
// start + i * delta with delta = (start + step) - start; both matter for
// getting the same integers at .5 boundaries.

import type { TimestepSpacing } from './config.js';

/** numpy's round(): round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // rounds half up
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace(start, stop, num) in float64. */
function npLinspace(start: number, stop: number, num: number): number[] {
  const out = new Array<number>(num);
  const div = num - 1;
  if (div <= 0) {
    for (let i = 0; i < num; i++) out[i] = i * (stop - start) + start;
    return out;
  }
  const step = (stop - start) / div;
  for (let i = 0; i < num; i++) out[i] = i * step + start;
  out[num - 1] = stop;
  return out;
}

/** np.arange(start, stop, step) for float64 arguments. */
function npArange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  if (length === 0) return [];
  if (length === 1) return [start];
  // numpy writes start and start + step, then fills from their difference.
  const out = new Array<number>(length);
  out[0] = start;
  out[1] = start + step;
  const delta = out[1] - start;
  for (let i = 2; i < length; i++) out[i] = start + i * delta;
  return out;
}

/**
 * Timesteps, in descending order, for `n` inference steps out of `T`
 * training steps. Callers validate 1 <= n <= T.
 */
export function spacedTimesteps(
  spacing: TimestepSpacing,
  T: number,
  n: number,
  stepsOffset: number,
): number[] {
  if (spacing === 'linspace') {
    return npLinspace(0, T - 1, n).map(roundHalfEven).reverse();
  }
  if (spacing === 'leading') {
    const stepRatio = Math.floor(T / n);
    const out: number[] = [];
    for (let i = n - 1; i >= 0; i--) out.push(i * stepRatio + stepsOffset);
    return out;
  }
  return npArange(T, 0, -T / n).map((x) => roundHalfEven(x) - 1);
}
