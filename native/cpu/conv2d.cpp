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
#include "gemm_tile.h"
#include "ops.h"

namespace mb {

namespace {

constexpr int kMaxTaps = 9;  // 3x3 is the largest kernel a UNet2DModel uses
constexpr int kMaxMR = 8;
constexpr int kMaxNR = 32;

struct ConvKernel {
  int mr, nr;
  TileKernel tile;
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
int conv_tile_rows() { return kernel().mr; }
TileKernel conv_tile_kernel() { return kernel().tile; }

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
  const int pixels_per_image = g.out_h * g.out_w;
  const int rows_total = g.batch * pixels_per_image;
  const int mtiles = (rows_total + mr - 1) / mr;
  const int panels = (w.cout + nr - 1) / nr;
  const int logical_h = g.in_h * g.upsample, logical_w = g.in_w * g.upsample;
  const int up_shift = g.upsample == 2 ? 1 : 0;  // input pixel = logical pixel >> up_shift
  const size_t panel_floats = (size_t)taps * w.cin * nr;

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
    // A partial panel (cout not a multiple of nr) goes through `partial`,
    // and the epilogue is applied below, column by column.
    const bool full_width = ncols == nr;
    const float* rows[kMaxTaps * kMaxMR];
    float* out_rows[kMaxMR];
    const float* bb_rows[kMaxMR];
    const float* res_rows[kMaxMR];
    alignas(64) float partial[kMaxMR * kMaxNR];

    GemmTile t;
    t.rows = rows;
    t.taps = taps;
    t.cin = w.cin;
    t.panel = w.data + (size_t)panel * panel_floats;
    t.out = out_rows;
    t.bias = full_width && ep.bias ? ep.bias + n0 : nullptr;
    t.batch_bias = full_width && ep.batch_bias ? bb_rows : nullptr;
    t.residual = full_width && ep.residual ? res_rows : nullptr;
    t.divisor = full_width ? ep.divisor : 1.0f;

    const int tile_end = imin(mtiles, (mblock + 1) * tiles_per_task);
    for (int tile = mblock * tiles_per_task; tile < tile_end; ++tile) {
      const int m0 = tile * mr;
      const int nrows = imin(mr, rows_total - m0);
      t.nrows = nrows;
      // Walk the tile's output pixels (b, oy, ox) in order; rows past the end
      // repeat the last pixel and their results are not stored.
      int b = m0 / pixels_per_image;
      int oy = (m0 - b * pixels_per_image) / g.out_w;
      int ox = m0 - b * pixels_per_image - oy * g.out_w;
      for (int r = 0; r < mr; ++r) {
        const float* image = in + (size_t)b * g.in_h * g.in_w * g.in_ld;
        const int iy0 = oy * g.stride - g.pad_top, ix0 = ox * g.stride - g.pad_left;
        for (int dy = 0; dy < w.kh; ++dy) {
          const int iy = iy0 + dy;
          const bool row_inside = iy >= 0 && iy < logical_h;
          const float* in_row = image + (size_t)(row_inside ? iy >> up_shift : 0) * g.in_w * g.in_ld;
          for (int dx = 0; dx < w.kw; ++dx) {
            const int ix = ix0 + dx;
            const bool inside = row_inside && ix >= 0 && ix < logical_w;
            rows[(dy * w.kw + dx) * mr + r] = inside ? in_row + (size_t)(ix >> up_shift) * g.in_ld : zero_row;
          }
        }
        if (r < nrows) {
          const size_t m = (size_t)(m0 + r);
          out_rows[r] = full_width ? out + m * g.out_ld + n0 : partial + r * nr;
          if (ep.batch_bias) bb_rows[r] = ep.batch_bias + (size_t)b * ep.batch_bias_ld + n0;
          if (ep.residual) res_rows[r] = ep.residual + m * ep.residual_ld + n0;
        }
        if (r + 1 < nrows && ++ox == g.out_w) {
          ox = 0;
          if (++oy == g.out_h) oy = 0, ++b;
        }
      }
      k.tile(t);
      if (full_width) continue;
      for (int r = 0; r < nrows; ++r) {
        const float* a = partial + r * nr;
        float* o = out + (size_t)(m0 + r) * g.out_ld + n0;
        for (int j = 0; j < ncols; ++j) {
          float v = a[j];
          if (ep.bias) v += ep.bias[n0 + j];
          if (ep.batch_bias) v += bb_rows[r][j];
          if (ep.residual) v = res_rows[r][j] + v;
          if (ep.divisor != 1.0f) v = v / ep.divisor;
          o[j] = v;
        }
      }
    }
  });
}

}  // namespace mb
