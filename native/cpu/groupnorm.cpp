// GroupNorm on NHWC activations, with the UNet's usual tail fused in:
//   y = GN(x) * gamma + beta, then optionally * (1 + scale[b]) + shift[b]
//   (scale_shift time conditioning), then optionally SiLU.
// Statistics are accumulated in double in one pass, shifted by a value of
// each group (shifted_sums), so that large activations do not lose the variance.
//
// Backward (at the end): recomputes the normalised values from the saved
// input and statistics rather than keeping them.
#include "../engine/mathf.h"
#include "groupnorm_apply.h"
#include "ops.h"

namespace mb {

namespace {

// The statistics passes stream over pixels reading a contiguous run of up to
// kSlice channels into per-channel double accumulators (a loop the compiler
// vectorises), rather than a group's few channels at a time.
constexpr int kSlice = 64;

// Per-channel sums over all pixels of one sample, shifted by the channel's
// group's first value (shift[c]): acc[2c] += x - shift[c], acc[2c+1] +=
// (x - shift[c])^2. One pass gives both: with the shift near the group's
// values, E[(x-k)^2] - E[x-k]^2 in double loses nothing that float can see
// (a constant group gives exactly 0), and x crosses the memory bus once.
// The leading channels at the CPU's full width (groupnorm_apply.h), the same
// sums in the same order.
void shifted_sums(const float* base, int pixels, int ld, int cn, const double* shift, double* acc) {
  double sum[kSlice], sq[kSlice];
  const NormSumsKernel wide = norm_kernels().sums;
  const int done = wide ? wide(base, pixels, ld, cn, shift, sum, sq) : 0;
  for (int c = done; c < cn; ++c) sum[c] = sq[c] = 0.0;
  for (int p = 0; p < pixels; ++p) {
    const float* px = base + (size_t)p * ld;
    for (int c = done; c < cn; ++c) {
      const double d = px[c] - shift[c];
      sum[c] += d;
      sq[c] += d * d;
    }
  }
  for (int c = 0; c < cn; ++c) acc[2 * c] = sum[c], acc[2 * c + 1] = sq[c];
}

// The apply pass per pixel: y = x * mul + add, then SiLU, four lanes at a time.
// `c` channels are already done (by a wider kernel).
template <bool kSilu>
void apply_pixel(const float* x, const float* mul, const float* add, int n, float* y, int c = 0) {
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
    double acc[2 * kSlice], shift[kSlice], group_sum[kSlice], group_sq[kSlice];
    for (int g = g0; g < g1; ++g) group_sum[g - g0] = group_sq[g - g0] = 0.0;
    for (int c0 = g0 * cpg; c0 < g1 * cpg; c0 += kSlice) {
      const int cn = imin(kSlice, g1 * cpg - c0);
      for (int c = 0; c < cn; ++c) shift[c] = base[((c0 + c) / cpg) * cpg];  // the group's first value
      shifted_sums(base + c0, P, C, cn, shift, acc);
      for (int c = 0; c < cn; ++c) {
        group_sum[(c0 + c) / cpg - g0] += acc[2 * c];
        group_sq[(c0 + c) / cpg - g0] += acc[2 * c + 1];
      }
    }
    for (int g = g0; g < g1; ++g) {
      const double shifted_mean = group_sum[g - g0] / count;
      double var = group_sq[g - g0] / count - shifted_mean * shifted_mean;  // biased, like torch
      if (var < 0.0) var = 0.0;
      mean_out[b * G + g] = (float)(base[g * cpg] + shifted_mean);
      rstd_out[b * G + g] = (float)(1.0 / sqrt_f64(var + (double)a.eps));
    }
  });

