// Layout changes (NCHW at the API, NHWC inside) and the UNet's resampling on
// the GPU, forward then backward: the twins of cpu/resample.cpp, one thread per output element,
// with the CPU's float operations in the same order (bit-identical).
#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {

// y[b][p][c] = x[b][c][p] * scale + shift
__global__ void nchw_to_nhwc_kernel(const float* x, int channels, int pixels, float* y, float scale, float shift,
                                    size_t total) {
  MB_GRID_STRIDE(i, total) {
    const int c = (int)(i % (size_t)channels);
    const size_t bp = i / (size_t)channels;
    const size_t b = bp / (size_t)pixels, p = bp % (size_t)pixels;
    y[i] = x[(b * channels + c) * pixels + p] * scale + shift;
  }
}

// y[b][c][p] = x[b][p][c] (/ divisors[b])
__global__ void nhwc_to_nchw_kernel(const float* x, int channels, int pixels, const float* divisors, float* y,
                                    size_t total) {
  MB_GRID_STRIDE(i, total) {
    const size_t p = i % (size_t)pixels;
    const size_t bc = i / (size_t)pixels;
    const size_t b = bc / (size_t)channels, c = bc % (size_t)channels;
    const float v = x[(b * pixels + p) * channels + c];
    y[i] = divisors ? v / divisors[b] : v;
  }
}

__global__ void upsample_kernel(const float* x, int h, int w, int channels, float* y, size_t total) {
  const int oh = 2 * h, ow = 2 * w;
  MB_GRID_STRIDE(i, total) {
    const int c = (int)(i % (size_t)channels);
    size_t rest = i / (size_t)channels;
    const int ox = (int)(rest % (size_t)ow);
    rest /= (size_t)ow;
    const int oy = (int)(rest % (size_t)oh);
    const size_t b = rest / (size_t)oh;
    y[i] = x[((b * h + oy / 2) * w + ox / 2) * channels + c];
  }
}

__global__ void avgpool_kernel(const float* x, int h, int w, int channels, float* y, size_t total) {
  const int oh = h / 2, ow = w / 2;
  MB_GRID_STRIDE(i, total) {
    const int c = (int)(i % (size_t)channels);
    size_t rest = i / (size_t)channels;
    const int ox = (int)(rest % (size_t)ow);
    rest /= (size_t)ow;
    const int oy = (int)(rest % (size_t)oh);
    const size_t b = rest / (size_t)oh;
    const float* r0 = x + ((b * h + 2 * oy) * w + 2 * ox) * channels + c;
    const float* r1 = r0 + (size_t)w * channels;
    y[i] = (r0[0] + r0[channels] + r1[0] + r1[channels]) / 4.0f;
  }
}

__global__ void concat_kernel(const float* a, int ca, const float* b, int cb, float* y, size_t total) {
  const int cw = ca + cb;
  MB_GRID_STRIDE(i, total) {
    const size_t p = i / (size_t)cw;
    const int c = (int)(i % (size_t)cw);
    y[i] = c < ca ? a[p * ca + c] : b[p * cb + (c - ca)];
  }
}

// Backward (each adds into dx, one thread per dx element, the CPU's sums in its order).
__global__ void upsample_backward_kernel(const float* dy, int h, int w, int channels, float* dx, int dx_ld, size_t total) {
  const int oh = 2 * h, ow = 2 * w;
  MB_GRID_STRIDE(i, total) {
    const int c = (int)(i % (size_t)channels);
    size_t rest = i / (size_t)channels;
    const int x = (int)(rest % (size_t)w);
    rest /= (size_t)w;
    const int y = (int)(rest % (size_t)h);
    const size_t b = rest / (size_t)h;
    const float* r0 = dy + ((b * oh + 2 * y) * ow + 2 * x) * channels;
    const float* r1 = r0 + (size_t)ow * channels;
    float* d = dx + ((b * h + y) * w + x) * dx_ld;
    d[c] += (r0[c] + r0[channels + c]) + (r1[c] + r1[channels + c]);
  }
}

__global__ void avgpool_backward_kernel(const float* dy, int h, int w, int channels, float* dx, size_t total) {
  const int oh = h / 2, ow = w / 2;
  MB_GRID_STRIDE(i, total) {
    const int c = (int)(i % (size_t)channels);
    size_t rest = i / (size_t)channels;
    const int x = (int)(rest % (size_t)w);
    rest /= (size_t)w;
    const int y = (int)(rest % (size_t)h);
    const size_t b = rest / (size_t)h;
    if (y / 2 < oh && x / 2 < ow) dx[i] += dy[((b * oh + y / 2) * ow + x / 2) * channels + c] / 4.0f;
  }
}

