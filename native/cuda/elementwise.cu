// Elementwise ops not fused elsewhere, the twins of cpu/elementwise.cpp
// (bit-identical: same expressions, mathf's exp, no contraction).
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
}  // namespace

void silu_forward(const float* x, long long n, float* y) {
  if (n <= 0 || !begin_launch()) return;
  silu_kernel<<<grid_for((size_t)n), kThreads, 0, stream()>>>(x, (size_t)n, y);
  check_launch("silu");
}

void add_forward(const float* a, const float* b, long long n, float* y) {
  if (n <= 0 || !begin_launch()) return;
  add_kernel<<<grid_for((size_t)n), kThreads, 0, stream()>>>(a, b, (size_t)n, y);
  check_launch("add");
}

}  // namespace cuda
}  // namespace mb
