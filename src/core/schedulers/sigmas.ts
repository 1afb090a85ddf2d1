// Sigma-space schedules for the multistep and Euler-family schedulers,
// reproducing diffusers' numpy / torch expressions:
//   sigmas  = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5   (float32, torch)
//   np.interp(timesteps, arange(T), sigmas)                    (float64, numpy)
//   _convert_to_karras: (max^(1/7) + ramp (min^(1/7) - max^(1/7)))^7 (float64)
//   _sigma_to_t: log-sigma interpolation against np.log(float32 sigmas)
// and the float32 scalar helpers the solvers' torch expressions use.

import { roundHalfEven } from './timesteps.js';

const f = Math.fround;

/** Float32 scalar ops as torch evaluates them on 0-dim float32 tensors. */
export const f32 = {
  sqrt: (x: number) => f(Math.sqrt(x)),
  log: (x: number) => f(Math.log(x)),
  exp: (x: number) => f(Math.exp(x)),
  expm1: (x: number) => f(Math.expm1(x)),
};

/** ((1 - a) / a) ** 0.5 per training step, float32 as torch computes it. */
export function trainingSigmas(alphasCumprod: Float32Array): Float32Array {
  const out = new Float32Array(alphasCumprod.length);
  for (let i = 0; i < out.length; i++) {
    const a = alphasCumprod[i]!;
    out[i] = f32.sqrt(f(f(1 - a) / a));
  }
  return out;
}

/** np.linspace(start, stop, num) in float64. */
export function npLinspace(start: number, stop: number, num: number): number[] {
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
export function npArange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  if (length === 0) return [];
  if (length === 1) return [start];
  const out = new Array<number>(length);
  out[0] = start;
  out[1] = start + step;
  const delta = out[1] - start;
  for (let i = 2; i < length; i++) out[i] = start + i * delta;
  return out;
}

/** np.interp(x, arange(fp.length), fp) at one point, in float64. */
export function npInterp(x: number, fp: ArrayLike<number>): number {
  const n = fp.length;
  if (!(x > 0)) return x === 0 || x < 0 ? fp[0]! : NaN;
  if (x >= n - 1) return x === n - 1 || x > n - 1 ? fp[n - 1]! : NaN;
  const j = Math.floor(x);
  if (x === j) return fp[j]!;
  const slope = fp[j + 1]! - fp[j]!; // dx = 1
  let r = slope * (x - j) + fp[j]!;
  if (Number.isNaN(r)) {
    r = slope * (x - (j + 1)) + fp[j + 1]!;
    if (Number.isNaN(r) && fp[j] === fp[j + 1]) r = fp[j]!;
  }
  return r;
}

/** _convert_to_karras (rho 7) from sigma_min and sigma_max, float64. */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7.0;
  const ramp = npLinspace(0, 1, n);
  const minInvRho = Math.pow(sigmaMin, 1 / rho);
  const maxInvRho = Math.pow(sigmaMax, 1 / rho);
  return ramp.map((r) => Math.pow(maxInvRho + r * (minInvRho - maxInvRho), rho));
}

/** np.log of a float32 array: float32 results. */
export function logSigmasF32(sigmas: Float32Array): Float32Array {
  return sigmas.map((s) => f32.log(s));
}

/** _sigma_to_t: the fractional training timestep of a sigma (float64). */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const n = logSigmas.length;
  // cumsum(dists >= 0).argmax(): the first index where the running count peaks.
  let count = 0;
  let best = -1;
  let lowIdx = 0;
  for (let i = 0; i < n; i++) {
    if (logSigma - logSigmas[i]! >= 0) count++;
    if (count > best) {
      best = count;
      lowIdx = i;
    }
  }
  lowIdx = Math.min(lowIdx, n - 2);
  const highIdx = lowIdx + 1;
  const low = logSigmas[lowIdx]!;
  const high = logSigmas[highIdx]!;
  let w = (low - logSigma) / (low - high);
  w = Math.min(Math.max(w, 0), 1);
  return (1 - w) * lowIdx + w * highIdx;
}

/** np.round (half to even). */
export const npRound = roundHalfEven;

/** alpha_t, sigma_t of a sigma (diffusers' _sigma_to_alpha_sigma_t), float32. */
export function sigmaToAlphaSigmaT(sigma: number): { alphaT: number; sigmaT: number } {
  const alphaT = f(1 / f32.sqrt(f(f(sigma * sigma) + 1)));
  return { alphaT, sigmaT: f(sigma * alphaT) };
}

/** lambda = log(alpha_t) - log(sigma_t), float32. */
export function lambdaOf(alphaT: number, sigmaT: number): number {
  return f(f32.log(alphaT) - f32.log(sigmaT));
}

export type Spacing = 'linspace' | 'leading' | 'trailing';

/**
 * DPMSolverMultistep / UniPC set_timesteps (integer timesteps, n of them
 * from n + 1 points): `last` is num_train_timesteps, or fewer where
 * lambda_min_clipped cuts the schedule.
 */
export function multistepTimesteps(spacing: Spacing, T: number, last: number, n: number, stepsOffset: number): number[] {
  if (spacing === 'linspace') {
    return npLinspace(0, last - 1, n + 1).map(roundHalfEven).reverse().slice(0, n);
  }
  if (spacing === 'leading') {
    const ratio = Math.floor(last / (n + 1));
    const out: number[] = [];
    for (let i = n; i >= 1; i--) out.push(i * ratio + stepsOffset);
    return out;
  }
  return npArange(last, 0, -T / n).map((x) => roundHalfEven(x) - 1);
}

/** Euler / Euler ancestral / Heun set_timesteps: n float32 timesteps. */
export function sigmaTimesteps(spacing: Spacing, T: number, n: number, stepsOffset: number): number[] {
  if (spacing === 'linspace') return npLinspace(0, T - 1, n).map(f).reverse();
  if (spacing === 'leading') {
    const ratio = Math.floor(T / n);
    const out: number[] = [];
    for (let i = n - 1; i >= 0; i--) out.push(f(i * ratio + stepsOffset));
    return out;
  }
  return npArange(T, 0, -T / n).map((x) => f(roundHalfEven(x) - 1));
}