  // Apply as y = x * mul[c] + add[c], per sample; pixel chunks in parallel.
  // (Applying each task's slice right after its statistics, while still in
  // cache, measured slower: one thread, the MNIST UNet's GroupNorms at batch
  // 64, 49.7 -> 54.4 ms a step.)
  const int chunk = 64;
  const int chunks_per_image = (P + chunk - 1) / chunk;
  const NormApplyKernel wide = norm_kernels().apply;
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
        const int done = wide ? wide(px, mul, add, cn, py, a.silu) : 0;
        if (a.silu)
          apply_pixel<true>(px, mul, add, cn, py, done);
        else
          apply_pixel<false>(px, mul, add, cn, py, done);
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
// Every one of those sums is a linear function of two per-channel sums,
//   S1[c] = sum over pixels of g1,  S2[c] = sum of g1 * (x - mean),
// so pass 1 streams the pixels once for S1 and S2 (channel-contiguous, like
// the forward's statistics) and keeps g1, a small serial step turns the sums
// into the parameter gradients and per-channel coefficients, and pass 2 is
//   dx += k1[c] * g1 + k2[c] * (x - mean) + k3[c]
// without evaluating the SiLU's derivative again.

namespace {

// Per-sample, per-channel coefficients of the two passes, one array each.
enum NormBackCoef { kMul, kAdd, kCentre, kK1, kK2, kK3, kNumCoefs };  // y1 = x * mul + add; centre: the group mean
constexpr int kAccumulatePixels = 64;  // float partial sums, flushed to double this often

// g1 for four channels: dy through the SiLU's derivative at y1 (or dy).
template <bool kSilu>
inline f32x4 grad_pre_silu(f32x4 x, f32x4 dy, f32x4 mul, f32x4 add) {
  if (!kSilu) return dy;
  const f32x4 y1 = x * mul + add;
  const f32x4 sig = 1.0f / (1.0f + exp_f32x4(-y1));
  return dy * (sig * (1.0f + y1 * (1.0f - sig)));
}

template <bool kSilu>
inline float grad_pre_silu(float x, float dy, float mul, float add) {
  if (!kSilu) return dy;
  const float y1 = x * mul + add;
  const float sig = 1.0f / (1.0f + exp_f32(-y1));
  return dy * (sig * (1.0f + y1 * (1.0f - sig)));
}

// Pass 1 over channels [0, cn) of one sample (pointers already offset to the
// first channel; coef[k] is coefficient array k at that channel): S1 and S2
// into sums[c][2], and g1 into g1_out, laid out like dy.
template <bool kSilu>
void norm_backward_sums(const float* x, const float* dy, int pixels, int ld, int cn, const float* const coef[],
                        double* sums, float* g1_out) {
  const float* mul = coef[kMul];
  const float* add = coef[kAdd];
  const float* centre = coef[kCentre];
  const NormGradKernel wide = kSilu ? norm_kernels().grad : nullptr;  // SiLU-bound: the ISA's full width
  float acc1[kSlice], acc2[kSlice];
  for (int c = 0; c < cn; ++c) sums[2 * c] = sums[2 * c + 1] = 0.0;
  for (int p0 = 0; p0 < pixels; p0 += kAccumulatePixels) {
    for (int c = 0; c < cn; ++c) acc1[c] = acc2[c] = 0.0f;
    const int p1 = imin(pixels, p0 + kAccumulatePixels);
    for (int p = p0; p < p1; ++p) {
      const float* px = x + (size_t)p * ld;
      const float* pg = dy + (size_t)p * ld;
      float* po = g1_out + (size_t)p * ld;
      int c = wide ? wide(px, pg, mul, add, centre, cn, po, acc1, acc2) : 0;
      for (; c + 4 <= cn; c += 4) {
        const f32x4 xv = load_f32x4(px + c);
        const f32x4 g1 = grad_pre_silu<kSilu>(xv, load_f32x4(pg + c), load_f32x4(mul + c), load_f32x4(add + c));
        store_f32x4(po + c, g1);
        store_f32x4(acc1 + c, load_f32x4(acc1 + c) + g1);
        store_f32x4(acc2 + c, load_f32x4(acc2 + c) + g1 * (xv - load_f32x4(centre + c)));
      }
      for (; c < cn; ++c) {
        const float g1 = grad_pre_silu<kSilu>(px[c], pg[c], mul[c], add[c]);
        po[c] = g1;
        acc1[c] += g1;
        acc2[c] += g1 * (px[c] - centre[c]);
      }
    }
    for (int c = 0; c < cn; ++c) sums[2 * c] += acc1[c], sums[2 * c + 1] += acc2[c];
  }
}

// Pass 2 over one pixel's n channels: dx += k1 * g1 + k2 * (x - centre) + k3
// (kOverwrite: dx =, into a buffer nobody zero-filled); `wide` (or null)
// takes the leading channels.
template <bool kOverwrite>
void norm_backward_pixel(const float* x, const float* g1, const float* const coef[], int n, float* dx,
                         NormDxKernel wide) {
  const float* centre = coef[kCentre];
  const float* k1 = coef[kK1];
  const float* k2 = coef[kK2];
  const float* k3 = coef[kK3];
  int c = wide ? wide(x, g1, centre, k1, k2, k3, n, dx, kOverwrite) : 0;
  for (; c + 4 <= n; c += 4) {
    const f32x4 d = load_f32x4(x + c) - load_f32x4(centre + c);
    const f32x4 v = load_f32x4(k1 + c) * load_f32x4(g1 + c) + load_f32x4(k2 + c) * d + load_f32x4(k3 + c);
    store_f32x4(dx + c, kOverwrite ? v : load_f32x4(dx + c) + v);
  }
  for (; c < n; ++c) {
    const float v = k1[c] * g1[c] + k2[c] * (x[c] - centre[c]) + k3[c];
    dx[c] = kOverwrite ? v : dx[c] + v;
  }
}

}  // namespace

size_t group_norm_backward_scratch_floats(const GroupNormArgs& a) {
  // S1/S2 [B][C][2] in double, the coefficients [B][kNumCoefs][C], g1 like dy
  const size_t bc = (size_t)a.batch * a.channels;
  return bc * 4 + bc * kNumCoefs + bc * a.pixels;
}

void group_norm_backward(const float* x, const GroupNormArgs& a, const float* stats, const float* dy, float* dx,
                         float* dgamma, float* dbeta, float* dscale_shift, float* scratch) {
  const int C = a.channels, G = a.groups, cpg = C / G, P = a.pixels, B = a.batch;
  const float* mean = stats;
  const float* rstd = stats + B * G;
  double* sums = reinterpret_cast<double*>(scratch);  // the arena's blocks are 64-byte aligned
  float* coefs = scratch + (size_t)B * C * 4;
  float* g1 = coefs + (size_t)B * C * kNumCoefs;
  // coefficient k of sample b, from channel c on
  auto coef = [&](int b, int k, int c) { return coefs + ((size_t)b * kNumCoefs + k) * C + c; };
  auto scale_of = [&](int b, int c) { return a.scale_shift ? a.scale_shift[(size_t)b * a.scale_shift_ld + c] : 0.0f; };
  auto shift_of = [&](int b, int c) { return a.scale_shift ? a.scale_shift[(size_t)b * a.scale_shift_ld + C + c] : 0.0f; };

  // The forward's per-channel affine map, to recompute y1 for SiLU'.
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c) {
      const int g = c / cpg;
      const float m = mean[b * G + g], r = rstd[b * G + g];
      float k = r * a.gamma[c];
      float d = a.beta[c] - m * k;
      if (a.scale_shift) {
        const float s = 1.0f + scale_of(b, c);
        k *= s;
        d = d * s + shift_of(b, c);
      }
      *coef(b, kMul, c) = k;
      *coef(b, kAdd, c) = d;
      *coef(b, kCentre, c) = m;
    }

