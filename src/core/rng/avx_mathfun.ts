// Float32 log and sincos exactly as PyTorch's CPU randn computes them.
//
// For float tensors of 16 or more elements, ATen's normal_fill_AVX2
// (aten/src/ATen/native/cpu/DistributionKernels.cpp, also used by the AVX512
// build) does Box-Muller with log256_ps and sincos256_ps from avx_mathfun.h:
// Cephes' single-precision polynomials. That code is built with -mfma, so GCC
// fuses each `y * x + c` step of the polynomials and of the argument reduction
// into one FMA; everything else is a separate float32 multiply or add.
// Reproducing torch.randn bit for bit means replaying exactly those float32
// operations in the same order, hence a Math.fround or fmaF32 on every
// intermediate. Math.log / Math.sin would differ in the last bit for about 1%
// of the outputs.

import { fmaF32 } from '../math/float32.js';

const f = Math.fround;

const bits = new Uint32Array(1);
const asFloat = new Float32Array(bits.buffer);

function floatBits(x: number): number {
  asFloat[0] = x;
  return bits[0];
}

function bitsFloat(b: number): number {
  bits[0] = b;
  return asFloat[0];
}

const MIN_NORM_POS = bitsFloat(0x00800000);
const SQRTHF = f(0.707106781186547524);
const LOG_P = [
  f(7.0376836292e-2), f(-1.1514610310e-1), f(1.1676998740e-1),
  f(-1.2420140846e-1), f(1.4249322787e-1), f(-1.6668057665e-1),
  f(2.0000714765e-1), f(-2.4999993993e-1), f(3.3333331174e-1),
];
const LOG_Q1 = f(-2.12194440e-4);
const LOG_Q2 = f(0.693359375);

/** log256_ps for one lane: natural log of a float32, Cephes logf. */
export function logCephesF32(xIn: number): number {
  if (!(xIn > 0)) return NaN; // the vector code ORs an all-ones mask in: NaN
  let x = Math.max(f(xIn), MIN_NORM_POS); // flush denormals, as _mm256_max_ps
  const b = floatBits(x);
  // Split x = m * 2^e with m in [0.5, 1): keep the mantissa, force exponent -1.
  const exponent = (b >>> 23) - 0x7f;
  x = bitsFloat((b & ~0x7f800000) | 0x3f000000);
  let e = f(exponent + 1);
  // For m < sqrt(1/2) use 2m - 1 (and e - 1) to keep the argument near 0.
  let tmp = 0;
  if (x < SQRTHF) {
    tmp = x;
    e = f(e - 1);
  }
  x = f(x - 1);
  x = f(x + tmp);
  const z = f(x * x);
  let y = LOG_P[0];
  for (let i = 1; i < LOG_P.length; i++) y = fmaF32(y, x, LOG_P[i]);
  y = f(y * x);
  y = fmaF32(y, z, f(e * LOG_Q1));
  y = fmaF32(-z, 0.5, y);
  x = f(x + y);
  x = fmaF32(e, LOG_Q2, x);
  return x;
}

const FOPI = f(1.27323954473516); // 4 / pi
const DP1 = f(-0.78515625);
const DP2 = f(-2.4187564849853515625e-4);
const DP3 = f(-3.77489497744594108e-8);
const COS_P0 = f(2.443315711809948e-5);
const COS_P1 = f(-1.388731625493765e-3);
const COS_P2 = f(4.166664568298827e-2);
const SIN_P0 = f(-1.9515295891e-4);
const SIN_P1 = f(8.3321608736e-3);
const SIN_P2 = f(-1.6666654611e-1);

/** Result slots for sincosCephesF32, reused to avoid allocating per call. */
export interface SinCos {
  sin: number;
  cos: number;
}

/** sincos256_ps for one lane: sin and cos of a float32, Cephes sinf/cosf. */
export function sincosCephesF32(xIn: number, out: SinCos): void {
  let x = f(xIn);
  let signSin = x < 0 || Object.is(x, -0);
  x = Math.abs(x);

  // Octant: j = (int)(x * 4/pi), rounded up to even, with y = j as float.
  let y = f(x * FOPI);
  let j = Math.trunc(y) | 0; // _mm256_cvttps_epi32 truncates toward zero
  j = (j + 1) & ~1;
  y = f(j);
  const swapSignSin = (j & 4) !== 0;
  const useSinPoly = (j & 2) === 0; // poly_mask: which polynomial gives sin
  const signCos = (~(j - 2) & 4) !== 0;
  signSin = signSin !== swapSignSin;

  // Extended-precision modular arithmetic: x - y * pi/4 in three pieces.
  x = fmaF32(y, DP1, x);
  x = fmaF32(y, DP2, x);
  x = fmaF32(y, DP3, x);

  const z = f(x * x);
  let yc = COS_P0;
  yc = fmaF32(yc, z, COS_P1);
  yc = fmaF32(yc, z, COS_P2);
  yc = f(yc * z);
  yc = fmaF32(yc, z, -f(z * 0.5));
  yc = f(yc + 1);

  let ys = SIN_P0;
  ys = fmaF32(ys, z, SIN_P1);
  ys = fmaF32(ys, z, SIN_P2);
  ys = f(ys * z);
  ys = fmaF32(ys, x, x);

  // The vector code selects with masks and then adds the masked-out zero
  // (+0), which turns a -0 into +0; replay that so zero signs match too.
  const sinPart = useSinPoly ? ys : yc;
  const cosPart = useSinPoly ? yc : ys;
  const s = f(sinPart + 0);
  const c = f(cosPart + 0);
  out.sin = signSin ? -s : s;
  out.cos = signCos ? -c : c;
}
