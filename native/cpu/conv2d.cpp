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
// Backward (at the end of the file): dX is again a convolution (the flipped,
// transposed kernel over dY, packed by transposing the forward's packing; by
// Winograd where the forward used it, packed from the torch weights for
// F(4x4, 3x3); upsampling convs are followed by a 2x2
// sum; stride-2 convs split into four stride-1 ones by output parity), and
// dW by Winograd (conv2d_winograd.cpp) for stride-1 3x3 convs, else as
// dY^T * im2col(X) (conv2d_im2col_grad.cpp).
#include "../engine/mathf.h"
#include "gemm_tile.h"
#include "groupnorm_apply.h"
#include "ops.h"
#include "winograd_transforms.h"

namespace mb {

namespace {

constexpr int kMaxTaps = 9;  // 3x3 is the largest kernel a UNet2DModel uses
constexpr int kMaxMR = 8;
constexpr int kMaxNR = 32;

struct ConvKernel {
  int mr, nr;
  TileKernel tile;
  const char* name;
  NormKernels norm;            // GroupNorm's passes at this ISA's width (nulls: groupnorm.cpp's four lanes)
  WinogradPasses winograd;     // Winograd's data transforms at this ISA's width
  SoftmaxRowKernel softmax_row;  // softmax over a row (null: attention.cpp's four lanes)
  AttentionSmallKernels attention_small;  // small-head attention at this ISA's width
};

ConvKernel g_kernel = {0, 0, nullptr, nullptr, {nullptr, nullptr, nullptr, nullptr}, {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr}, nullptr, {nullptr, nullptr}};

ConvKernel pick_kernel(const char* wanted) {
  const WinogradPasses vec4 = {winograd_input_vec4,   winograd_output_vec4, winograd4_input_vec4,
                               winograd4_output_vec4, winograd_grad_vec4,   winograd4_grad_vec4};
  const AttentionSmallKernels attention_vec4 = {attention_small_forward_vec4, attention_small_backward_vec4};
#if defined(__wasm_relaxed_simd__)
  const ConvKernel generic = {4, 8, conv_tile_generic, "relaxed-simd128", {nullptr, nullptr, nullptr, nullptr}, vec4, nullptr, attention_vec4};
#elif defined(__wasm_simd128__)
  const ConvKernel generic = {4, 8, conv_tile_generic, "simd128", {nullptr, nullptr, nullptr, nullptr}, vec4, nullptr, attention_vec4};
#else
  const ConvKernel generic = {4, 8, conv_tile_generic, "generic", {nullptr, nullptr, nullptr, nullptr}, vec4, nullptr, attention_vec4};
#endif
#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
  const ConvKernel avx2 = {6, 16, conv_tile_avx2, "avx2", {norm_apply_avx2, norm_grad_avx2, norm_dx_avx2, norm_sums_avx2},
                           {winograd_input_avx2, winograd_output_avx2, winograd4_input_avx2, winograd4_output_avx2,
                            winograd_grad_avx2, winograd4_grad_avx2},
                           softmax_row_avx2,
                           {attention_small_forward_avx2, attention_small_backward_avx2}};
  const ConvKernel avx512 = {8, 32, conv_tile_avx512, "avx512",
                             {norm_apply_avx512, norm_grad_avx512, norm_dx_avx512, norm_sums_avx512},
                             {winograd_input_avx512, winograd_output_avx512, winograd4_input_avx512,
                              winograd4_output_avx512, winograd_grad_avx512, winograd4_grad_avx512},
                             softmax_row_avx512,
                             {attention_small_forward_avx512, attention_small_backward_avx512}};
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
const NormKernels& norm_kernels() { return kernel().norm; }
const WinogradPasses& winograd_passes() { return kernel().winograd; }
SoftmaxRowKernel softmax_row_kernel() { return kernel().softmax_row; }
const AttentionSmallKernels& attention_small_kernels() { return kernel().attention_small; }

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
    // Each column of the panel reads one row of one source: resolve them once.
    const float* row[kMaxNR];
    long long stride_ci[kMaxNR], stride_tap[kMaxNR];
    for (int j = 0; j < nr; ++j) {
      int n = p * nr + j;
      row[j] = nullptr;
      if (n >= cout) continue;
      int s = 0;
      while (n >= source_couts[s]) n -= source_couts[s++];
      row[j] = sources[s].data + n * sources[s].stride_n;
      stride_ci[j] = sources[s].stride_ci;
      stride_tap[j] = sources[s].stride_tap;
    }
    float* dst = storage + (size_t)p * taps * cin * nr;
    for (int t = 0; t < taps; ++t)
      for (int ci = 0; ci < cin; ++ci)
        for (int j = 0; j < nr; ++j) *dst++ = row[j] ? row[j][ci * stride_ci[j] + t * stride_tap[j]] : 0.0f;
  });
}

void conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep, float* out,
                    const float* zero_row) {
  if (thin_conv_applies(g, w)) {
    thin_conv2d_forward(in, g, w, ep, out);
    return;
  }
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


// ---------------------------------------------------------------------------
// Backward, and a small GEMM helper built on the same driver.

size_t matmul_scratch_floats(int n, int k) { return packed_weights_floats(n, k, 1); }

void matmul(const float* a, int lda, int m, int k, const WeightSource& b, int n, float* c, int ldc, bool accumulate,
            float* scratch) {
  if (m <= 0 || n <= 0 || k <= 0) return;
  PackedWeights packed;
  pack_weights(&packed, scratch, &b, &n, 1, k, 1, 1);
  const ConvGeometry g = rows_geometry(m, lda, ldc);
  ConvEpilogue ep;
  if (accumulate) {
    ep.residual = c;  // each element reads its own old value before the tile stores it
    ep.residual_ld = ldc;
  }
  conv2d_forward(a, g, packed, ep, c, a);
}

void transpose(const float* a, int rows, int cols, int lda, float* out, int ldo) {
  parallel_for((cols + 31) / 32, 1, [&](int cb) {
    const int c0 = cb * 32, c1 = imin(cols, c0 + 32);
    for (int r0 = 0; r0 < rows; r0 += 32) {
      const int r1 = imin(rows, r0 + 32);
      for (int c = c0; c < c1; ++c)
        for (int r = r0; r < r1; ++r) out[(size_t)c * ldo + r] = a[(size_t)r * lda + c];
    }
  });
}

void transpose_packed_panel(const float* src, size_t src_panel_floats, int n, int k, int p, float* dst) {
  const int nr = conv_panel_width();
  const int k0 = p * nr, kn = imin(nr, k - k0);
  for (int i = 0; i < n; ++i) {
    const float* s = src + (size_t)(i / nr) * src_panel_floats + (size_t)k0 * nr + i % nr;
    float* d = dst + (size_t)i * nr;
    for (int j = 0; j < kn; ++j) d[j] = s[(size_t)j * nr];
    for (int j = kn; j < nr; ++j) d[j] = 0.0f;
  }
}

namespace {
// dX of a stride-1 convolution is again one: the kernel flipped in space with
// input and output channels swapped, over dY, padded by k - 1 - pad. This is
// its geometry; in_h/in_w are the size of what it reads, out_* of the dX it
// writes.
ConvGeometry flipped_geometry(const ConvGeometry& g, int cin, int k) {
  ConvGeometry f;
  f.batch = g.batch;
  f.pad_top = k - 1 - g.pad_top;
  f.pad_left = k - 1 - g.pad_left;
  f.in_h = g.out_h, f.in_w = g.out_w, f.in_ld = g.out_ld;
  if (g.upsample == 2) {  // writes dX at the upsampled size, summed 2x2 afterwards
    f.out_h = g.out_h, f.out_w = g.out_w, f.out_ld = cin;
  } else {
    f.out_h = g.in_h, f.out_w = g.in_w, f.out_ld = g.in_ld;
  }
  return f;
}

// Winograd needs a 3x3 kernel and a stride-1 flipped conv (dY not dilated).
bool flipped_winograd(const ConvGeometry& g, int k, bool winograd) { return winograd && k == 3 && g.stride == 1; }

PackedWeights winograd_shape(int cout, int cin, int tile) {
  PackedWeights shape;
  shape.cout = cout, shape.cin = cin, shape.kh = shape.kw = 3, shape.nr = conv_panel_width(), shape.winograd = true;
  shape.tile = tile;
  return shape;
}

// The flipped, transposed direct weights for dX, from the forward's packing.
void pack_backward_data_weights(PackedWeights* out, float* storage, const PackedWeights& w) {
  const int nr = conv_panel_width();
  const int taps = w.kh * w.kw;
  const int panels = (w.cin + nr - 1) / nr;
  out->data = storage;
  out->cout = w.cin;
  out->cin = w.cout;
  out->kh = w.kh;
  out->kw = w.kw;
  out->nr = nr;
  // Tap t of the flipped kernel is tap taps - 1 - t of the forward's.
  parallel_for(panels * taps, 1, [&](int task) {
    const int p = task / taps, t = task % taps;
    transpose_packed_panel(w.data + (size_t)(taps - 1 - t) * w.cin * nr, (size_t)taps * w.cin * nr, w.cout, w.cin, p,
                           storage + ((size_t)p * taps + t) * w.cout * nr);
  });
}

// dX of a stride-2 convolution, by the parity of its pixels: dX[2a + ry][2b + rx]
// takes only the taps ky = ry + pad_top (mod 2) (and likewise kx), reading
// dY[a + (ry + pad_top - ky) / 2]. So each of the four parities is a stride-1
// convolution over dY with those taps (kernels of 2x2, 2x1, 1x2 or 1x1 for a
// 3x3), written to a scratch grid and then put in place: a quarter of the
// work of convolving a zero-dilated dY.
void strided_backward_data(const float* dy, const ConvGeometry& g, const PackedWeights& w, float* dx, float* scratch,
                           const float* zero_row, bool accumulate) {
  const int nr = conv_panel_width();
  const int cout = w.cout, cin = w.cin, k = w.kh, taps = k * k;
  const int panels = (cin + nr - 1) / nr;
  float* out = scratch + packed_weights_floats(cin, cout, taps);
  for (int ry = 0; ry < 2; ++ry)
    for (int rx = 0; rx < 2; ++rx) {
      const int sub_h = (g.in_h - ry + 1) / 2, sub_w = (g.in_w - rx + 1) / 2;
      const int ky0 = (ry + g.pad_top) & 1, kx0 = (rx + g.pad_left) & 1;
      const int nu = (k - ky0 + 1) / 2, nv = (k - kx0 + 1) / 2;  // taps of this parity per axis
      if (sub_h <= 0 || sub_w <= 0 || nu <= 0 || nv <= 0) continue;
      // Tap (v, u) of the sub-kernel is forward tap ky = ky0 + 2 (nu - 1 - v) (and likewise kx).
      PackedWeights sub;
      sub.data = scratch;
      sub.cout = cin, sub.cin = cout, sub.kh = nu, sub.kw = nv, sub.nr = nr;
      parallel_for(panels * nu * nv, 1, [&](int task) {
        const int p = task / (nu * nv), t = task % (nu * nv);
        const int ky = ky0 + 2 * (nu - 1 - t / nv), kx = kx0 + 2 * (nv - 1 - t % nv);
        transpose_packed_panel(w.data + (size_t)(ky * k + kx) * cin * nr, (size_t)taps * cin * nr, cout, cin, p,
                               scratch + ((size_t)p * nu * nv + t) * cout * nr);
      });
      ConvGeometry f;
      f.batch = g.batch;
      f.in_h = g.out_h, f.in_w = g.out_w, f.in_ld = g.out_ld;
      f.out_h = sub_h, f.out_w = sub_w, f.out_ld = cin;
      f.pad_top = nu - 1 - (ry + g.pad_top - ky0) / 2;
      f.pad_left = nv - 1 - (rx + g.pad_left - kx0) / 2;
      conv2d_forward(dy, f, sub, ConvEpilogue(), out, zero_row);
      parallel_for(g.batch * sub_h, 1, [&](int row) {
        const int b = row / sub_h, a = row % sub_h;
        for (int c = 0; c < sub_w; ++c) {
          const float* src = out + ((size_t)row * sub_w + c) * cin;
          float* d = dx + (((size_t)b * g.in_h + 2 * a + ry) * g.in_w + 2 * c + rx) * g.in_ld;
          if (accumulate)
            for (int i = 0; i < cin; ++i) d[i] += src[i];
          else
            for (int i = 0; i < cin; ++i) d[i] = src[i];
        }
      });
    }
}
}  // namespace

size_t conv2d_backward_scratch_floats(const ConvGeometry& g, int cout, int cin, int k, bool winograd) {
  size_t n;
  if (flipped_winograd(g, k, winograd)) {
    // Either tile (the packing says which, and the size is asked without it): room for the larger.
    n = 0;
    for (int tile = 2; tile <= 4; tile += 2) {
      const size_t need = winograd_weights_floats(cin, cout, false, tile) +
                          winograd_scratch_floats(flipped_geometry(g, cin, k), winograd_shape(cin, cout, tile));
      if (need > n) n = need;
    }
  } else
    n = packed_weights_floats(cin, cout, k * k);
  if (g.upsample == 2) n += (size_t)g.batch * g.out_h * g.out_w * cin;
  if (g.stride == 2) n += (size_t)g.batch * ((g.in_h + 1) / 2) * ((g.in_w + 1) / 2) * cin;  // one parity's dX
  return n;
}

void conv2d_backward_data(const float* dy, const ConvGeometry& g, const PackedWeights& w, float* dx, float* scratch,
                          const float* zero_row, bool accumulate) {
  if (g.stride == 2) {
    strided_backward_data(dy, g, w, dx, scratch, zero_row, accumulate);
    return;
  }
  const int cout = w.cout, cin = w.cin, k = w.kh;
  const ConvGeometry f = flipped_geometry(g, cin, k);
  const bool use_winograd = flipped_winograd(g, k, w.winograd);
  PackedWeights packed;
  float* extra;
  if (use_winograd) {
    pack_winograd_backward_data_weights(&packed, scratch, w);
    extra = scratch + winograd_weights_floats(cin, cout, false, packed.tile);
  } else {
    pack_backward_data_weights(&packed, scratch, w);
    extra = scratch + packed_weights_floats(cin, cout, k * k);
  }
  float* winograd_scratch = extra;
  // The upsampling conv's dX is written at the upsampled size first; the
  // others go straight into dx (added, unless told to overwrite).
  float* out = dx;
  ConvEpilogue ep;
  if (g.upsample == 2) {
    out = extra;
    winograd_scratch = extra + (size_t)g.batch * g.out_h * g.out_w * cin;
  } else if (accumulate) {
    ep.residual = dx;
    ep.residual_ld = g.in_ld;
  }
  if (use_winograd)
    winograd_conv2d_forward(dy, f, packed, ep, out, zero_row, winograd_scratch);
  else
    conv2d_forward(dy, f, packed, ep, out, zero_row);
  if (g.upsample == 2) upsample_nearest2x_backward(out, g.batch, g.in_h, g.in_w, cin, dx, g.in_ld);
}

namespace {
// Winograd takes the weight gradient of every stride-1 3x3 conv (its GEMMs
// are cout x cin, large at any map size), unless cin is so small that padding
// it to panels costs more than it saves; im2col (conv2d_im2col_grad.cpp) the rest.
bool weight_grad_by_winograd(const ConvGeometry& g, int cin, int k) {
  return k == 3 && g.stride == 1 && winograd_weight_grad_pays(cin);
}
}  // namespace

size_t conv2d_backward_weights_scratch_floats(const ConvGeometry& g, int cout, int cin, int k) {
  if (thin_weight_grad_applies(g, cout, cin, k)) return thin_weight_grad_scratch_floats(g, cout, cin);
  if (weight_grad_by_winograd(g, cin, k)) return winograd_backward_weights_scratch_floats(g, cout, cin);
  return im2col_weight_grad_scratch_floats(g, cout, cin, k);
}

void conv2d_backward_weights(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, int k,
                             float* grad_w, float* grad_b, float* scratch, const float* zero_row) {
  if (thin_weight_grad_applies(g, cout, cin, k))
    thin_weight_grad(in, g, dy, cout, cin, grad_w, scratch);
  else if (weight_grad_by_winograd(g, cin, k))
    winograd_conv2d_backward_weights(in, g, dy, cout, cin, grad_w, scratch, zero_row);
  else
    im2col_weight_grad(in, g, dy, cout, cin, k, grad_w, scratch);
  if (grad_b) {
    const int rows_total = g.batch * g.out_h * g.out_w;
    // Column sums of dY: float partial sums over blocks of rows, added up in double.
    parallel_for((cout + 15) / 16, 1, [&](int cb) {
      const int c0 = cb * 16, cn = imin(16, cout - c0);
      double sums[16] = {};
      for (int m0 = 0; m0 < rows_total; m0 += 64) {
        float part[16] = {};
        const int m1 = imin(rows_total, m0 + 64);
        if (cn == 16) {  // the same sums, four lanes at a time
          f32x4 lanes[4] = {};
          for (int m = m0; m < m1; ++m) {
            const float* row = dy + (size_t)m * g.out_ld + c0;
            for (int v = 0; v < 4; ++v) lanes[v] += load_f32x4(row + 4 * v);
          }
          for (int v = 0; v < 4; ++v) store_f32x4(part + 4 * v, lanes[v]);
        } else {
          for (int m = m0; m < m1; ++m) {
            const float* row = dy + (size_t)m * g.out_ld + c0;
            for (int c = 0; c < cn; ++c) part[c] += row[c];
          }
        }
        for (int c = 0; c < cn; ++c) sums[c] += part[c];
      }
      for (int c = 0; c < cn; ++c) grad_b[c0 + c] += (float)sums[c];
    });
  }
}

}  // namespace mb
