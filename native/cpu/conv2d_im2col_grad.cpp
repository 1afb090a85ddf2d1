// The weight gradient of the convolutions Winograd does not take (1x1 convs
// and linear layers, stride-2 downsamplers, a conv_in over one channel):
//   dW[co][(tap, ci)] = sum over output pixels m of dY[m][co] * im2col(X)[m][(tap, ci)]
// a GEMM whose K is the pixels. im2col(X) is packed in panels of nr columns
// (the micro-kernel's B) a chunk of pixels at a time.
//
// Where the pixels are many and dW small (every such layer of a small UNet
// at a training batch), the chunks form groups fixed by the shape, each
// summed into its own dW by whichever thread takes it, and the groups are
// added in order at the end: no barrier per chunk, and the same result on any
// number of threads. dY is copied into the GEMM's A packed by k
// (GemmTile::a_packed), so no transposition either. Otherwise (a dW too
// large to keep sixteen of), chunk by chunk with each phase split across the
// threads.
#include "../engine/mathf.h"
#include "gemm_tile.h"
#include "ops.h"

namespace mb {

namespace {

constexpr int kChunk = 1024;     // pixels per chunk, ungrouped
constexpr int kPackRows = 64;    // pixels per packing task, ungrouped
constexpr int kGroupChunk = 256;  // pixels per chunk (the GEMMs' K), grouped
constexpr int kMaxGroups = 16;
constexpr size_t kGroupFloats = (size_t)1 << 22;  // every group's dW together: 16 MB at most
constexpr int kMaxRows = 16;                      // the micro-kernels' MR, at most

// Packs row r of a chunk of `rows` pixels: the input under each tap of output
// pixel (b, oy, ox), cin channels per tap (or zeros in the padding), into
// panels packed[panel][r][nr]; columns from n to the last panel's end are zeros.
void pack_im2col_row(const float* in, const ConvGeometry& g, int k, int cin, int b, int oy, int ox, int rows, int r,
                     float* packed) {
  const int nr = conv_panel_width(), taps = k * k, n = taps * cin, panels = (n + nr - 1) / nr;
  const int logical_h = g.in_h * g.upsample, logical_w = g.in_w * g.upsample;
  const int up_shift = g.upsample == 2 ? 1 : 0;  // input pixel = logical pixel >> up_shift
  const float* image = in + (size_t)b * g.in_h * g.in_w * g.in_ld;
  for (int t = 0; t < taps; ++t) {
    const int iy = oy * g.stride - g.pad_top + t / k, ix = ox * g.stride - g.pad_left + t % k;
    const bool inside = iy >= 0 && iy < logical_h && ix >= 0 && ix < logical_w;
    const float* src = inside ? image + ((size_t)(iy >> up_shift) * g.in_w + (ix >> up_shift)) * g.in_ld : nullptr;
    for (int ci = 0, col = t * cin; ci < cin;) {
      const int p = col / nr, j = col - p * nr, len = imin(cin - ci, nr - j);
      float* dst = packed + ((size_t)p * rows + r) * nr + j;
      if (src)
        for (int i = 0; i < len; ++i) dst[i] = src[ci + i];
      else
        for (int i = 0; i < len; ++i) dst[i] = 0.0f;
      ci += len;
      col += len;
    }
  }
  for (int col = n; col < panels * nr; ++col) packed[((size_t)(panels - 1) * rows + r) * nr + col % nr] = 0.0f;
}

// The output pixel (b, oy, ox) of flat index m.
struct Pixel {
  int b, oy, ox;
};
Pixel pixel_at(const ConvGeometry& g, int m) {
  const int per_image = g.out_h * g.out_w;
  const int b = m / per_image, rest = m - b * per_image;
  return {b, rest / g.out_w, rest % g.out_w};
}
// The output pixel after `at`, in (b, oy, ox) order.
void next_pixel(const ConvGeometry& g, Pixel& at) {
  if (++at.ox == g.out_w) {
    at.ox = 0;
    if (++at.oy == g.out_h) at.oy = 0, ++at.b;
  }
}

struct Grouping {
  int n, n_padded, cout_rows;
  int chunks, groups, chunks_per_group, slots;  // groups == 1: ungrouped
  size_t b_floats, a_floats, dw_floats;           // per slot: packed im2col, packed dY; per group: dW
};

Grouping grouping(const ConvGeometry& g, int cout, int cin, int k) {
  Grouping q;
  const int nr = conv_panel_width(), mr = conv_tile_rows();
  q.n = k * k * cin;
  q.n_padded = (q.n + nr - 1) / nr * nr;
  q.cout_rows = (cout + mr - 1) / mr * mr;
  const int pixels = g.batch * g.out_h * g.out_w;
  q.chunks = (pixels + kGroupChunk - 1) / kGroupChunk;
  q.dw_floats = (size_t)cout * q.n_padded;
  const size_t fit = kGroupFloats / q.dw_floats;
  const int by_memory = fit < (size_t)kMaxGroups ? (int)fit : kMaxGroups;
  q.groups = by_memory >= 4 && q.chunks >= 4 ? imin(q.chunks, by_memory) : 1;
  q.chunks_per_group = (q.chunks + q.groups - 1) / q.groups;
  if (q.groups > 1) q.groups = (q.chunks + q.chunks_per_group - 1) / q.chunks_per_group;
  q.slots = q.groups > 1 ? imin(num_threads(), q.groups) : 1;
  q.b_floats = (size_t)kGroupChunk * q.n_padded;
  q.a_floats = (size_t)kGroupChunk * q.cout_rows;
  return q;
}

void grouped_weight_grad(const Grouping& q, const float* in, const ConvGeometry& g, const float* dy, int cout,
                         int cin, int k, float* grad_w, float* scratch) {
  const int nr = conv_panel_width(), mr = conv_tile_rows();
  const TileKernel kernel = conv_tile_kernel();
  const int pixels = g.batch * g.out_h * g.out_w;
  const int panels = q.n_padded / nr, mtiles = q.cout_rows / mr;
  float* dw = scratch + (size_t)q.slots * (q.b_floats + q.a_floats);  // [group][cout][n_padded]
  // A 1x1, stride-1 conv (or linear layer) whose channels fill whole panels
  // and micro-kernel rows: B is the input's pixel rows and A dY's, read in
  // place (GemmTile::b_ld, a_ld), with nothing packed. The same products in
  // the same order as the packed path.
  const bool in_place = k == 1 && g.stride == 1 && g.upsample == 1 && g.pad_top == 0 && g.pad_left == 0 &&
                        g.out_h == g.in_h && g.out_w == g.in_w && cin % nr == 0 && cout % mr == 0 &&
                        g.in_ld % 16 == 0 && reinterpret_cast<uintptr_t>(in) % 64 == 0;
  parallel_items(q.slots, q.groups, [&](int slot, int group) {
    float* packed = scratch + (size_t)slot * (q.b_floats + q.a_floats);
    float* a = packed + q.b_floats;  // dY of the chunk, [pixel][cout_rows]
    float* dw_group = dw + (size_t)group * q.dw_floats;
    const int c_begin = group * q.chunks_per_group, c_end = imin(q.chunks, c_begin + q.chunks_per_group);
    for (int c = c_begin; c < c_end; ++c) {
      const int m0 = c * kGroupChunk, rows = imin(kGroupChunk, pixels - m0);
      Pixel at = pixel_at(g, m0);
      for (int r = 0; r < rows && !in_place; ++r, next_pixel(g, at)) {
        pack_im2col_row(in, g, k, cin, at.b, at.oy, at.ox, rows, r, packed);
        const float* src = dy + (size_t)(m0 + r) * g.out_ld;
        float* dst = a + (size_t)r * q.cout_rows;
        for (int co = 0; co < cout; ++co) dst[co] = src[co];
        for (int co = cout; co < q.cout_rows; ++co) dst[co] = 0.0f;
      }
      // dW[co0 .. co0 + MR)[panel] (+)= dY^T im2col over the chunk's pixels.
      float* out_rows[kMaxRows];
      GemmTile t = packed_a_tile(rows, in_place ? g.out_ld : q.cout_rows, out_rows, c > c_begin);
      if (in_place) t.b_ld = g.in_ld;
      for (int mt = 0; mt < mtiles; ++mt) {
        const int co0 = mt * mr;
        t.nrows = imin(mr, cout - co0);
        t.a_packed = (in_place ? dy + (size_t)m0 * g.out_ld : a) + co0;
        for (int p = 0; p < panels; ++p) {
          t.panel = in_place ? in + (size_t)m0 * g.in_ld + (size_t)p * nr : packed + (size_t)p * rows * nr;
          for (int r = 0; r < mr; ++r)
            out_rows[r] = dw_group + (size_t)(co0 + imin(r, t.nrows - 1)) * q.n_padded + p * nr;
          kernel(t);
        }
      }
    }
  });
  // The groups in order, [cout][tap][ci] -> torch [cout][ci][tap], accumulated.
  const int taps = k * k;
  parallel_for(cout, 1, [&](int co) {
    for (int ci = 0; ci < cin; ++ci)
      for (int t = 0; t < taps; ++t) {
        const size_t at = (size_t)co * q.n_padded + (size_t)t * cin + ci;
        float sum = dw[at];
        for (int group = 1; group < q.groups; ++group) sum += dw[(size_t)group * q.dw_floats + at];
        grad_w[((size_t)co * cin + ci) * taps + t] += sum;
      }
  });
}

// Chunk by chunk: the packing, dY's transpose and the GEMM each split across the threads.
void chunked_weight_grad(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, int k,
                         float* grad_w, float* scratch) {
  const int taps = k * k, n = taps * cin;
  const int rows_total = g.batch * g.out_h * g.out_w;
  const int nr = conv_panel_width();
  float* packed = scratch;
  float* dy_t = packed + packed_weights_floats(n, kChunk, 1);
  float* dw = dy_t + (size_t)cout * kChunk;  // [cout][tap][ci]
  for (int m0 = 0; m0 < rows_total; m0 += kChunk) {
    const int rows = imin(kChunk, rows_total - m0);
    const int row_blocks = (rows + kPackRows - 1) / kPackRows;
    parallel_for(row_blocks, 1, [&](int rb) {
      const int r0 = rb * kPackRows, r1 = imin(rows, r0 + kPackRows);
      Pixel at = pixel_at(g, m0 + r0);
      for (int r = r0; r < r1; ++r, next_pixel(g, at)) pack_im2col_row(in, g, k, cin, at.b, at.oy, at.ox, rows, r, packed);
    });
    PackedWeights pw;
    pw.data = packed;
    pw.cout = n;
    pw.cin = rows;
    pw.kh = pw.kw = 1;
    pw.nr = nr;
    transpose(dy + (size_t)m0 * g.out_ld, rows, cout, g.out_ld, dy_t, rows);
    const ConvGeometry gg = rows_geometry(cout, rows, n);
    ConvEpilogue ep;
    if (m0 > 0) {
      ep.residual = dw;
      ep.residual_ld = n;
    }
    conv2d_forward(dy_t, gg, pw, ep, dw, dy_t);
  }
  // [cout][tap][ci] -> torch [cout][ci][tap], accumulated
  parallel_for(cout, 1, [&](int co) {
    for (int ci = 0; ci < cin; ++ci)
      for (int t = 0; t < taps; ++t) grad_w[((size_t)co * cin + ci) * taps + t] += dw[(size_t)co * n + (size_t)t * cin + ci];
  });
}

}  // namespace

size_t im2col_weight_grad_scratch_floats(const ConvGeometry& g, int cout, int cin, int k) {
  const Grouping q = grouping(g, cout, cin, k);
  if (q.groups > 1) return (size_t)q.slots * (q.b_floats + q.a_floats) + (size_t)q.groups * q.dw_floats;
  const int n = k * k * cin;
  return packed_weights_floats(n, kChunk, 1) + (size_t)cout * kChunk + (size_t)cout * n;
}

void im2col_weight_grad(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, int k,
                        float* grad_w, float* scratch) {
  const Grouping q = grouping(g, cout, cin, k);
  if (q.groups > 1)
    grouped_weight_grad(q, in, g, dy, cout, cin, k, grad_w, scratch);
  else
    chunked_weight_grad(in, g, dy, cout, cin, k, grad_w, scratch);
}

}  // namespace mb
