// Gaussian noise from Philox4x32-10, identical on every backend.
//
// Element i of draw d under seed s: the Philox block with counter
// (i / 4 as 64 bits, d as 64 bits) and key s gives four 32-bit words; their
// top 24 bits make four uniforms in (0, 1), and Box–Muller turns the pairs
// (u0, u1) and (u2, u3) into four normals; element i takes lane i % 4.
// Box–Muller uses the engine's own float32 log/sin/cos (mathf.h), and this
// file is compiled without FMA contraction, so the bits do not depend on the
// machine or the compiler's choices.
#include "../engine/mathf.h"
#include "../engine/philox.h"
#include "ops.h"

namespace mb {

namespace {

inline float uniform_open(uint32_t bits) {
  // (k + 0.5) / 2^24 for k in [0, 2^24): exact in float, never 0 or 1.
  return ((float)(bits >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

inline void box_muller(float u_radius, float u_angle, float* a, float* b) {
  const float radius = sqrt_f32(-2.0f * log_f32(u_radius));
  const float angle = 6.28318530717958647692f * u_angle;
  *a = radius * cos_f32(angle);
  *b = radius * sin_f32(angle);
}

void normal_block(uint64_t group, uint64_t seed, uint64_t draw, float out[4]) {
  Philox4 r = philox4x32_10((uint32_t)group, (uint32_t)(group >> 32), (uint32_t)draw, (uint32_t)(draw >> 32),
                            (uint32_t)seed, (uint32_t)(seed >> 32));
  box_muller(uniform_open(r.v[0]), uniform_open(r.v[1]), &out[0], &out[1]);
  box_muller(uniform_open(r.v[2]), uniform_open(r.v[3]), &out[2], &out[3]);
}

}  // namespace

void randn_philox(uint64_t seed, uint64_t draw, uint64_t offset, long long n, float* out) {
  if (n <= 0) return;
  const uint64_t first_group = offset / 4, last_group = (offset + (uint64_t)n - 1) / 4;
  const long long groups = (long long)(last_group - first_group + 1);
  const int chunk = 1024;  // groups per task
  const int tasks = (int)((groups + chunk - 1) / chunk);
  parallel_for(tasks, 1, [&](int task) {
    const uint64_t g0 = first_group + (uint64_t)task * chunk;
    const uint64_t g1 = g0 + chunk - 1 < last_group ? g0 + chunk - 1 : last_group;
    for (uint64_t g = g0; g <= g1; ++g) {
      float block[4];
      normal_block(g, seed, draw, block);
      for (int lane = 0; lane < 4; ++lane) {
        const uint64_t element = g * 4 + (uint64_t)lane;
        if (element >= offset && element < offset + (uint64_t)n) out[element - offset] = block[lane];
      }
    }
  });
}


// Dropout with the same generator: element i of stream `stream` is kept when
// its uniform (Philox counter (i / 4, stream), key seed, lane i % 4) is at
// least p; kept values are scaled by 1 / (1 - p). The mask is a pure function
// of (seed, stream, i), so the backward regenerates it instead of storing it,
// and y = mask * x / (1 - p) serves both directions (it is linear in x).
void dropout_apply(uint64_t seed, uint64_t stream, float p, const float* x, long long n, float* y) {
  const float scale = 1.0f / (1.0f - p);
  const long long groups = (n + 3) / 4;
  parallel_ranges((int)((groups + 1023) / 1024), 1, [&](int t0, int t1) {
    for (long long g = (long long)t0 * 1024; g < (long long)t1 * 1024 && g < groups; ++g) {
      Philox4 r = philox4x32_10((uint32_t)g, (uint32_t)((uint64_t)g >> 32), (uint32_t)stream, (uint32_t)(stream >> 32),
                                (uint32_t)seed, (uint32_t)(seed >> 32));
      for (int lane = 0; lane < 4; ++lane) {
        const long long i = g * 4 + lane;
        if (i >= n) break;
        y[i] = uniform_open(r.v[lane]) >= p ? x[i] * scale : 0.0f;
      }
    }
  });
}

}  // namespace mb