  // Pass 1: S1 and S2 per (sample, channel); a task is whole groups, in slices of kSlice channels.
  const int groups_per_task = imax(1, kSlice / cpg);
  const int tasks_per_sample = (G + groups_per_task - 1) / groups_per_task;
  parallel_for(B * tasks_per_sample, 1, [&](int task) {
    const int b = task / tasks_per_sample;
    const int c_begin = (task % tasks_per_sample) * groups_per_task * cpg;
    const int c_end = imin(C, c_begin + groups_per_task * cpg);
    for (int c0 = c_begin; c0 < c_end; c0 += kSlice) {
      const int cn = imin(kSlice, c_end - c0);
      const size_t off = (size_t)b * P * C + c0;
      const float* q[kNumCoefs];
      for (int k = 0; k < kNumCoefs; ++k) q[k] = coef(b, k, c0);
      double* s = sums + ((size_t)b * C + c0) * 2;
      if (a.silu)
        norm_backward_sums<true>(x + off, dy + off, P, C, cn, q, s, g1 + off);
      else
        norm_backward_sums<false>(x + off, dy + off, P, C, cn, q, s, g1 + off);
    }
  });

  // Parameter gradients, and pass 2's coefficients from the group means of
  // gx = g1 * (1 + scale) * gamma and gx * xhat.
  const double count = (double)P * cpg;
  for (int b = 0; b < B; ++b)
    for (int g = 0; g < G; ++g) {
      const float r = rstd[b * G + g];
      double sum_gx = 0, sum_gx_xhat = 0;
      for (int c = g * cpg; c < (g + 1) * cpg; ++c) {
        const double s1 = sums[((size_t)b * C + c) * 2], s2 = sums[((size_t)b * C + c) * 2 + 1];
        const double s = 1.0 + scale_of(b, c);
        if (a.scale_shift && dscale_shift) {
          dscale_shift[(size_t)b * a.scale_shift_ld + c] += (float)((double)r * a.gamma[c] * s2 + a.beta[c] * s1);
          dscale_shift[(size_t)b * a.scale_shift_ld + C + c] += (float)s1;
        }
        if (dgamma) dgamma[c] += (float)(s * r * s2);
        if (dbeta) dbeta[c] += (float)(s * s1);
        sum_gx += a.gamma[c] * s * s1;
        sum_gx_xhat += a.gamma[c] * s * r * s2;
      }
      const float mean_gx = (float)(sum_gx / count), mean_gx_xhat = (float)(sum_gx_xhat / count);
      for (int c = g * cpg; c < (g + 1) * cpg; ++c) {
        *coef(b, kK1, c) = r * a.gamma[c] * (1.0f + scale_of(b, c));
        *coef(b, kK2, c) = -r * r * mean_gx_xhat;
        *coef(b, kK3, c) = -r * mean_gx;
      }
    }

  // Pass 2: dx, per sample in pixel chunks (the leading channels at the CPU's full width).
  const NormDxKernel wide = norm_kernels().dx;
  const int chunk = 64;
  const int chunks_per_image = (P + chunk - 1) / chunk;
  parallel_for(B * chunks_per_image, 1, [&](int task) {
    const int b = task / chunks_per_image;
    const int p0 = (task % chunks_per_image) * chunk;
    const int p1 = imin(P, p0 + chunk);
    const float* q[kNumCoefs];
    for (int k = 0; k < kNumCoefs; ++k) q[k] = coef(b, k, 0);
    for (int p = p0; p < p1; ++p) {
      const size_t off = ((size_t)b * P + p) * C;
      if (a.dx_overwrite)
        norm_backward_pixel<true>(x + off, g1 + off, q, C, dx + off, wide);
      else
        norm_backward_pixel<false>(x + off, g1 + off, q, C, dx + off, wide);
    }
  });
}

}  // namespace mb