__global__ void concat_backward_kernel(const float* dy, int ca, int cb, float* da, float* db, size_t total) {
  const int cw = ca + cb;
  MB_GRID_STRIDE(i, total) {
    const size_t p = i / (size_t)cw;
    const int c = (int)(i % (size_t)cw);
    if (c < ca)
      da[p * ca + c] = dy[i];
    else
      db[p * cb + (c - ca)] = dy[i];
  }
}

}  // namespace

void nchw_to_nhwc(const float* x, int batch, int channels, int h, int w, float* y, float scale, float shift) {
  const size_t total = (size_t)batch * channels * h * w;
  if (!total || !begin_launch()) return;
  MB_LAUNCH(nchw_to_nhwc_kernel, grid_for(total), kThreads)(x, channels, h * w, y, scale, shift, total);
  check_launch("nchw_to_nhwc");
}

void nhwc_to_nchw(const float* x, int batch, int channels, int h, int w, float* y) {
  const size_t total = (size_t)batch * channels * h * w;
  if (!total || !begin_launch()) return;
  MB_LAUNCH(nhwc_to_nchw_kernel, grid_for(total), kThreads)(x, channels, h * w, nullptr, y, total);
  check_launch("nhwc_to_nchw");
}

void nhwc_to_nchw_div(const float* x, int batch, int channels, int h, int w, const float* divisors, float* y) {
  const size_t total = (size_t)batch * channels * h * w;
  if (!total || !begin_launch()) return;
  MB_LAUNCH(nhwc_to_nchw_kernel, grid_for(total), kThreads)(x, channels, h * w, divisors, y, total);
  check_launch("nhwc_to_nchw_div");
}

void upsample_nearest2x(const float* x, int batch, int h, int w, int channels, float* y) {
  const size_t total = (size_t)batch * 4 * h * w * channels;
  if (!total || !begin_launch()) return;
  MB_LAUNCH(upsample_kernel, grid_for(total), kThreads)(x, h, w, channels, y, total);
  check_launch("upsample_nearest2x");
}

void avgpool2x2(const float* x, int batch, int h, int w, int channels, float* y) {
  const size_t total = (size_t)batch * (h / 2) * (w / 2) * channels;
  if (!total || !begin_launch()) return;
  MB_LAUNCH(avgpool_kernel, grid_for(total), kThreads)(x, h, w, channels, y, total);
  check_launch("avgpool2x2");
}

void concat_channels(const float* a, int ca, const float* b, int cb, int pixels, float* y) {
  const size_t total = (size_t)pixels * (ca + cb);
  if (!total || !begin_launch()) return;
  MB_LAUNCH(concat_kernel, grid_for(total), kThreads)(a, ca, b, cb, y, total);
  check_launch("concat_channels");
}

// ---------------------------------------------------------------------------
// Backward.

void upsample_nearest2x_backward(const float* dy, int batch, int h, int w, int channels, float* dx, int dx_ld) {
  const size_t total = (size_t)batch * h * w * channels;
  if (!total || !begin_launch()) return;
  MB_LAUNCH(upsample_backward_kernel, grid_for(total), kThreads)(dy, h, w, channels, dx, dx_ld, total);
  check_launch("upsample_nearest2x_backward");
}

void avgpool2x2_backward(const float* dy, int batch, int h, int w, int channels, float* dx) {
  const size_t total = (size_t)batch * h * w * channels;
  if (!total || !begin_launch()) return;
  MB_LAUNCH(avgpool_backward_kernel, grid_for(total), kThreads)(dy, h, w, channels, dx, total);
  check_launch("avgpool2x2_backward");
}

void concat_channels_backward(const float* dy, int ca, int cb, int pixels, float* da, float* db) {
  const size_t total = (size_t)pixels * (ca + cb);
  if (!total || !begin_launch()) return;
  MB_LAUNCH(concat_backward_kernel, grid_for(total), kThreads)(dy, ca, cb, da, db, total);
  check_launch("concat_channels_backward");
}

}  // namespace cuda
}  // namespace mb
