// Timestep and class embeddings, computed exactly as diffusers does in
// float32 (get_timestep_embedding, GaussianFourierProjection, nn.Embedding).
// The sinusoids use the engine's own sin/cos so every backend agrees.
#include "../engine/mathf.h"
#include "ops.h"

namespace mb {

void timestep_embedding(const float* timesteps, int batch, int dim, bool flip_sin_to_cos, float freq_shift,
                        float* out) {
  const int half = dim / 2;
  // exponent = -log(10000) * arange(half) / (half - freq_shift), each op in float32
  const float neg_log_period = (float)(-9.210340371976184);
  for (int b = 0; b < batch; ++b) {
    float* row = out + (size_t)b * dim;
    for (int i = 0; i < half; ++i) {
      const float exponent = (neg_log_period * (float)i) / ((float)half - freq_shift);
      const float freq = exp_f32(exponent);
      const float arg = timesteps[b] * freq;
      const float s = sin_f32(arg), c = cos_f32(arg);
      if (flip_sin_to_cos) {
        row[i] = c;
        row[half + i] = s;
      } else {
        row[i] = s;
        row[half + i] = c;
      }
    }
    if (dim % 2) row[dim - 1] = 0.0f;
  }
}

void fourier_embedding(const float* timesteps, int batch, const float* weight, int n, float* out) {
  const float two_pi = 6.283185307179586f;
  for (int b = 0; b < batch; ++b) {
    const float lt = log_f32(timesteps[b]);
    float* row = out + (size_t)b * 2 * n;
    for (int i = 0; i < n; ++i) {
      // x[:, None] * W[None, :] * 2 * pi, evaluated left to right in float32
      const float arg = ((lt * weight[i]) * 2.0f) * (float)3.141592653589793;
      row[i] = sin_f32(arg);
      row[n + i] = cos_f32(arg);
    }
  }
  (void)two_pi;
}

void embedding_lookup(const float* table, int dim, const int* index, int batch, float* out) {
  for (int b = 0; b < batch; ++b) mb_copy(out + (size_t)b * dim, table + (size_t)index[b] * dim, sizeof(float) * dim);
}

// The backward of a row lookup, in order of b: repeated indices add in the
// order the CUDA kernel adds them too.
void scatter_add_rows(float* table, int dim, const float* index, int batch, const float* rows) {
  for (int b = 0; b < batch; ++b) {
    float* row = table + (size_t)(int)index[b] * dim;
    for (int c = 0; c < dim; ++c) row[c] += rows[(size_t)b * dim + c];
  }
}

}  // namespace mb
