// Philox4x32-10 noise and dropout on the GPU, bit-identical with
// cpu/noise.cpp: the same counter scheme (block i / 4 of draw d under seed s,
// lane i % 4), the same 24-bit uniforms and Box–Muller with the engine's own
// float32 log/sin/cos (mathf.h), compiled with --fmad=false. One thread per
// Philox block.
#include "../engine/mathf.h"
#include "../engine/philox.h"
#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {

__device__ inline float uniform_open(uint32_t bits) { return ((float)(bits >> 8) + 0.5f) * (1.0f / 16777216.0f); }

__device__ inline void box_muller(float u_radius, float u_angle, float* a, float* b) {
  const float radius = sqrt_f32(-2.0f * log_f32(u_radius));
  const float angle = 6.28318530717958647692f * u_angle;
  *a = radius * cos_f32(angle);
  *b = radius * sin_f32(angle);
}

__global__ void randn_kernel(uint64_t seed, uint64_t draw, uint64_t offset, uint64_t n, uint64_t first_group,
                             uint64_t groups, float* out) {
  MB_GRID_STRIDE(gi, groups) {
    const uint64_t g = first_group + gi;
    Philox4 r = philox4x32_10((uint32_t)g, (uint32_t)(g >> 32), (uint32_t)draw, (uint32_t)(draw >> 32), (uint32_t)seed,
                              (uint32_t)(seed >> 32));
    float block[4];
    box_muller(uniform_open(r.v[0]), uniform_open(r.v[1]), &block[0], &block[1]);
    box_muller(uniform_open(r.v[2]), uniform_open(r.v[3]), &block[2], &block[3]);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const uint64_t element = g * 4 + (uint64_t)lane;
      if (element >= offset && element < offset + n) out[element - offset] = block[lane];
    }
  }
}

__global__ void dropout_kernel(uint64_t seed, uint64_t stream_id, float p, float scale, const float* x, uint64_t n,
                               float* y) {
  MB_GRID_STRIDE(g, (n + 3) / 4) {
    Philox4 r = philox4x32_10((uint32_t)g, (uint32_t)(g >> 32), (uint32_t)stream_id, (uint32_t)(stream_id >> 32),
                              (uint32_t)seed, (uint32_t)(seed >> 32));
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const uint64_t i = g * 4 + lane;
      if (i < n) y[i] = uniform_open(r.v[lane]) >= p ? x[i] * scale : 0.0f;
    }
  }
}

}  // namespace

void randn_philox(uint64_t seed, uint64_t draw, uint64_t offset, long long n, float* out) {
  if (n <= 0 || !begin_launch()) return;
  const uint64_t first_group = offset / 4, last_group = (offset + (uint64_t)n - 1) / 4;
  const uint64_t groups = last_group - first_group + 1;
  MB_LAUNCH(randn_kernel, grid_for((size_t)groups), kThreads)(seed, draw, offset, (uint64_t)n, first_group, groups,
                                                                    out);
  check_launch("randn_philox");
}

void dropout_apply(uint64_t seed, uint64_t stream_id, float p, const float* x, long long n, float* y) {
  if (n <= 0 || !begin_launch()) return;
  const float scale = 1.0f / (1.0f - p);
  MB_LAUNCH(dropout_kernel, grid_for((size_t)((n + 3) / 4)), kThreads)(seed, stream_id, p, scale, x, (uint64_t)n,
                                                                             y);
  check_launch("dropout");
}

}  // namespace cuda
}  // namespace mb
