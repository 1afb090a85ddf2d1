// Layout changes (the API speaks NCHW, the engine NHWC) and the UNet's
// resampling: nearest x2 upsampling, 2x2 average pooling, channel concat.
//
// Each op's backward follows it at the end of the file.
#include "ops.h"

namespace mb {

void nchw_to_nhwc(const float* x, int batch, int channels, int h, int w, float* y, float scale, float shift) {
  const int P = h * w;
  parallel_for(batch * h, 1, [&](int by) {
    const int b = by / h, row = by % h;
    for (int xx = 0; xx < w; ++xx) {
      const int p = row * w + xx;
      float* dst = y + ((size_t)b * P + p) * channels;
      for (int c = 0; c < channels; ++c) dst[c] = x[((size_t)b * channels + c) * P + p] * scale + shift;
    }
  });
}

void nhwc_to_nchw(const float* x, int batch, int channels, int h, int w, float* y) {
  const int P = h * w;
  parallel_for(batch * channels, 1, [&](int bc) {
    const int b = bc / channels, c = bc % channels;
    float* dst = y + (size_t)bc * P;
    const float* src = x + (size_t)b * P * channels + c;
    for (int p = 0; p < P; ++p) dst[p] = src[(size_t)p * channels];
  });
}

void nhwc_to_nchw_div(const float* x, int batch, int channels, int h, int w, const float* divisors, float* y) {
  const int P = h * w;
  parallel_for(batch * channels, 1, [&](int bc) {
    const int b = bc / channels, c = bc % channels;
    float* dst = y + (size_t)bc * P;
    const float* src = x + (size_t)b * P * channels + c;
    const float d = divisors[b];
    for (int p = 0; p < P; ++p) dst[p] = src[(size_t)p * channels] / d;
  });
}

void upsample_nearest2x(const float* x, int batch, int h, int w, int channels, float* y) {
  const int oh = 2 * h, ow = 2 * w;
  parallel_for(batch * oh, 1, [&](int boy) {
    const int b = boy / oh, oy = boy % oh;
    const float* src_row = x + ((size_t)b * h + oy / 2) * w * channels;
    float* dst = y + ((size_t)b * oh + oy) * ow * channels;
    for (int ox = 0; ox < ow; ++ox) mb_copy(dst + (size_t)ox * channels, src_row + (size_t)(ox / 2) * channels, sizeof(float) * channels);
  });
}

void avgpool2x2(const float* x, int batch, int h, int w, int channels, float* y) {
  const int oh = h / 2, ow = w / 2;
  parallel_for(batch * oh, 1, [&](int boy) {
    const int b = boy / oh, oy = boy % oh;
    const float* r0 = x + ((size_t)b * h + 2 * oy) * w * channels;
    const float* r1 = r0 + (size_t)w * channels;
    float* dst = y + ((size_t)b * oh + oy) * ow * channels;
    for (int ox = 0; ox < ow; ++ox) {
      const float* a = r0 + (size_t)2 * ox * channels;
      const float* c = r1 + (size_t)2 * ox * channels;
      for (int ch = 0; ch < channels; ++ch)
        dst[(size_t)ox * channels + ch] = (a[ch] + a[ch + channels] + c[ch] + c[ch + channels]) / 4.0f;
    }
  });
}

void concat_channels(const float* a, int ca, const float* b, int cb, int pixels, float* y) {
  parallel_ranges(pixels, 64, [&](int p0, int p1) {
    for (int p = p0; p < p1; ++p) {
      mb_copy(y + (size_t)p * (ca + cb), a + (size_t)p * ca, sizeof(float) * ca);
      mb_copy(y + (size_t)p * (ca + cb) + ca, b + (size_t)p * cb, sizeof(float) * cb);
    }
  });
}


// ---------------------------------------------------------------------------
// Backward (accumulating into dx).

void upsample_nearest2x_backward(const float* dy, int batch, int h, int w, int channels, float* dx, int dx_ld) {
  const int oh = 2 * h, ow = 2 * w;
  parallel_for(batch * h, 1, [&](int by) {
    const int b = by / h, y = by % h;
    for (int x = 0; x < w; ++x) {
      float* d = dx + ((size_t)b * h * w + (size_t)y * w + x) * dx_ld;
      const float* r0 = dy + (((size_t)b * oh + 2 * y) * ow + 2 * x) * channels;
      const float* r1 = r0 + (size_t)ow * channels;
      for (int c = 0; c < channels; ++c) d[c] += (r0[c] + r0[channels + c]) + (r1[c] + r1[channels + c]);
    }
  });
}

void avgpool2x2_backward(const float* dy, int batch, int h, int w, int channels, float* dx) {
  const int oh = h / 2, ow = w / 2;
  parallel_for(batch * oh, 1, [&](int boy) {
    const int b = boy / oh, oy = boy % oh;
    for (int ox = 0; ox < ow; ++ox) {
      const float* g = dy + (((size_t)b * oh + oy) * ow + ox) * channels;
      for (int dy2 = 0; dy2 < 2; ++dy2)
        for (int dx2 = 0; dx2 < 2; ++dx2) {
          float* d = dx + (((size_t)b * h + 2 * oy + dy2) * w + 2 * ox + dx2) * channels;
          for (int c = 0; c < channels; ++c) d[c] += g[c] / 4.0f;
        }
    }
  });
}

void concat_channels_backward(const float* dy, int ca, int cb, int pixels, float* da, float* db) {
  parallel_ranges(pixels, 64, [&](int p0, int p1) {
    for (int p = p0; p < p1; ++p) {
      const float* g = dy + (size_t)p * (ca + cb);
      float* a = da + (size_t)p * ca;
      float* b = db + (size_t)p * cb;
      for (int c = 0; c < ca; ++c) a[c] = g[c];
      for (int c = 0; c < cb; ++c) b[c] = g[ca + c];
    }
  });
}

}  // namespace mb
