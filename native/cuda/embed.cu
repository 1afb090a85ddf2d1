// Timestep and class embeddings on the GPU, the twins of cpu/embed.cpp: the
// same float32 expressions and the engine's own exp/sin/cos/log (mathf.h,
// compiled for the device with --fmad=false), so the bits match the CPU.
#include "../engine/mathf.h"
#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {

__global__ void timestep_kernel(const float* timesteps, int batch, int dim, bool flip, float freq_shift, float* out) {
  const int half = dim / 2;
  const float neg_log_period = (float)(-9.210340371976184);
  MB_GRID_STRIDE(idx, (size_t)batch * half) {
    const int b = (int)(idx / (size_t)half), i = (int)(idx % (size_t)half);
    const float exponent = (neg_log_period * (float)i) / ((float)half - freq_shift);
    const float freq = exp_f32(exponent);
    const float arg = timesteps[b] * freq;
    const float s = sin_f32(arg), c = cos_f32(arg);
    float* row = out + (size_t)b * dim;
    row[i] = flip ? c : s;
    row[half + i] = flip ? s : c;
  }
}

__global__ void odd_dim_zero(int batch, int dim, float* out) {
  MB_GRID_STRIDE(b, (size_t)batch) out[b * dim + dim - 1] = 0.0f;
}

__global__ void fourier_kernel(const float* timesteps, int batch, const float* weight, int n, float* out) {
  MB_GRID_STRIDE(idx, (size_t)batch * n) {
    const int b = (int)(idx / (size_t)n), i = (int)(idx % (size_t)n);
    const float lt = log_f32(timesteps[b]);
    const float arg = ((lt * weight[i]) * 2.0f) * (float)3.141592653589793;
    out[(size_t)b * 2 * n + i] = sin_f32(arg);
    out[(size_t)b * 2 * n + n + i] = cos_f32(arg);
  }
}

__global__ void gather_kernel(const float* table, int dim, const float* index, int batch, float* out, bool accumulate) {
  MB_GRID_STRIDE(idx, (size_t)batch * dim) {
    const size_t b = idx / (size_t)dim, c = idx % (size_t)dim;
    const float v = table[(size_t)(int)index[b] * dim + c];
    out[idx] = accumulate ? out[idx] + v : v;
  }
}

// One thread per column walks the batch in order, so repeated indices add
// in the CPU's order (no atomics: the sums are bit-identical).
__global__ void scatter_add_kernel(float* table, int dim, const float* index, int batch, const float* rows) {
  MB_GRID_STRIDE(c, (size_t)dim) {
    for (int b = 0; b < batch; ++b) table[(size_t)(int)index[b] * dim + c] += rows[(size_t)b * dim + c];
  }
}

}  // namespace

void timestep_embedding(const float* timesteps, int batch, int dim, bool flip_sin_to_cos, float freq_shift, float* out) {
  if (batch <= 0 || dim <= 0 || !begin_launch()) return;
  if (dim / 2 > 0) {
    MB_LAUNCH(timestep_kernel, grid_for((size_t)batch * (dim / 2)), kThreads)(timesteps, batch, dim,
                                                                                   flip_sin_to_cos, freq_shift, out);
    if (!check_launch("timestep_embedding")) return;
  }
  if (dim % 2) {
    MB_LAUNCH(odd_dim_zero, grid_for((size_t)batch), kThreads)(batch, dim, out);
    check_launch("timestep_embedding (odd dim)");
  }
}

void fourier_embedding(const float* timesteps, int batch, const float* weight, int n, float* out) {
  if (batch <= 0 || n <= 0 || !begin_launch()) return;
  MB_LAUNCH(fourier_kernel, grid_for((size_t)batch * n), kThreads)(timesteps, batch, weight, n, out);
  check_launch("fourier_embedding");
}

void gather_rows(const float* table, int dim, const float* index, int batch, float* out, bool accumulate) {
  if (batch <= 0 || dim <= 0 || !begin_launch()) return;
  MB_LAUNCH(gather_kernel, grid_for((size_t)batch * dim), kThreads)(table, dim, index, batch, out, accumulate);
  check_launch("gather_rows");
}

// ---------------------------------------------------------------------------
// Backward.

void scatter_add_rows(float* table, int dim, const float* index, int batch, const float* rows) {
  if (batch <= 0 || dim <= 0 || !begin_launch()) return;
  MB_LAUNCH(scatter_add_kernel, grid_for((size_t)dim), kThreads)(table, dim, index, batch, rows);
  check_launch("scatter_add_rows");
}

}  // namespace cuda
}  // namespace mb
