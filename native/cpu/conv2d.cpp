// Convolution as an implicit GEMM on channels-last data, and the weight
// packing it needs. Linear layers are 1x1 convolutions over "pixels" that are
// batch rows or tokens, so this file is the engine's whole GEMM.
//
// C[m][n] = sum over taps t and input channels ci of A_t[m][ci] * B[t][ci][n]
// where m is an output pixel (b, oy, ox), n an output channel, and A_t[m] is
// the input pixel under tap t (or a zero row where the tap falls in the
// padding). No im2col buffer: the micro-kernel gets one row pointer per
// (tap, tile row) and reads the input in place.
//
// Forward only for now; the backward (dX = dY * W^T, dW = X^T * dY) joins
// this file with the training issue.
#include "ops.h"

namespace mb {

void conv_tile_generic(const float* const* rows, int taps, int cin, const float* panel, float* acc_out);
#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
void conv_tile_avx2(const float* const* rows, int taps, int cin, const float* panel, float* acc_out);
void conv_tile_avx512(const float* const* rows, int taps, int cin, const float* panel, float* acc_out);
#endif

namespace {

constexpr int kMaxTaps = 9;  // 3x3 is the largest kernel a UNet2DModel uses
constexpr int kMaxMR = 8;
constexpr int kMaxNR = 32;

struct ConvKernel {
  int mr, nr;
  void (*tile)(const float* const*, int, int, const float*, float*);
  const char* name;
};

ConvKernel g_kernel = {0, 0, nullptr, nullptr};

ConvKernel pick_kernel(const char* wanted) {
  const ConvKernel generic = {4, 8, conv_tile_generic, "generic"};
#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
  const ConvKernel avx2 = {6, 16, conv_tile_avx2, "avx2"};
  const ConvKernel avx512 = {8, 32, conv_tile_avx512, "avx512"};
  __builtin_cpu_init();
  bool has_avx512 = __builtin_cpu_supports("avx512f");
  bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  auto is = [&](const char* name) {
    if (!wanted) return false;
    const char* a = wanted;
    const char* b = name;
    while (*a && *a == *b) ++a, ++b;
    return *a == 0 && *b == 0;
  };
  if (is("generic")) return generic;
  if (is("avx2") && has_avx2) return avx2;
  if (is("avx512") && has_avx512) return avx512;
  if (has_avx512 && !is("avx2")) return avx512;
  if (has_avx2) return avx2;
#else
  (void)wanted;
#endif
  return generic;
}

const ConvKernel& kernel() {
  if (!g_kernel.tile) g_kernel = pick_kernel(nullptr);
  return g_kernel;
}

}  // namespace

// Chooses the micro-kernel ("generic", "avx2", "avx512"; unavailable ones
// fall back). Weights are packed for one panel width, so this must be called
// before any model is loaded.
const char* select_conv_isa(const char* wanted) {
  g_kernel = pick_kernel(wanted);
  return g_kernel.name;
}
const char* conv_isa_name() { return kernel().name; }
int conv_panel_width() { return kernel().nr; }

size_t packed_weights_floats(int cout, int cin, int taps) {
  int nr = conv_panel_width();
  size_t panels = (size_t)((cout + nr - 1) / nr);
  return panels * (size_t)taps * (size_t)cin * (size_t)nr;
}

void pack_weights(PackedWeights* packed, float* storage, const WeightSource* sources, const int* source_couts,
                  int num_sources, int cin, int kh, int kw) {
  const int nr = conv_panel_width();
  const int taps = kh * kw;
  int cout = 0;
  for (int s = 0; s < num_sources; ++s) cout += source_couts[s];
  const int panels = (cout + nr - 1) / nr;
  packed->data = storage;
  packed->cout = cout;
  packed->cin = cin;
  packed->kh = kh;
  packed->kw = kw;
  packed->nr = nr;
  parallel_for(panels, 1, [&](int p) {
    float* dst = storage + (size_t)p * taps * cin * nr;
    for (int t = 0; t < taps; ++t)
      for (int ci = 0; ci < cin; ++ci)
        for (int j = 0; j < nr; ++j) {
          int n = p * nr + j;
          float v = 0.0f;
          if (n < cout) {
            int s = 0;
            while (n >= source_couts[s]) n -= source_couts[s++];
            const WeightSource& src = sources[s];
            v = src.data[n * src.stride_n + ci * src.stride_ci + t * src.stride_tap];
          }
          *dst++ = v;
        }
  });
}

void conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep, float* out,
                    const float* zero_row) {
  const ConvKernel& k = kernel();
  const int mr = k.mr, nr = k.nr;
  const int taps = w.kh * w.kw;
  const int cin = w.cin;
  const int pixels_per_image = g.out_h * g.out_w;
  const int rows_total = g.batch * pixels_per_image;
  const int mtiles = (rows_total + mr - 1) / mr;
  const int panels = (w.cout + nr - 1) / nr;
  const int logical_h = g.in_h * g.upsample, logical_w = g.in_w * g.upsample;
  const size_t panel_floats = (size_t)taps * cin * nr;

  // Tiles per task: big enough to amortise the task, small enough that both
  // threads (or all of them) get several tasks to balance.
  int tiles_per_task = 8;
  const int want_tasks = 4 * num_threads();
  while (tiles_per_task > 1 && ((mtiles + tiles_per_task - 1) / tiles_per_task) * panels < want_tasks) tiles_per_task /= 2;
  const int mblocks = (mtiles + tiles_per_task - 1) / tiles_per_task;

  parallel_for(mblocks * panels, 1, [&](int task) {
    const int mblock = task / panels;
    const int panel = task % panels;
    const int n0 = panel * nr;
    const int ncols = imin(nr, w.cout - n0);
    const float* bpanel = w.data + (size_t)panel * panel_floats;
    const float* rows[kMaxTaps * kMaxMR];
    alignas(64) float acc[kMaxMR * kMaxNR];
    const int tile_end = imin(mtiles, (mblock + 1) * tiles_per_task);
    for (int tile = mblock * tiles_per_task; tile < tile_end; ++tile) {
      const int m0 = tile * mr;
      const int nrows = imin(mr, rows_total - m0);
      for (int r = 0; r < mr; ++r) {
        // Rows past the end repeat the last one; their results are dropped.
        const int m = m0 + imin(r, nrows - 1);
        const int b = m / pixels_per_image;
        const int rem = m - b * pixels_per_image;
        const int oy = rem / g.out_w, ox = rem - (rem / g.out_w) * g.out_w;
        for (int t = 0; t < taps; ++t) {
          const int iy = oy * g.stride - g.pad_top + t / w.kw;
          const int ix = ox * g.stride - g.pad_left + t % w.kw;
          const bool inside = iy >= 0 && iy < logical_h && ix >= 0 && ix < logical_w;
          rows[t * mr + r] = inside ? in + ((size_t)(b * g.in_h + iy / g.upsample) * g.in_w + ix / g.upsample) * g.in_ld
                                    : zero_row;
        }
      }
      k.tile(rows, taps, cin, bpanel, acc);
      for (int r = 0; r < nrows; ++r) {
        const int m = m0 + r;
        const int b = m / pixels_per_image;
        const float* a = acc + r * nr;
        float* o = out + (size_t)m * g.out_ld + n0;
        const float* bias = ep.bias ? ep.bias + n0 : nullptr;
        const float* bb = ep.batch_bias ? ep.batch_bias + (size_t)b * ep.batch_bias_ld + n0 : nullptr;
        const float* res = ep.residual ? ep.residual + (size_t)m * ep.residual_ld + n0 : nullptr;
        for (int j = 0; j < ncols; ++j) {
          float v = a[j];
          if (bias) v += bias[j];
          if (bb) v += bb[j];
          if (res) v = res[j] + v;
          if (ep.divisor != 1.0f) v = v / ep.divisor;
          o[j] = v;
        }
      }
    }
  });
}

}  // namespace mb
