// The engine's own float32 math: exp, log, sin, cos, sqrt.
//
// Why our own: the wasm build has no libm, and the same function on every
// backend means cpu, wasm and cuda compute the same values. The
// scalar versions here are accurate to about 1 ulp; sin/cos/log go through
// double precision, which wasm and x86 both evaluate exactly per IEEE 754.
// Files that need bit-identical results are compiled with -ffp-contract=off.
#pragma once

#include <stdint.h>

// Scalar functions are also compiled for CUDA devices (native/cuda), where
// with --fmad=false they perform the same IEEE operations and return the
// same bits. The four-lane versions below are host-only.
#ifndef MB_HD
#if defined(__CUDACC__)
#define MB_HD __host__ __device__
#else
#define MB_HD
#endif
#endif

namespace mb {

MB_HD inline uint32_t f32_bits(float x) { return __builtin_bit_cast(uint32_t, x); }
MB_HD inline float bits_f32(uint32_t b) { return __builtin_bit_cast(float, b); }
MB_HD inline uint64_t f64_bits(double x) { return __builtin_bit_cast(uint64_t, x); }
MB_HD inline double bits_f64(uint64_t b) { return __builtin_bit_cast(double, b); }

MB_HD inline float sqrt_f32(float x) { return __builtin_sqrtf(x); }
MB_HD inline double sqrt_f64(double x) { return __builtin_sqrt(x); }
MB_HD inline bool is_finite_f32(float x) { return (f32_bits(x) & 0x7f800000u) != 0x7f800000u; }

// exp(x) for float: x = n*ln2 + r with |r| <= ln2/2, exp(r) by a degree-6
// minimax polynomial (the classic Cephes coefficients), then scale by 2^n in
// two steps so that results in the subnormal range are still right.
MB_HD inline float exp_f32(float x) {
  if (x != x) return x;
  if (x > 88.72283935546875f) return bits_f32(0x7f800000u);
  if (x < -103.97208f) return 0.0f;
  const float kLog2e = 1.44269504088896341f;
  float fn = __builtin_floorf(x * kLog2e + 0.5f);
  // ln2 split in a part exact in float and a remainder (Cody–Waite).
  float r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  int n = (int)fn;
  // 2^n as two factors, each a normal float, covers n in [-150, 128].
  int n1 = n / 2;
  int n2 = n - n1;
  return y * bits_f32((uint32_t)(n1 + 127) << 23) * bits_f32((uint32_t)(n2 + 127) << 23);
}

// log(x) in double: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
// log(m) = 2 atanh(s), s = (m-1)/(m+1), by its series (|s| < 0.172).
MB_HD inline double log_f64(double x) {
  if (x != x || x < 0) return bits_f64(0x7ff8000000000000ull);
  if (x == 0) return -bits_f64(0x7ff0000000000000ull);
  if (x == bits_f64(0x7ff0000000000000ull)) return x;
  uint64_t b = f64_bits(x);
  int e = (int)((b >> 52) & 0x7ff);
  if (e == 0) {  // subnormal: normalise first
    x *= 18014398509481984.0;  // 2^54
    b = f64_bits(x);
    e = (int)((b >> 52) & 0x7ff) - 54;
  }
  e -= 1023;
  double m = bits_f64((b & 0x000fffffffffffffull) | 0x3ff0000000000000ull);
  if (m > 1.4142135623730951) {
    m *= 0.5;
    e += 1;
  }
  double s = (m - 1.0) / (m + 1.0);
  double s2 = s * s;
  // 2*(s + s^3/3 + s^5/5 + ...), enough terms for |s| < 0.172 to reach 1e-17.
  double t = 1.0 / 23;
  for (int k = 21; k >= 1; k -= 2) t = t * s2 + 1.0 / k;
  const double kLn2 = 0.69314718055994530942;
  return 2.0 * s * t + e * kLn2;
}
MB_HD inline float log_f32(float x) { return (float)log_f64((double)x); }

// sin and cos in double after reducing by multiples of pi/2 (pi/2 in three
// parts, exact for |x| well beyond 1e6, the largest timestep arguments seen).
MB_HD inline void sincos_f64(double x, double* s_out, double* c_out) {
  const double kTwoOverPi = 0.63661977236758134308;
  const double kPio2_1 = 1.57079632673412561417e+00;
  const double kPio2_2 = 6.07710050650619224932e-11;
  const double kPio2_3 = 2.02226624879595063154e-21;
  double k = __builtin_floor(x * kTwoOverPi + 0.5);
  double r = ((x - k * kPio2_1) - k * kPio2_2) - k * kPio2_3;
  double r2 = r * r;
  // Taylor series to r^17 / r^18: |r| <= pi/4 gives error < 1e-17.
  double sp = -1.0 / 355687428096000.0;  // -1/17!
  sp = sp * r2 + 1.0 / 1307674368000.0;
  sp = sp * r2 - 1.0 / 6227020800.0;
  sp = sp * r2 + 1.0 / 39916800.0;
  sp = sp * r2 - 1.0 / 362880.0;
  sp = sp * r2 + 1.0 / 5040.0;
  sp = sp * r2 - 1.0 / 120.0;
  sp = sp * r2 + 1.0 / 6.0;
  double sn = r - r * r2 * sp;  // note sign: r - r^3/6 + ...
  double cp = 1.0 / 6402373705728000.0;  // 1/18!
  cp = cp * r2 - 1.0 / 20922789888000.0;
  cp = cp * r2 + 1.0 / 87178291200.0;
  cp = cp * r2 - 1.0 / 479001600.0;
  cp = cp * r2 + 1.0 / 3628800.0;
  cp = cp * r2 - 1.0 / 40320.0;
  cp = cp * r2 + 1.0 / 720.0;
  cp = cp * r2 - 1.0 / 24.0;
  cp = cp * r2 + 0.5;
  double cs = 1.0 - r2 * cp;
  long long q = (long long)k & 3;
  double s, c;
  switch (q) {
    case 0: s = sn; c = cs; break;
    case 1: s = cs; c = -sn; break;
    case 2: s = -sn; c = -cs; break;
    default: s = -cs; c = sn; break;
  }
  *s_out = s;
  *c_out = c;
}
MB_HD inline float sin_f32(float x) {
  double s, c;
  sincos_f64((double)x, &s, &c);
  return (float)s;
}
MB_HD inline float cos_f32(float x) {
  double s, c;
  sincos_f64((double)x, &s, &c);
  return (float)c;
}

// SiLU(x) = x * sigmoid(x), written as x / (1 + exp(-x)) like torch.
MB_HD inline float silu_f32(float x) { return x / (1.0f + exp_f32(-x)); }

// Four lanes at a time through the compiler's generic vectors (SSE2 natively,
// SIMD128 in wasm). exp_f32x4 performs exactly exp_f32's operations, lane by
// lane, so it returns the same bits: vectorising a loop changes no result.
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));
// Loads and stores of 4 floats at any float-aligned address.
typedef float f32x4_u __attribute__((vector_size(16), aligned(4)));
inline f32x4 load_f32x4(const float* p) { return *reinterpret_cast<const f32x4_u*>(p); }
inline void store_f32x4(float* p, f32x4 v) { *reinterpret_cast<f32x4_u*>(p) = v; }

