// torch.randn(n, generator=g) for n >= 16 on CPU, bit for bit: the native
// twin of src/core/rng/torch.ts's normalFill (see that file for what torch
// does), for the Node addon's training loop, where the JavaScript version
// cost 5.5 ms a step at batch 64 x 28 x 28 (some 40x this).
//
// The generator's state stays in JavaScript (the twister's 624 words and its
// index); this advances it exactly as the JavaScript would. Box-Muller runs
// with Cephes' single-precision log and sincos as ATen's avx_mathfun.h has
// them, built there with -mfma: each polynomial step is one fused
// multiply-add (fmaf here, correctly rounded), everything else a separate
// float operation (this file, like the rest, is compiled without
// contraction). Not in the wasm build: freestanding wasm has no fmaf.
#include <cmath>
#include <cstring>

#include "../engine/api.h"

// x86-64: the functions below are inlined into two clones of the fill, one
// for CPUs with FMA (fmaf becomes one instruction) and a baseline one (a
// call into libm's correctly rounded fmaf); the loader picks one. The bits
// are the same either way. 4x faster than the library calls at batch 64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MB_FILL_CLONES __attribute__((target_clones("fma", "default")))
#else
#define MB_FILL_CLONES
#endif
#define MB_INLINE inline __attribute__((always_inline))

namespace mb {

namespace {

// A constant as JavaScript's Math.fround(literal) gives it: the decimal to
// double, then to float (a decimal straight to float can round differently).
#define F(x) ((float)(x))

constexpr int kN = 624, kM = 397;

MB_INLINE void twist(uint32_t* mt) {
  for (int i = 0; i < kN; ++i) {
    const uint32_t y = (mt[i] & 0x80000000u) | (mt[(i + 1) % kN] & 0x7fffffffu);
    uint32_t v = mt[(i + kM) % kN] ^ (y >> 1);
    if (y & 1) v ^= 0x9908b0dfu;
    mt[i] = v;
  }
}

struct Twister {
  uint32_t* mt;
  int index;
  MB_INLINE uint32_t next() {
    if (index >= kN) {
      twist(mt);
      index = 0;
    }
    uint32_t y = mt[index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
  }
  // at::uniform_real_distribution<float>(0, 1): 24 random bits, exact.
  MB_INLINE float uniform() { return (float)(next() & 0xffffffu) / 16777216.0f; }
};

MB_INLINE float bits_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
MB_INLINE uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// log256_ps for one lane (Cephes logf), as logCephesF32.
MB_INLINE float log_cephes(float x) {
  if (!(x > 0.0f)) return NAN;
  const float min_norm = bits_float(0x00800000u);
  x = x > min_norm ? x : min_norm;  // flush denormals, as _mm256_max_ps
  const uint32_t b = float_bits(x);
  const int exponent = (int)(b >> 23) - 0x7f;
  x = bits_float((b & ~0x7f800000u) | 0x3f000000u);
  float e = (float)(exponent + 1);
  float tmp = 0.0f;
  if (x < F(0.707106781186547524)) {
    tmp = x;
    e = e - 1.0f;
  }
  x = x - 1.0f;
  x = x + tmp;
  const float z = x * x;
  static const float p[9] = {F(7.0376836292e-2), F(-1.1514610310e-1), F(1.1676998740e-1),
                             F(-1.2420140846e-1), F(1.4249322787e-1), F(-1.6668057665e-1),
                             F(2.0000714765e-1), F(-2.4999993993e-1), F(3.3333331174e-1)};
  float y = p[0];
  for (int i = 1; i < 9; ++i) y = std::fmaf(y, x, p[i]);
  y = y * x;
  y = std::fmaf(y, z, e * F(-2.12194440e-4));
  y = std::fmaf(-z, 0.5f, y);
  x = x + y;
  x = std::fmaf(e, F(0.693359375), x);
  return x;
}

// sincos256_ps for one lane (Cephes sinf / cosf), as sincosCephesF32.
MB_INLINE void sincos_cephes(float x, float* sin_out, float* cos_out) {
  bool sign_sin = std::signbit(x);
  x = std::fabs(x);
  float y = x * F(1.27323954473516);  // 4 / pi
  int j = (int)y;                    // _mm256_cvttps_epi32 truncates
  j = (j + 1) & ~1;
  y = (float)j;
  const bool swap_sign_sin = (j & 4) != 0;
  const bool use_sin_poly = (j & 2) == 0;
  const bool sign_cos = (~(j - 2) & 4) != 0;
  sign_sin = sign_sin != swap_sign_sin;

  x = std::fmaf(y, F(-0.78515625), x);
  x = std::fmaf(y, F(-2.4187564849853515625e-4), x);
  x = std::fmaf(y, F(-3.77489497744594108e-8), x);

  const float z = x * x;
  float yc = F(2.443315711809948e-5);
  yc = std::fmaf(yc, z, F(-1.388731625493765e-3));
  yc = std::fmaf(yc, z, F(4.166664568298827e-2));
  yc = yc * z;
  yc = std::fmaf(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;

  float ys = F(-1.9515295891e-4);
  ys = std::fmaf(ys, z, F(8.3321608736e-3));
  ys = std::fmaf(ys, z, F(-1.6666654611e-1));
  ys = ys * z;
  ys = std::fmaf(ys, x, x);

  // The vector code selects with masks and adds the masked-out zero (+0).
  const float s = (use_sin_poly ? ys : yc) + 0.0f;
  const float c = (use_sin_poly ? yc : ys) + 0.0f;
  *sin_out = sign_sin ? -s : s;
  *cos_out = sign_cos ? -c : c;
}

// Box-Muller on data[0 .. 16) in place, as normalFill16.
MB_INLINE void box_muller16(float* data) {
  const float two_pi = (float)(2.0 * 3.14159265358979323846);  // Math.fround(2 * Math.PI)
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];  // [0, 1) -> (0, 1] for the log
    const float u2 = data[j + 8];
    const float radius = std::sqrt(-2.0f * log_cephes(u1));
    const float theta = two_pi * u2;
    float s, c;
    sincos_cephes(theta, &s, &c);
    // _mm256_fmadd_ps(n, std = 1, mean = 0) is n + 0: exact, but -0 becomes +0.
    data[j] = radius * c + 0.0f;
    data[j + 8] = radius * s + 0.0f;
  }
}

}  // namespace

}  // namespace mb

MB_API MB_FILL_CLONES int mb_torch_normal_fill(uint32_t* mt, int index, float* out, double count) {
  using namespace mb;
  if (!(count >= 16) || index < 0 || index > kN) return -1;
  const size_t n = (size_t)count;
  Twister tw{mt, index};
  for (size_t i = 0; i < n; ++i) out[i] = tw.uniform();
  for (size_t i = 0; i + 16 <= n; i += 16) box_muller16(out + i);
  if (n % 16 != 0) {  // 16 fresh uniforms over the last 16 slots, one more block
    float* last = out + (n - 16);
    for (int i = 0; i < 16; ++i) last[i] = tw.uniform();
    box_muller16(last);
  }
  return tw.index;
}
