// Beta schedules and alphas_cumprod, computed the way diffusers computes them
// with float32 torch tensors on CPU, so that alphas_cumprod matches bit for bit
// (or within an ulp where torch uses a vectorized transcendental).
//
// Torch details that matter here:
// - torch.linspace(start, end, steps, dtype=float32) rounds start and end to
//   float32, takes step = (end - start) / (steps - 1) in float32, and fills
//   the first half as start + step * i and the second half as
//   end - step * (steps - 1 - i). The CPU kernel is built with -mfma, so each
//   of those is one fused multiply-add.
// - torch.cumprod on a CPU float32 tensor accumulates in double and rounds
//   each partial product to float32.
// - Scalar arithmetic on 0-dim float32 tensors stays float32.

import { fmaF32 } from '../math/float32.js';

const f = Math.fround;

/** torch.linspace(start, end, steps, dtype=torch.float32) on CPU. */
export function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const s = f(start);
  const e = f(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f(f(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? fmaF32(step, i, s) : fmaF32(-step, steps - i - 1, e);
  }
  return out;
}

/** torch.cumprod(x, dim=0) for a CPU float32 tensor: double accumulator. */
export function cumprodF32(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  let acc = 1;
  for (let i = 0; i < x.length; i++) {
    acc *= x[i];
    out[i] = acc;
  }
  return out;
}

/** 1 - x, elementwise, in float32. */
export function oneMinusF32(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = 1 - x[i];
  return out;
}

/** "linear": torch.linspace(beta_start, beta_end, T). */
export function linearBetas(betaStart: number, betaEnd: number, T: number): Float32Array {
  return linspaceF32(betaStart, betaEnd, T);
}

/** "scaled_linear" (latent diffusion): linspace(sqrt(start), sqrt(end), T) ** 2. */
export function scaledLinearBetas(betaStart: number, betaEnd: number, T: number): Float32Array {
  // beta ** 0.5 is taken on the Python floats, in double.
  const root = linspaceF32(Math.sqrt(betaStart), Math.sqrt(betaEnd), T);
  const out = new Float32Array(T);
  for (let i = 0; i < T; i++) out[i] = root[i] * root[i]; // pow(x, 2) is x * x
  return out;
}

/**
 * "sigmoid" (GeoDiff): sigmoid(linspace(-6, 6, T)) * (end - start) + start.
 * torch's vectorized sigmoid uses SLEEF's expf (1-ulp), so a beta may differ
 * from torch's in the last bit; Math.exp here is correctly rounded in practice.
 */
export function sigmoidBetas(betaStart: number, betaEnd: number, T: number): Float32Array {
  const x = linspaceF32(-6, 6, T);
  const scale = f(betaEnd - betaStart); // Python float, cast to float32 by the mul
  const shift = f(betaStart);
  const out = new Float32Array(T);
  for (let i = 0; i < T; i++) {
    const sig = f(1 / f(1 + f(Math.exp(-x[i]))));
    out[i] = f(sig * scale) + shift;
  }
  return out;
}

/**
 * betas_for_alpha_bar: discretize a continuous alpha_bar(t) on [0, 1].
 * diffusers computes this in Python doubles and converts to float32 once.
 */
export function betasForAlphaBar(
  T: number,
  alphaTransformType: 'cosine' | 'laplace',
  maxBeta = 0.999,
): Float32Array {
  const alphaBar =
    alphaTransformType === 'cosine'
      ? (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2
      : (t: number) => {
          const lmb = -0.5 * Math.sign(0.5 - t || 1) * Math.log(1 - 2 * Math.abs(0.5 - t) + 1e-6);
          const snr = Math.exp(lmb);
          return Math.sqrt(snr / (1 + snr));
        };
  const out = new Float32Array(T);
  for (let i = 0; i < T; i++) {
    const t1 = i / T;
    const t2 = (i + 1) / T;
    out[i] = Math.min(1 - alphaBar(t2) / alphaBar(t1), maxBeta);
  }
  return out;
}

/**
 * rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1): shift and scale
 * sqrt(alphas_cumprod) so the last timestep has zero signal, then convert
 * back to betas. Every step is a float32 tensor op in diffusers.
 */
export function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const T = betas.length;
  const alphasBarSqrt = cumprodF32(oneMinusF32(betas));
  for (let i = 0; i < T; i++) alphasBarSqrt[i] = Math.sqrt(alphasBarSqrt[i]);
  const first = alphasBarSqrt[0];
  const last = alphasBarSqrt[T - 1];
  const scale = f(first / f(first - last));
  for (let i = 0; i < T; i++) {
    alphasBarSqrt[i] = f(alphasBarSqrt[i] - last) * scale;
  }
  const alphasBar = new Float32Array(T);
  for (let i = 0; i < T; i++) alphasBar[i] = alphasBarSqrt[i] * alphasBarSqrt[i];
  const out = new Float32Array(T);
  out[0] = 1 - alphasBar[0];
  for (let i = 1; i < T; i++) out[i] = 1 - f(alphasBar[i] / alphasBar[i - 1]);
  return out;
}