inline f32x4 select_f32x4(i32x4 mask, f32x4 a, f32x4 b) {
  return __builtin_bit_cast(f32x4, (__builtin_bit_cast(i32x4, a) & mask) | (__builtin_bit_cast(i32x4, b) & ~mask));
}

// exp_f32's operations on every lane of a float vector V (int vector I of
// the same lane count): f32x4 here, wider vectors in the per-ISA kernels
// (groupnorm_avx512.cpp), all returning the same bits lane for lane.
template <typename V, typename I>
inline V exp_lanes(V x) {
  auto select = [](I mask, V a, V b) {
    return __builtin_bit_cast(V, (__builtin_bit_cast(I, a) & mask) | (__builtin_bit_cast(I, b) & ~mask));
  };
  const V hi = V{} + 88.72283935546875f, lo = V{} - 103.97208f;
  const I overflow = x > hi, underflow = x < lo, nan = x != x;
  // Work on a clamped, NaN-free copy; the special lanes are patched at the end.
  V xc = select(overflow, hi, x);
  xc = select(underflow | nan, lo, xc);
  const float kLog2e = 1.44269504088896341f;
  const V t = xc * kLog2e + 0.5f;
#if defined(__wasm_simd128__)
  // f32x4.floor: one instruction, where V8 turns each float-to-int
  // conversion into a sequence of several. The same value as below.
  const V fn = __builtin_elementwise_floor(t);
#else
  // floor(t) for |t| < 2^31: truncate, then step down where that rounded up.
  V fn = __builtin_convertvector(__builtin_convertvector(t, I), V);
  fn += __builtin_convertvector(fn > t, V);  // the mask is -1 where fn > t
#endif
  V r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const V y = p * r * r + r + 1.0f;
  const I n = __builtin_convertvector(fn, I);
  const I n1 = (n - (n >> 31)) >> 1;  // n / 2 rounded toward zero, as in exp_f32
  const I n2 = n - n1;
  V e = y * __builtin_bit_cast(V, (n1 + 127) << 23) * __builtin_bit_cast(V, (n2 + 127) << 23);
  e = select(overflow, V{} + __builtin_bit_cast(float, 0x7f800000u), e);
  e = select(underflow, V{}, e);
  return select(nan, x, e);
}

template <typename V, typename I>
inline V silu_lanes(V x) {
  return x / (1.0f + exp_lanes<V, I>(-x));
}

inline f32x4 exp_f32x4(f32x4 x) { return exp_lanes<f32x4, i32x4>(x); }

inline f32x4 silu_f32x4(f32x4 x) { return silu_lanes<f32x4, i32x4>(x); }

}  // namespace mb
