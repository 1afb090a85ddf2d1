// GroupNorm on NHWC activations, with the UNet's usual tail fused in:
//   y = GN(x) * gamma + beta, then optionally * (1 + scale[b]) + shift[b]
//   (scale_shift time conditioning), then optionally SiLU.
// Statistics are accumulated in double, two-pass (mean, then centred sum of
// squares) so that large activations do not lose the variance.
//
// Backward (at the end): recomputes the normalised values from the saved
// input and statistics rather than keeping them.
#include "../engine/mathf.h"
#include "ops.h"

namespace mb {

namespace {

// The statistics passes stream over pixels reading a contiguous run of up to
// kSlice channels into per-channel double accumulators (a loop the compiler
// vectorises), rather than a group's few channels at a time.
constexpr int kSlice = 64;

// Per-channel sums over all pixels of one sample: acc[c] += f(x[p][c0 + c]).
// `centre` (per channel, or null) turns it into the sum of squared deviations.
void channel_sums(const float* base, int pixels, int ld, int cn, const double* centre, double* acc) {
  for (int c = 0; c < cn; ++c) acc[c] = 0.0;
  if (!centre) {
    for (int p = 0; p < pixels; ++p) {
      const float* px = base + (size_t)p * ld;
      for (int c = 0; c < cn; ++c) acc[c] += px[c];
    }
  } else {
    for (int p = 0; p < pixels; ++p) {
      const float* px = base + (size_t)p * ld;
      for (int c = 0; c < cn; ++c) {
        const double d = px[c] - centre[c];
        acc[c] += d * d;
      }
    }
  }
}

// The apply pass per pixel: y = x * mul + add, then SiLU, four lanes at a time.
template <bool kSilu>
void apply_pixel(const float* x, const float* mul, const float* add, int n, float* y) {
  int c = 0;
  for (; c + 4 <= n; c += 4) {
    const f32x4 v = load_f32x4(x + c) * load_f32x4(mul + c) + load_f32x4(add + c);
    store_f32x4(y + c, kSilu ? silu_f32x4(v) : v);
  }
  for (; c < n; ++c) {
    const float v = x[c] * mul[c] + add[c];
    y[c] = kSilu ? silu_f32(v) : v;
  }
}

}  // namespace

void group_norm_forward(const float* x, const GroupNormArgs& a, float* y, float* stats_scratch) {
  const int C = a.channels, G = a.groups, cpg = C / G, P = a.pixels;
  float* mean_out = stats_scratch;
  float* rstd_out = stats_scratch + a.batch * G;

  // A task is whole groups, up to kSlice channels of them (or a single
  // larger group, summed in slices).
  const int groups_per_task = imax(1, kSlice / cpg);
  const int tasks_per_sample = (G + groups_per_task - 1) / groups_per_task;
  parallel_for(a.batch * tasks_per_sample, 1, [&](int task) {
    const int b = task / tasks_per_sample;
    const int g0 = (task % tasks_per_sample) * groups_per_task;
    const int g1 = imin(G, g0 + groups_per_task);
    const float* base = x + (size_t)b * P * C;
    const double count = (double)P * cpg;
    double acc[kSlice], centre[kSlice], group_sum[kSlice], mean[kSlice];

    // Pass 1: means. Pass 2: centred sums of squares.
    for (int pass = 0; pass < 2; ++pass) {
      for (int g = g0; g < g1; ++g) group_sum[g - g0] = 0.0;
      for (int c0 = g0 * cpg; c0 < g1 * cpg; c0 += kSlice) {
        const int cn = imin(kSlice, g1 * cpg - c0);
        if (pass == 1)
          for (int c = 0; c < cn; ++c) centre[c] = mean[(c0 + c) / cpg - g0];
        channel_sums(base + c0, P, C, cn, pass == 1 ? centre : nullptr, acc);
        for (int c = 0; c < cn; ++c) group_sum[(c0 + c) / cpg - g0] += acc[c];
      }
      for (int g = g0; g < g1; ++g) {
        if (pass == 0) {
          mean[g - g0] = group_sum[g - g0] / count;
          mean_out[b * G + g] = (float)mean[g - g0];
        } else {
          const double var = group_sum[g - g0] / count;  // biased, like torch
          rstd_out[b * G + g] = (float)(1.0 / sqrt_f64(var + (double)a.eps));
        }
      }
    }
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
        if (a.silu)
          apply_pixel<true>(px, mul, add, cn, py);
        else
          apply_pixel<false>(px, mul, add, cn, py);
      }
    }
  });
}


// ---------------------------------------------------------------------------
// Backward. With xhat = (x - mean) * rstd, y0 = xhat * gamma + beta,
// y1 = y0 * (1 + scale) + shift (or y0), out = silu(y1) (or y1):
//   g1 = dout * silu'(y1);  dscale += g1 * y0, dshift += g1;  g0 = g1 * (1 + scale)
//   dgamma += g0 * xhat, dbeta += g0;  gx = g0 * gamma
//   dx += rstd * (gx - mean_group(gx) - xhat * mean_group(gx * xhat))

