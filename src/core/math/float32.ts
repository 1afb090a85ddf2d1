// Float32 arithmetic helpers for reproducing PyTorch CPU results bit for bit.
//
// JavaScript numbers are doubles; an operation on float32 values followed by
// Math.fround is the correctly rounded float32 result for + - * / and sqrt
// (a double has more than 2 * 24 + 2 bits, so the double rounding is harmless).
// What fround cannot express is a fused multiply-add, which PyTorch's CPU
// kernels get both explicitly (vec::fmadd) and implicitly: the AVX2/AVX512
// kernels are compiled with -mfma, and GCC contracts `a + b * c` in scalar
// code into one FMA. fmaF32 provides that single rounding.

const f = Math.fround;

/**
 * Single-rounded float32 fused multiply-add, a * b + c, for float32 inputs.
 * a * b is exact in a double; the double sum s may round, and its error e is
 * recovered exactly (TwoSum). Rounding s to float32 is then the correctly
 * rounded result except when s sits exactly halfway between two floats,
 * where the sign of e decides the side.
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bb = s - p;
  const e = (p - (s - bb)) + (c - bb);
  const r = f(s);
  if (e === 0 || r === s || !Number.isFinite(s)) return r;
  const other = 2 * s - r; // the float on the other side when s is a midpoint
  if (other === r || f(other) !== other) return r;
  return e > 0 ? Math.max(r, other) : Math.min(r, other);
}

/**
 * The scalar transcendental functions a float32 computation uses, each
 * returning a float32 value.
 *
 * PyTorch's CPU float32 sqrt, log and exp (including `tensor ** 0.5`) go
 * through MKL VML, whose results are not always correctly rounded and depend
 * on the CPU MKL detects: on some machines vsSqrt is 1 ulp off for a sizeable
 * fraction of inputs. F32_MATH is the IEEE answer (what torch gives where MKL
 * runs its AVX2 code path); pass another ScalarMath to reproduce a reference
 * computed elsewhere.
 */
export interface ScalarMath {
  sqrt(x: number): number;
  log(x: number): number;
  exp(x: number): number;
}

/** Correctly rounded float32 sqrt; log and exp from the double functions, rounded. */
export const F32_MATH: ScalarMath = Object.freeze({
  sqrt: (x: number) => f(Math.sqrt(x)),
  log: (x: number) => f(Math.log(x)),
  exp: (x: number) => f(Math.exp(x)),
});
