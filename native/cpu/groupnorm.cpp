// GroupNorm on NHWC activations, with the UNet's usual tail fused in:
//   y = GN(x) * gamma + beta, then optionally * (1 + scale[b]) + shift[b]
//   (scale_shift time conditioning), then optionally SiLU.
// Statistics are accumulated in double, two-pass (mean, then centred sum of
// squares) so that large activations do not lose the variance.
//
// Forward only for now; the backward joins this file with the training issue.
#include "../engine/mathf.h"
#include "ops.h"

namespace mb {

void group_norm_forward(const float* x, const GroupNormArgs& a, float* y, float* stats_scratch) {
  const int C = a.channels, G = a.groups, cpg = C / G, P = a.pixels;
  float* mean_out = stats_scratch;
  float* rstd_out = stats_scratch + a.batch * G;

  parallel_for(a.batch * G, 1, [&](int bg) {
    const int b = bg / G, g = bg % G;
    const float* base = x + (size_t)b * P * C + g * cpg;
    double sum = 0.0;
    for (int p = 0; p < P; ++p) {
      const float* px = base + (size_t)p * C;
      for (int c = 0; c < cpg; ++c) sum += px[c];
    }
    const double count = (double)P * cpg;
    const double mean = sum / count;
    double sq = 0.0;
    for (int p = 0; p < P; ++p) {
      const float* px = base + (size_t)p * C;
      for (int c = 0; c < cpg; ++c) {
        double d = px[c] - mean;
        sq += d * d;
      }
    }
    const double var = sq / count;  // biased, like torch
    mean_out[bg] = (float)mean;
    rstd_out[bg] = (float)(1.0 / sqrt_f64(var + (double)a.eps));
  });

  // Apply as y = x * mul[c] + add[c], per sample; pixel chunks in parallel.
  const int chunk = 64;
  const int chunks_per_image = (P + chunk - 1) / chunk;
  parallel_for(a.batch * chunks_per_image, 1, [&](int task) {
    const int b = task / chunks_per_image;
    const int p0 = (task % chunks_per_image) * chunk;
    const int p1 = imin(P, p0 + chunk);
    float mul[1024], add[1024];  // C <= 1024 per call; larger channel counts go in slices below
    for (int c0 = 0; c0 < C; c0 += 1024) {
      const int cn = imin(1024, C - c0);
      for (int ci = 0; ci < cn; ++ci) {
        const int c = c0 + ci;
        const int g = c / cpg;
        const float m = mean_out[b * G + g], r = rstd_out[b * G + g];
        float k = r * a.gamma[c];
        float d = a.beta[c] - m * k;
        if (a.scale_shift) {
          const float s = 1.0f + a.scale_shift[(size_t)b * a.scale_shift_ld + c];
          const float sh = a.scale_shift[(size_t)b * a.scale_shift_ld + C + c];
          k *= s;
          d = d * s + sh;
        }
        mul[ci] = k;
        add[ci] = d;
      }
      for (int p = p0; p < p1; ++p) {
        const float* px = x + ((size_t)b * P + p) * C + c0;
        float* py = y + ((size_t)b * P + p) * C + c0;
        if (a.silu) {
          for (int ci = 0; ci < cn; ++ci) py[ci] = silu_f32(px[ci] * mul[ci] + add[ci]);
        } else {
          for (int ci = 0; ci < cn; ++ci) py[ci] = px[ci] * mul[ci] + add[ci];
        }
      }
    }
  });
}

}  // namespace mb
