// IEEE binary16 (float16) and bfloat16 as raw 16-bit patterns, in integer
// arithmetic (host and device alike): float -> half with round-to-nearest-even
// (what cvt.rn.f16.f32 and cvt.rn.bf16.f32 do, subnormals and overflow to
// infinity included) and back (exact). Used to pack the tensor-core weights
// on the device (conv2d_mma.cu), by the CUDA emulation's conversions and
// mma.sync (emulation/), and for the self-test's references of half-rounded
// inputs (parity.cpp).
#pragma once

#include <stdint.h>

#include "../engine/mathf.h"  // MB_HD

namespace mb {

// The element types of the tensor-core GEMMs; the numbers are the C ABI's
// (mb_model_use_cuda) and the TypeScript `dtype` option's order.
enum class WeightType : int { kFloat32 = 0, kFloat16 = 1, kBfloat16 = 2 };

MB_HD inline uint32_t float_bits(float f) { return __builtin_bit_cast(uint32_t, f); }
MB_HD inline float bits_float(uint32_t x) { return __builtin_bit_cast(float, x); }

MB_HD inline uint16_t float_to_f16_bits(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));  // NaN stays NaN, inf
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds past 65504: infinity
  if (ax < 0x38800000u) {  // below 2^-14: a subnormal half (units of 2^-24) or zero
    if (ax <= 0x33000000u) return (uint16_t)sign;  // <= 2^-25: a tie at 2^-25 rounds to the even 0
    const int shift = 126 - (int)(ax >> 23);          // value / 2^-24 = mantissa * 2^(exponent - 126)
    const uint32_t mantissa = (ax & 0x7fffffu) | 0x800000u;
    uint32_t r = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (r & 1u))) ++r;  // may carry into the smallest normal: still right
    return (uint16_t)(sign | r);
  }
  uint32_t r = (ax >> 13) - (112u << 10);  // exponent rebiased 127 -> 15, 10 mantissa bits
  const uint32_t rest = ax & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) ++r;  // a carry into the exponent is the right rounding
  return (uint16_t)(sign | r);
}

MB_HD inline float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {  // zero or subnormal: m * 2^-24, exact in float
    const float v = (float)m * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
  return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

MB_HD inline uint16_t float_to_bf16_bits(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);  // NaN: keep it a (quiet) NaN
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);                 // nearest even; overflow gives inf
}

MB_HD inline float bf16_bits_to_float(uint16_t h) { return bits_float((uint32_t)h << 16); }

MB_HD inline uint16_t float_to_half_bits(WeightType t, float f) {
  return t == WeightType::kBfloat16 ? float_to_bf16_bits(f) : float_to_f16_bits(f);
}
MB_HD inline float half_bits_to_float(WeightType t, uint16_t h) {
  return t == WeightType::kBfloat16 ? bf16_bits_to_float(h) : f16_bits_to_float(h);
}

}  // namespace mb