size_t group_norm_backward_scratch_floats(const GroupNormArgs& a) {
  return (size_t)a.batch * a.channels * 2 + (size_t)a.batch * a.groups * 2;
}

void group_norm_backward(const float* x, const GroupNormArgs& a, const float* stats, const float* dy, float* dx,
                         float* dgamma, float* dbeta, float* dscale_shift, float* scratch) {
  const int C = a.channels, G = a.groups, cpg = C / G, P = a.pixels, B = a.batch;
  const float* mean = stats;
  const float* rstd = stats + B * G;
  float* part_gamma = scratch;               // [B][C] partial dgamma
  float* part_beta = scratch + (size_t)B * C;  // [B][C] partial dbeta
  float* group_sums = part_beta + (size_t)B * C;  // [B][G][2]: sum gx, sum gx*xhat

  // Pass 1, per (sample, group): per-channel partial sums and the group sums.
  parallel_for(B * G, 1, [&](int bg) {
    const int b = bg / G, g = bg % G;
    const float m = mean[bg], r = rstd[bg];
    double sum_gx = 0, sum_gx_xhat = 0;
    for (int cc = 0; cc < cpg; ++cc) {
      const int c = g * cpg + cc;
      const float gamma = a.gamma[c], beta = a.beta[c];
      const float s = a.scale_shift ? a.scale_shift[(size_t)b * a.scale_shift_ld + c] : 0.0f;
      const float sh = a.scale_shift ? a.scale_shift[(size_t)b * a.scale_shift_ld + C + c] : 0.0f;
      double d_gamma = 0, d_beta = 0, d_scale = 0, d_shift = 0;
      for (int p = 0; p < P; ++p) {
        const size_t i = ((size_t)b * P + p) * C + c;
        const float xhat = (x[i] - m) * r;
        const float y0 = xhat * gamma + beta;
        float g1 = dy[i];
        if (a.silu) {
          const float y1 = a.scale_shift ? y0 * (1.0f + s) + sh : y0;
          const float sig = 1.0f / (1.0f + exp_f32(-y1));
          g1 *= sig * (1.0f + y1 * (1.0f - sig));
        }
        float g0 = g1;
        if (a.scale_shift) {
          d_scale += (double)g1 * y0;
          d_shift += g1;
          g0 = g1 * (1.0f + s);
        }
        d_gamma += (double)g0 * xhat;
        d_beta += g0;
        const float gx = g0 * gamma;
        sum_gx += gx;
        sum_gx_xhat += (double)gx * xhat;
      }
      part_gamma[(size_t)b * C + c] = (float)d_gamma;
      part_beta[(size_t)b * C + c] = (float)d_beta;
      if (a.scale_shift && dscale_shift) {
        dscale_shift[(size_t)b * a.scale_shift_ld + c] += (float)d_scale;
        dscale_shift[(size_t)b * a.scale_shift_ld + C + c] += (float)d_shift;
      }
    }
    group_sums[(size_t)bg * 2] = (float)(sum_gx / ((double)P * cpg));
    group_sums[(size_t)bg * 2 + 1] = (float)(sum_gx_xhat / ((double)P * cpg));
  });
  if (dgamma || dbeta)
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < C; ++c) {
        if (dgamma) dgamma[c] += part_gamma[(size_t)b * C + c];
        if (dbeta) dbeta[c] += part_beta[(size_t)b * C + c];
      }

  // Pass 2: dx.
  parallel_for(B * G, 1, [&](int bg) {
    const int b = bg / G, g = bg % G;
    const float m = mean[bg], r = rstd[bg];
    const float mean_gx = group_sums[(size_t)bg * 2], mean_gx_xhat = group_sums[(size_t)bg * 2 + 1];
    for (int p = 0; p < P; ++p) {
      for (int cc = 0; cc < cpg; ++cc) {
        const int c = g * cpg + cc;
        const size_t i = ((size_t)b * P + p) * C + c;
        const float gamma = a.gamma[c], beta = a.beta[c];
        const float xhat = (x[i] - m) * r;
        float g1 = dy[i];
        if (a.silu) {
          const float s = a.scale_shift ? a.scale_shift[(size_t)b * a.scale_shift_ld + c] : 0.0f;
          const float sh = a.scale_shift ? a.scale_shift[(size_t)b * a.scale_shift_ld + C + c] : 0.0f;
          const float y0 = xhat * gamma + beta;
          const float y1 = a.scale_shift ? y0 * (1.0f + s) + sh : y0;
          const float sig = 1.0f / (1.0f + exp_f32(-y1));
          g1 *= sig * (1.0f + y1 * (1.0f - sig));
        }
        const float g0 = a.scale_shift ? g1 * (1.0f + a.scale_shift[(size_t)b * a.scale_shift_ld + c]) : g1;
        const float gx = g0 * gamma;
        dx[i] += r * (gx - mean_gx - xhat * mean_gx_xhat);
      }
    }
  });
}

}  // namespace mb
