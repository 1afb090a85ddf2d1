// Elementwise ops not fused elsewhere, forward then backward, the twins of
// cpu/elementwise.cpp (bit-identical: same expressions, mathf's exp, no contraction).
#include "../engine/mathf.h"
#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {
__global__ void silu_kernel(const float* x, size_t n, float* y) {
  MB_GRID_STRIDE(i, n) y[i] = silu_f32(x[i]);
}
__global__ void add_kernel(const float* a, const float* b, size_t n, float* y) {
  MB_GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}
__global__ void divide_kernel(const float* x, float divisor, size_t n, float* y) {
  MB_GRID_STRIDE(i, n) y[i] = x[i] / divisor;
}
// One thread per (sample, channel) sums the pixels in order, as the CPU does.
__global__ void add_broadcast_backward_kernel(const float* dy, int batch, int pixels, int channels, float* dbias) {
  MB_GRID_STRIDE(i, (size_t)batch * channels) {
    const size_t b = i / (size_t)channels, c = i % (size_t)channels;
    float sum = dbias[i];
    for (int p = 0; p < pixels; ++p) sum += dy[((size_t)b * pixels + p) * channels + c];
    dbias[i] = sum;
  }
}
__global__ void silu_backward_kernel(const float* x, const float* dy, size_t n, float* dx) {
  MB_GRID_STRIDE(i, n) {
    const float sig = 1.0f / (1.0f + exp_f32(-x[i]));
    dx[i] += dy[i] * (sig * (1.0f + x[i] * (1.0f - sig)));
  }
}
}  // namespace

void silu_forward(const float* x, long long n, float* y) {
  if (n <= 0 || !begin_launch()) return;
  MB_LAUNCH(silu_kernel, grid_for((size_t)n), kThreads)(x, (size_t)n, y);
  check_launch("silu");
}

void add_forward(const float* a, const float* b, long long n, float* y) {
  if (n <= 0 || !begin_launch()) return;
  MB_LAUNCH(add_kernel, grid_for((size_t)n), kThreads)(a, b, (size_t)n, y);
  check_launch("add");
}

// ---------------------------------------------------------------------------
// Backward.

// dx += dy * silu'(x)
void silu_backward(const float* x, const float* dy, long long n, float* dx) {
  if (n <= 0 || !begin_launch()) return;
  MB_LAUNCH(silu_backward_kernel, grid_for((size_t)n), kThreads)(x, dy, (size_t)n, dx);
  check_launch("silu_backward");
}

void divide_scalar(const float* x, float divisor, long long n, float* y) {
  if (n <= 0 || !begin_launch()) return;
  MB_LAUNCH(divide_kernel, grid_for((size_t)n), kThreads)(x, divisor, (size_t)n, y);
  check_launch("divide_scalar");
}

void add_broadcast_backward(const float* dy, int batch, int pixels, int channels, float* dbias) {
  if (batch <= 0 || channels <= 0 || !begin_launch()) return;
  MB_LAUNCH(add_broadcast_backward_kernel, grid_for((size_t)batch * channels), kThreads)(dy, batch, pixels, channels,
                                                                                           dbias);
  check_launch("add_broadcast_backward");
}

}  // namespace cuda
}  // namespace mb
