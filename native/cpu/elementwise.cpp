// Elementwise ops that are not fused into a GEMM or a norm.
#include "../engine/mathf.h"
#include "ops.h"

namespace mb {

void silu_forward(const float* x, long long n, float* y) {
  for (long long i = 0; i < n; ++i) y[i] = silu_f32(x[i]);
}

void add_forward(const float* a, const float* b, long long n, float* y) {
  constexpr long long kChunk = 1 << 14;
  parallel_ranges((int)((n + kChunk - 1) / kChunk), 1, [&](int c0, int c1) {
    const long long i1 = (long long)c1 * kChunk < n ? (long long)c1 * kChunk : n;
    for (long long i = (long long)c0 * kChunk; i < i1; ++i) y[i] = a[i] + b[i];
  });
}

void divide_scalar(const float* x, float divisor, long long n, float* y) {
  for (long long i = 0; i < n; ++i) y[i] = x[i] / divisor;
}

void zero_floats(float* x, size_t n) {
  constexpr size_t kChunk = 1 << 16;
  parallel_ranges((int)((n + kChunk - 1) / kChunk), 1, [&](int c0, int c1) {
    const size_t i0 = (size_t)c0 * kChunk, i1 = (size_t)c1 * kChunk < n ? (size_t)c1 * kChunk : n;
    mb_zero(x + i0, sizeof(float) * (i1 - i0));
  });
}

void silu_backward(const float* x, const float* dy, long long n, float* dx) {
  for (long long i = 0; i < n; ++i) {
    const float sig = 1.0f / (1.0f + exp_f32(-x[i]));
    dx[i] += dy[i] * (sig * (1.0f + x[i] * (1.0f - sig)));
  }
}

// One sample per task; within it each channel's sum runs over the pixels in order.
void add_broadcast_backward(const float* dy, int batch, int pixels, int channels, float* dbias) {
  parallel_for(batch, 1, [&](int b) {
    float* row = dbias + (size_t)b * channels;
    for (int p = 0; p < pixels; ++p) {
      const float* g = dy + ((size_t)b * pixels + p) * channels;
      for (int c = 0; c < channels; ++c) row[c] += g[c];
    }
  });
}

bool has_non_finite(const float* x, long long n) {
  for (long long i = 0; i < n; ++i)
    if (!is_finite_f32(x[i])) return true;
  return false;
}

}  // namespace mb
