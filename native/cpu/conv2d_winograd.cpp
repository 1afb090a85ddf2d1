// 3x3, stride-1 convolutions by Winograd (Lavin & Gray, 2015), F(4x4, 3x3)
// by default: each 4x4 block of output pixels ("tile") comes from a 6x6
// input patch d as
//   Y = A^T [ U .* (B^T d B) ] A,   U = G g G^T (the transformed filter),
// summed over input channels. The 36 elementwise products become 36 GEMMs
// (tiles x cin) * (cin x cout), run on the same micro-kernels as conv2d.cpp:
// 36 multiplies per output pair of channels and tile of 16 pixels instead of
// 144, i.e. 4x fewer than the direct convolution (F(2x2, 3x3): 16 per 4
// pixels, 2.25x fewer, with transforms of only 0, +-1 and +-1/2 that stay
// within a few float ulps of the direct convolution; F(4x4, 3x3)'s multiply
// by up to 8, about 1e-6 of the output's scale through a whole UNet; see
// winograd_transforms.h). Inference packs F(2x2, 3x3), training F(4x4,
// 3x3) (the engine's Model::winograd_tile).
//
// Work is blocked by tiles: a task transforms a block of tiles' inputs into
// scratch (Q x tiles x cin, Q = 36 or 16 matrices, sized to stay in L2),
// multiplies them by every weight panel of its group and transforms the
// products back to output pixels, applying the epilogue on the way out.
//
// The transformed filters take Q/9 of the 3x3 weights' memory. A "lean"
// packing (PackedWeights::lean: sampling-only models in wasm, whose linear
// memory never shrinks) keeps the 3x3 weights instead, and each task
// transforms a panel's filters into its scratch just before the panel's
// GEMMs: about 100 operations per weight against the GEMMs' 2 x Q x
// block_tiles, and bit-identical to the packed path (filter_transform).
#include "../engine/mathf.h"
#include "gemm_tile.h"
#include "ops.h"
#include "winograd_transforms.h"

// The transforms at four lanes (SSE2, wasm SIMD128); wider ones in
// lanes_<isa>.cpp.
#define MB_WINO_BYTES 16
#define MB_WINO_INPUT winograd_input_vec4
#define MB_WINO_OUTPUT winograd_output_vec4
#define MB_WINO4_INPUT winograd4_input_vec4
#define MB_WINO4_OUTPUT winograd4_output_vec4
#define MB_WINO_GRAD winograd_grad_vec4
#define MB_WINO4_GRAD winograd4_grad_vec4
#include "winograd_lanes.h"

namespace mb {

namespace {

constexpr int kWinogradMaxMR = 16;
constexpr size_t kBlockFloats = (size_t)1 << 18;  // input transforms per block: 1 MB
constexpr int kMaxBlockTiles = 64;

// Output tile side M: input patches of A = M + 2, Q = A^2 products per tile.
constexpr int patch_side(int m) { return m + 2; }
constexpr int products(int m) { return (m + 2) * (m + 2); }

struct Blocking {
  int m, q;                     // tile side, matrices per transform
  int tiles_h, tiles_w, tiles;  // m x m output tiles
  int block_tiles, blocks;      // tiles in the largest task block (a multiple of mr), blocks
  int units;                    // mr-tile units, spread evenly over the blocks (block_range)
  int panels, panel_groups, panels_per_group;
  int slots;  // concurrent tasks, each with its own scratch
  size_t v_q, m_q;  // floats between the q matrices of v ([q][tile][cin]) and m ([q][tile][nr])
  size_t v_floats, m_floats;
  size_t u_floats;  // lean weights: one panel's transformed filters, [q][cin][nr]
};

// The Q matrices of each transform (a tile's V, its products M, a panel's
// filters U) are read and written as Q streams at once. Whole matrices are
// often a multiple of 4 KB (64 tiles x 256 channels...), which puts all the
// streams into the same L1 set: they evict each other on every access. One
// cache line of padding between the matrices spreads them over the sets
// (measured: the lean transform went from +17% of a wasm forward to nothing).
inline size_t q_stride(size_t matrix_floats) { return matrix_floats + 16; }
size_t lean_q_stride(int cin, int nr) { return q_stride((size_t)cin * nr); }

// Where output tile `tile` (numbered image by image, row by row) lies:
// its image and its tile row and column.
struct TilePlace {
  int b, ty, tx;
};
inline TilePlace tile_place(int tile, int tiles_h, int tiles_w) {
  const int b = tile / (tiles_h * tiles_w);
  const int rem = tile - b * tiles_h * tiles_w;
  return {b, rem / tiles_w, rem % tiles_w};
}

// The input transforms (V) of tiles [first, first + count), numbered as in
// tile_place, for channels [0, c_end) (zeros from cin on): tile first + t's
// matrices at dst + t * tile_stride, laid out as WinogradInputPass says. The
// tiles go to the pass in runs along a tile row, which share patch columns.
template <int M>
void input_transforms(const float* in, const ConvGeometry& g, int tiles_h, int tiles_w, int first, int count, int cin,
                      int c_end, int nr, size_t panel_stride, size_t q_stride, size_t tile_stride,
                      const float* zero_row, float* dst) {
  constexpr int A = M + 2, kMaxRun = 16;
  const int logical_h = g.in_h * g.upsample, logical_w = g.in_w * g.upsample;
  const int up_shift = g.upsample == 2 ? 1 : 0;
  const WinogradPasses& passes = winograd_passes();
  const float* src[A * (M * kMaxRun + 2)];
  for (int t = 0; t < count;) {
    const TilePlace at = tile_place(first + t, tiles_h, tiles_w);
    const int run = imin(kMaxRun, imin(count - t, tiles_w - at.tx));
    const int cols = M * run + 2;
    const int iy0 = at.ty * M - g.pad_top, ix0 = at.tx * M - g.pad_left;
    for (int i = 0; i < A; ++i)
      for (int j = 0; j < cols; ++j) {
        const int iy = iy0 + i, ix = ix0 + j;
        const bool inside = iy >= 0 && iy < logical_h && ix >= 0 && ix < logical_w;
        src[i * cols + j] =
            inside ? in + ((size_t)(at.b * g.in_h + (iy >> up_shift)) * g.in_w + (ix >> up_shift)) * g.in_ld : zero_row;
      }
    float* out = dst + (size_t)t * tile_stride;
    if constexpr (M == 4) passes.input4(src, run, cin, c_end, nr, panel_stride, q_stride, tile_stride, out);
    else passes.input(src, run, cin, c_end, nr, panel_stride, q_stride, tile_stride, out);
    t += run;
  }
}

Blocking blocking(const ConvGeometry& g, const PackedWeights& w) {
  Blocking k;
  const int mr = conv_tile_rows(), nr = w.nr;
  k.m = w.tile;
  k.q = products(k.m);
  k.tiles_h = (g.out_h + k.m - 1) / k.m;
  k.tiles_w = (g.out_w + k.m - 1) / k.m;
  k.tiles = g.batch * k.tiles_h * k.tiles_w;
  // Blocks of whole micro-kernel tiles ("units" of mr tiles): at most what
  // keeps a block's transforms in L2; at least two per thread and a multiple
  // of the threads where there are units for it; as even as they can be.
  // Tasks are claimed dynamically, but a batch-1 28x28 map's 196 tiles in
  // blocks of 64, 64, 64 and 4 left one of two threads twice the other's work.
  const int units = (k.tiles + mr - 1) / mr;
  const int max_units = imax(1, imin((int)(kBlockFloats / (k.q * (size_t)w.cin)), kMaxBlockTiles) / mr);
  const int threads = num_threads();
  k.blocks = imax((units + max_units - 1) / max_units, 2 * threads);
  k.blocks = imin(units, (k.blocks + threads - 1) / threads * threads);  // a round for every thread
  k.units = units;
  k.block_tiles = (units + k.blocks - 1) / k.blocks * mr;  // the largest block
  k.panels = (w.cout + nr - 1) / nr;
  // Few blocks (small images): split the output channels too so that every
  // thread has work; each group repeats the (cheap) input transform.
  k.panel_groups = 1;
  while (k.blocks * k.panel_groups < 2 * num_threads() && k.panel_groups < k.panels) ++k.panel_groups;
  k.panels_per_group = (k.panels + k.panel_groups - 1) / k.panel_groups;
  k.panel_groups = (k.panels + k.panels_per_group - 1) / k.panels_per_group;
  k.slots = imin(num_threads(), k.blocks * k.panel_groups);
  k.v_q = q_stride((size_t)k.block_tiles * w.cin);
  k.m_q = q_stride((size_t)k.block_tiles * nr);
  k.v_floats = k.q * k.v_q;
  k.m_floats = k.q * k.m_q;
  k.u_floats = w.lean ? k.q * lean_q_stride(w.cin, nr) : 0;
  return k;
}

// Block `block`'s tiles: [first, first + count).
struct TileRange {
  int first, count;
};
inline TileRange block_range(const Blocking& k, int block) {
  const int mr = conv_tile_rows();
  const int first = (int)((long long)block * k.units / k.blocks) * mr;
  const int end = imin(k.tiles, (int)((long long)(block + 1) * k.units / k.blocks) * mr);
  return {first, end - first};
}

// U = G g G^T in float, for V = float (packing) or f32x4 (the lean path,
// four output channels at a time): the same IEEE operations per lane, so
// both give the same U bit for bit.
// F(2x2, 3x3): G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]. Row 1 of G g is
// ((g0 + g2) + g1) / 2, row 2 ((g0 + g2) - g1) / 2, and likewise for the
// columns: 35 operations per filter.
template <typename V>
inline void filter_rows2(const V g0, const V g1, const V g2, V u[4]) {
  const V outer = g0 + g2;
  u[0] = g0;
  u[1] = (outer + g1) * 0.5f;
  u[2] = (outer - g1) * 0.5f;
  u[3] = g2;
}
// F(4x4, 3x3): G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
// 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1], dividing (exactly rounded) rather
// than multiplying by the rounded 1/6 and 1/24.
template <typename V>
inline void filter_rows4(const V g0, const V g1, const V g2, V u[6]) {
  const V outer = g0 + g2, outer4 = g0 + g2 * 4.0f;
  u[0] = g0 * 0.25f;
  u[1] = (outer + g1) / -6.0f;
  u[2] = (outer - g1) / -6.0f;
  u[3] = (outer4 + g1 * 2.0f) / 24.0f;
  u[4] = (outer4 - g1 * 2.0f) / 24.0f;
  u[5] = g2;
}
template <int M, typename V>
inline void filter_transform(const V g[3][3], V u[patch_side(M)][patch_side(M)]) {
  constexpr int A = patch_side(M);
  V gg[A][3], col[A];
  for (int x = 0; x < 3; ++x) {
    if constexpr (M == 4) filter_rows4(g[0][x], g[1][x], g[2][x], col);
    else filter_rows2(g[0][x], g[1][x], g[2][x], col);
    for (int i = 0; i < A; ++i) gg[i][x] = col[i];
  }
  for (int i = 0; i < A; ++i) {
    if constexpr (M == 4) filter_rows4(gg[i][0], gg[i][1], gg[i][2], u[i]);
    else filter_rows2(gg[i][0], gg[i][1], gg[i][2], u[i]);
  }
}

// The lean path: one panel's filters, lean layout [ci][tap][nr], transformed
// into [q][ci][nr] (the packed layout's panel), lean_q_stride floats apart.
template <int M>
void transform_lean_panel(const float* panel, int cin, int nr, float* u_out) {
  constexpr int A = patch_side(M);
  const size_t q_stride = lean_q_stride(cin, nr);
  for (int ci = 0; ci < cin; ++ci) {
    const float* src = panel + (size_t)ci * 9 * nr;
    float* dst = u_out + (size_t)ci * nr;
    for (int j = 0; j < nr; j += 4) {  // nr is a multiple of 4 on every ISA
      f32x4 g[3][3], u[A][A];
#pragma GCC unroll 9
      for (int t = 0; t < 9; ++t) g[t / 3][t % 3] = load_f32x4(src + t * nr + j);
      filter_transform<M>(g, u);
      for (int q = 0; q < A * A; ++q) store_f32x4(dst + q * q_stride + j, u[q / A][q % A]);
    }
  }
}

// The forward for output tiles of M x M (see the file's comment).
template <int M>
void forward_tiles(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep, float* out,
                   const float* zero_row, float* scratch) {
  constexpr int Q = products(M);
  const Blocking k = blocking(g, w);
  const int mr = conv_tile_rows(), nr = w.nr, cin = w.cin;
  const TileKernel kernel = conv_tile_kernel();
  const size_t k_floats = (size_t)k.panels * cin * nr;
  const int tasks = k.blocks * k.panel_groups;
  // Each scratch slot's thread takes tasks until none are left.
  parallel_items(k.slots, tasks, [&](int slot, int task) {
    float* v = scratch + (size_t)slot * (k.v_floats + k.m_floats + k.u_floats);
    float* mbuf = v + k.v_floats;
    float* ubuf = mbuf + k.m_floats;  // lean weights: this panel's transformed filters
    const int block = task / k.panel_groups, group = task % k.panel_groups;
    const TileRange range = block_range(k, block);
    const int t0 = range.first, nt = range.count;

    // 1. Input transforms of the block's tiles: v[Q][block_tiles][cin] (one
    //    "panel" as wide as the channels: channel c lands at v[q][t][c]).
    input_transforms<M>(in, g, k.tiles_h, k.tiles_w, t0, nt, cin, cin, cin, 0, k.v_q, cin, zero_row, v);
    const WinogradPasses& passes = winograd_passes();

    // 2. Per weight panel: the Q GEMMs into mbuf[Q][block_tiles][nr], then
    //    the output transforms and the epilogue.
    const float* rows[kWinogradMaxMR];
    float* out_rows[kWinogradMaxMR];
    GemmTile gt;
    gt.rows = rows;
    gt.taps = 1;
    gt.cin = cin;
    gt.out = out_rows;
    gt.bias = nullptr;
    gt.batch_bias = nullptr;
    gt.residual = nullptr;
    gt.divisor = 1.0f;
    const int p_end = imin(k.panels, (group + 1) * k.panels_per_group);
    for (int p = group * k.panels_per_group; p < p_end; ++p) {
      const int n0 = p * nr, ncols = imin(nr, w.cout - n0);
      const float* u = w.data + (size_t)p * cin * nr;  // matrix q of this panel at u + q * u_stride
      size_t u_stride = k_floats;
      if (w.lean) {
        transform_lean_panel<M>(w.data + (size_t)p * cin * 9 * nr, cin, nr, ubuf);
        u = ubuf;
        u_stride = lean_q_stride(cin, nr);
      }
      for (int q = 0; q < Q; ++q) {
        gt.panel = u + q * u_stride;
        for (int m0 = 0; m0 < nt; m0 += mr) {
          gt.nrows = imin(mr, nt - m0);
          for (int r = 0; r < mr; ++r) {
            const int t = m0 + imin(r, gt.nrows - 1);  // rows past the end repeat the last
            rows[r] = v + q * k.v_q + (size_t)t * cin;
            out_rows[r] = mbuf + q * k.m_q + (size_t)t * nr;
          }
          kernel(gt);
        }
      }
      for (int t = 0; t < nt; ++t) {
        const int tile = t0 + t;
        const TilePlace at = tile_place(tile, k.tiles_h, k.tiles_w);
        const int b = at.b, oy0 = at.ty * M, ox0 = at.tx * M;
        float* dst[M][M];
        const float* res[M][M];
        for (int a = 0; a < M; ++a)
          for (int c = 0; c < M; ++c) {
            const bool inside = oy0 + a < g.out_h && ox0 + c < g.out_w;
            const size_t m = ((size_t)b * g.out_h + oy0 + a) * g.out_w + ox0 + c;
            dst[a][c] = inside ? out + m * g.out_ld + n0 : nullptr;
            res[a][c] = inside && ep.residual ? ep.residual + m * ep.residual_ld + n0 : nullptr;
          }
        const float* bias = ep.bias ? ep.bias + n0 : nullptr;
        const float* bb = ep.batch_bias ? ep.batch_bias + (size_t)b * ep.batch_bias_ld + n0 : nullptr;
        if constexpr (M == 4) passes.output4(mbuf + (size_t)t * nr, k.m_q, ncols, dst, res, bias, bb, ep.divisor);
        else passes.output(mbuf + (size_t)t * nr, k.m_q, ncols, dst, res, bias, bb, ep.divisor);
      }
    }
  });
}

// The packed path: every panel's filters from the torch-layout source, four
// output channels at a time (the lean path's arithmetic: the same U bits).
template <int M>
void pack_transformed(float* storage, const WeightSource& src, int cout, int cin, int nr) {
  constexpr int A = patch_side(M);
  const int panels = (cout + nr - 1) / nr;
  const size_t k_floats = (size_t)panels * cin * nr;  // one of the Q transformed matrices
  parallel_for(panels, 1, [&](int p) {
    for (int ci = 0; ci < cin; ++ci)
      for (int j = 0; j < nr; j += 4) {  // nr is a multiple of 4 on every ISA
        f32x4 g[3][3], u[A][A];
        for (int t = 0; t < 9; ++t) {
          g[t / 3][t % 3] = f32x4{};
          for (int l = 0; l < 4; ++l) {
            const int n = p * nr + j + l;
            if (n < cout) g[t / 3][t % 3][l] = src.data[n * src.stride_n + ci * src.stride_ci + t * src.stride_tap];
          }
        }
        filter_transform<M>(g, u);
        float* dst = storage + ((size_t)p * cin + ci) * nr + j;
        for (int q = 0; q < A * A; ++q) store_f32x4(dst + q * k_floats, u[q / A][q % A]);
      }
  });
}

}  // namespace

size_t winograd_weights_floats(int cout, int cin, bool lean, int tile) {
  return (lean ? 9 : products(tile)) * packed_weights_floats(cout, cin, 1);
}

void pack_winograd_weights(PackedWeights* packed, float* storage, const WeightSource& src, int cout, int cin, bool lean,
                           int tile) {
  const int nr = conv_panel_width();
  const int panels = (cout + nr - 1) / nr;
  packed->data = storage;
  packed->cout = cout;
  packed->cin = cin;
  packed->kh = packed->kw = 3;
  packed->nr = nr;
  packed->winograd = true;
  packed->lean = lean;
  packed->tile = tile;
  packed->source = src;
  if (lean) {  // the 3x3 weights as [panel][ci][tap][nr], zeros past cout
    parallel_for(panels, 1, [&](int p) {
      for (int ci = 0; ci < cin; ++ci)
        for (int t = 0; t < 9; ++t)
          for (int j = 0; j < nr; ++j) {
            const int n = p * nr + j;
            storage[(((size_t)p * cin + ci) * 9 + t) * nr + j] =
                n < cout ? src.data[n * src.stride_n + ci * src.stride_ci + t * src.stride_tap] : 0.0f;
          }
    });
    return;
  }
  if (packed->tile == 4)
    pack_transformed<4>(storage, src, cout, cin, nr);
  else
    pack_transformed<2>(storage, src, cout, cin, nr);
}

void pack_winograd_backward_data_weights(PackedWeights* out, float* storage, const PackedWeights& w) {
  if (w.tile == 4) {
    // F(4x4, 3x3)'s G has no symmetry that maps the flipped kernel's
    // transform onto the forward's: pack the flipped, transposed 3x3 weights
    // (element (ci, co, tap) is the forward's (co, ci, 8 - tap)) afresh.
    const WeightSource& s = w.source;
    const WeightSource flipped = {s.data + 8 * s.stride_tap, s.stride_ci, s.stride_n, -s.stride_tap};
    pack_winograd_weights(out, storage, flipped, w.cin, w.cout, false, 4);
    return;
  }
  const int nr = w.nr;
  const int panels = (w.cin + nr - 1) / nr;  // the result's columns are the forward's input channels
  const size_t src_floats = (size_t)((w.cout + nr - 1) / nr) * w.cin * nr;  // one of the forward's 16 matrices
  const size_t dst_floats = (size_t)panels * w.cout * nr;
  out->data = storage;
  out->cout = w.cin;
  out->cin = w.cout;
  out->kh = out->kw = 3;
  out->nr = nr;
  out->winograd = true;
  out->tile = 2;
  // Flipping g in space reverses G's columns, which swaps G's rows 0 and 3
  // (G J = S G), so the flipped kernel transforms to S U S^T: position (i, l)
  // of the forward's U at (s[i], s[l]). Each of the 16 matrices is transposed.
  static const int s[4] = {3, 1, 2, 0};
  parallel_for(16 * panels, 1, [&](int task) {
    const int q = task / panels, p = task % panels;
    const int src_q = s[q / 4] * 4 + s[q % 4];
    transpose_packed_panel(w.data + src_q * src_floats, (size_t)w.cin * nr, w.cout, w.cin, p,
                           storage + q * dst_floats + (size_t)p * w.cout * nr);
  });
}

size_t winograd_scratch_floats(const ConvGeometry& g, const PackedWeights& w) {
  const Blocking k = blocking(g, w);
  return (size_t)k.slots * (k.v_floats + k.m_floats + k.u_floats);
}

void winograd_conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                             float* out, const float* zero_row, float* scratch) {
  if (w.tile == 4)
    forward_tiles<4>(in, g, w, ep, out, zero_row, scratch);
  else
    forward_tiles<2>(in, g, w, ep, out, zero_row, scratch);
}

// ---------------------------------------------------------------------------
// Backward: the weight gradient by the transposed algorithm. With the
// forward's input transform V = B^T d B per (tile, ci) and the transpose of
// its output transform, dM = A dY A^T per (tile, co),
//   dU[q][co][ci] = sum over tiles of dM[q][tile][co] * V[q][tile][ci]   (Q GEMMs)
//   dW[co][ci] += G^T dU[co][ci] G
// which is 2.25x (F(2x2, 3x3)) or 4x (F(4x4, 3x3)) fewer multiplies than
// dY^T im2col(X), as in the forward; the tile is the one that pads the map
// least (weight_grad_tile). Tiles are taken in chunks; per chunk, V is
// packed in panels ([q][panel][tile][nr], the GEMMs' B) and dM by tile,
// [q][tile][co] (the GEMMs' A, packed by k: both transforms then run along
// contiguous channels at the CPU's full width, with no transposition).

namespace {

constexpr int kGradChunkTiles = 128;  // the GEMMs' K per chunk

// G^T applied along one axis: F(2x2, 3x3)'s G = [1 0 0; 1/2 1/2 1/2;
// 1/2 -1/2 1/2; 0 0 1], and F(4x4, 3x3)'s (filter_rows4).
template <typename T>
inline void filter_grad_rows2(const T u[4], T r[3]) {
  r[0] = u[0] + 0.5f * (u[1] + u[2]);
  r[1] = 0.5f * (u[1] - u[2]);
  r[2] = 0.5f * (u[1] + u[2]) + u[3];
}
template <typename T>
inline void filter_grad_rows4(const T u[6], T r[3]) {
  const T s12 = u[1] + u[2], d12 = u[2] - u[1], s34 = u[3] + u[4], d34 = u[3] - u[4];
  r[0] = (u[0] * 0.25f - s12 / 6.0f) + s34 / 24.0f;
  r[1] = d12 / 6.0f + d34 / 12.0f;
  r[2] = (s34 - s12) / 6.0f + u[5];
}

struct GradBlocking {
  int m, q;  // tile side, matrices per transform
  int tiles_h, tiles_w, tiles, chunk, chunks;
  int panels;  // of cin, nr wide
  int cout_rows;  // cout rounded up to the micro-kernel's MR: dM's row length
  // Tile groups: consecutive runs of chunks, each summed into its own dU
  // (fixed by the shape, never by the thread count, so the sums' order and
  // the result are the same on any number of threads); 1: one dU, and each
  // chunk's transforms and GEMMs are split across the threads instead.
  int groups, chunks_per_group;
  int slots;  // grouped: concurrent tasks, each with its own V and dM scratch
  size_t v_q, m_q, u_q;  // floats between the q matrices of V, dM and dU (see q_stride)
  size_t v_floats, m_floats, u_floats;
};

constexpr size_t kGradChunkFloats = (size_t)1 << 18;  // V and dM of a chunk: 1 MB, about L2
constexpr size_t kGradGroupFloats = (size_t)1 << 22;  // every group's dU together: 16 MB at most
constexpr int kMaxGradGroups = 16;

// The tile that pads the map least, counting products: F(2x2, 3x3) has 16
// per 2x2 tile, F(4x4, 3x3) 36 per 4x4 (a 14x14 map: 49 x 16 against 16 x 36).
int weight_grad_tile(const ConvGeometry& g) {
  const long long two = (long long)((g.out_h + 1) / 2) * ((g.out_w + 1) / 2) * 16;
  const long long four = (long long)((g.out_h + 3) / 4) * ((g.out_w + 3) / 4) * 36;
  return four < two ? 4 : 2;
}

GradBlocking grad_blocking(const ConvGeometry& g, int cout, int cin) {
  GradBlocking k;
  const int nr = conv_panel_width();
  k.m = weight_grad_tile(g);
  k.q = products(k.m);
  k.tiles_h = (g.out_h + k.m - 1) / k.m;
  k.tiles_w = (g.out_w + k.m - 1) / k.m;
  k.tiles = g.batch * k.tiles_h * k.tiles_w;
  k.panels = (cin + nr - 1) / nr;
  const int cin_padded = k.panels * nr;
  // The GEMMs' K: as many tiles as keep a chunk's V and dM in L2, 32 to 128.
  int chunk = (int)(kGradChunkFloats / (k.q * (size_t)(cin_padded + cout))) / 4 * 4;
  chunk = imin(kGradChunkTiles, imax(32, chunk));
  k.chunk = imin(chunk, (k.tiles + 3) / 4 * 4);  // a multiple of four
  k.chunks = (k.tiles + k.chunk - 1) / k.chunk;
  const int mr = conv_tile_rows();
  k.cout_rows = (cout + mr - 1) / mr * mr;
  k.v_q = q_stride((size_t)k.panels * k.chunk * nr);
  k.m_q = q_stride((size_t)k.cout_rows * k.chunk);
  k.u_q = q_stride((size_t)cout * cin_padded);
  k.v_floats = k.q * k.v_q;
  k.m_floats = k.q * k.m_q;
  k.u_floats = k.q * k.u_q;
  // Small channel counts (a few MFLOP per chunk) pay more for two parallel
  // regions per chunk than for a dU per group: whole chunks go to threads.
  const bool grouped = k.u_floats * kMaxGradGroups <= kGradGroupFloats && k.chunks > 1;
  k.groups = grouped ? imin(k.chunks, kMaxGradGroups) : 1;
  k.chunks_per_group = (k.chunks + k.groups - 1) / k.groups;
  k.groups = (k.chunks + k.chunks_per_group - 1) / k.chunks_per_group;
  k.slots = k.groups > 1 ? imin(num_threads(), k.groups) : 1;
  return k;
}

template <int M>
void weight_grad_tiles(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, float* grad_w,
                       float* scratch, const float* zero_row) {
  constexpr int A = patch_side(M), Q = products(M);
  const GradBlocking k = grad_blocking(g, cout, cin);
  const int mr = conv_tile_rows(), nr = conv_panel_width();
  const TileKernel kernel = conv_tile_kernel();
  const int cin_padded = k.panels * nr;
  float* du = scratch + (size_t)k.slots * (k.v_floats + k.m_floats);  // [group][Q][cout][cin_padded]
  const int mtiles = (cout + mr - 1) / mr;

  // 1. The transforms of a chunk's tiles [t_begin, t_end): V (panels
  //    [q][panel][tile][nr]) from the input, dM ([q][tile][co]) from dY.
  auto transform_tiles = [&](int t0, int t_begin, int t_end, float* v, float* dm) {
    input_transforms<M>(in, g, k.tiles_h, k.tiles_w, t0 + t_begin, t_end - t_begin, cin, cin_padded, nr,
                        (size_t)k.chunk * nr, k.v_q, nr, zero_row, v + (size_t)t_begin * nr);
    for (int t = t_begin; t < t_end; ++t) {
      const TilePlace at = tile_place(t0 + t, k.tiles_h, k.tiles_w);
      const float* dy_src[M][M];
      for (int a = 0; a < M; ++a)
        for (int e = 0; e < M; ++e) {
          const int oy = at.ty * M + a, ox = at.tx * M + e;
          const bool inside = oy < g.out_h && ox < g.out_w;
          dy_src[a][e] = inside ? dy + ((size_t)(at.b * g.out_h + oy) * g.out_w + ox) * g.out_ld : zero_row;
        }
      float* dm_tile = dm + (size_t)t * k.cout_rows;
      if constexpr (M == 4) winograd_passes().grad4(dy_src, cout, k.cout_rows, k.m_q, dm_tile);
      else winograd_passes().grad(dy_src, cout, k.cout_rows, k.m_q, dm_tile);
    }
  };

  // 2. One of the Q GEMMs for MR rows of co, dU[q] (+)= dM[q]^T V[q], across
  //    all the panels of ci (which share the rows of A).
  auto gemm_task = [&](int nt, int task, const float* v, const float* dm, float* du_group, bool accumulate) {
    const int q = task / mtiles;
    const int co0 = task % mtiles * mr;
    float* out_rows[kWinogradMaxMR];
    GemmTile gt = packed_a_tile(nt, k.cout_rows, out_rows, accumulate);
    gt.a_packed = dm + q * k.m_q + co0;
    gt.nrows = imin(mr, cout - co0);
    for (int p = 0; p < k.panels; ++p) {
      gt.panel = v + q * k.v_q + (size_t)p * k.chunk * nr;
      for (int r = 0; r < mr; ++r)
        out_rows[r] = du_group + q * k.u_q + (size_t)(co0 + imin(r, gt.nrows - 1)) * cin_padded + p * nr;
      kernel(gt);
    }
  };

  if (k.groups == 1) {
    // Large channel counts: chunk by chunk, each phase split across the threads.
    float* v = scratch;
    float* dm = v + k.v_floats;
    for (int t0 = 0; t0 < k.tiles; t0 += k.chunk) {
      const int nt = imin(k.chunk, k.tiles - t0);
      parallel_for((nt + 15) / 16, 1, [&](int part) { transform_tiles(t0, part * 16, imin(nt, part * 16 + 16), v, dm); });
      parallel_for(Q * mtiles, 1, [&](int task) { gemm_task(nt, task, v, dm, du, t0 > 0); });
    }
  } else {
    // Small ones: a thread takes a whole group of chunks at a time, with no
    // synchronisation until all are done.
    parallel_items(k.slots, k.groups, [&](int slot, int group) {
      float* v = scratch + (size_t)slot * (k.v_floats + k.m_floats);
      float* dm = v + k.v_floats;
      float* du_group = du + (size_t)group * k.u_floats;
      const int c_begin = group * k.chunks_per_group, c_end = imin(k.chunks, c_begin + k.chunks_per_group);
      for (int c = c_begin; c < c_end; ++c) {
        const int t0 = c * k.chunk, nt = imin(k.chunk, k.tiles - t0);
        transform_tiles(t0, 0, nt, v, dm);
        for (int task = 0; task < Q * mtiles; ++task) gemm_task(nt, task, v, dm, du_group, c > c_begin);
      }
    });
  }

  // 3. dW += G^T dU G per (co, ci). dU is first summed over the groups, in
  //    group order, a run of ci at a time along its contiguous rows (a
  //    gather per (co, ci) touched Q x groups cache lines); the transform
  //    then takes four ci at a time, lane by lane the scalar arithmetic.
  constexpr int kSumRun = 64;
  parallel_for(cout, 1, [&](int co) {
    float summed[Q][kSumRun];
    for (int ci0 = 0; ci0 < cin; ci0 += kSumRun) {
      const int run = imin(kSumRun, cin - ci0), run4 = (run + 3) / 4 * 4;
      for (int q = 0; q < Q; ++q) {
        const float* first = du + q * k.u_q + (size_t)co * cin_padded + ci0;
        for (int i = 0; i < run; ++i) summed[q][i] = first[i];
        for (int group = 1; group < k.groups; ++group) {
          const float* part = first + (size_t)group * k.u_floats;
          for (int i = 0; i < run; ++i) summed[q][i] += part[i];
        }
        for (int i = run; i < run4; ++i) summed[q][i] = 0.0f;
      }
      for (int c = 0; c < run; c += 4) {
        f32x4 u[A][A], r[3][A], column[A], row[3], dw[3][3];  // r = G^T u, then (G^T u) G
        for (int q = 0; q < Q; ++q) u[q / A][q % A] = load_f32x4(&summed[q][c]);
        for (int l = 0; l < A; ++l) {
          for (int i = 0; i < A; ++i) column[i] = u[i][l];
          if constexpr (M == 4) filter_grad_rows4(column, row);
          else filter_grad_rows2(column, row);
          for (int x = 0; x < 3; ++x) r[x][l] = row[x];
        }
        for (int x = 0; x < 3; ++x) {
          if constexpr (M == 4) filter_grad_rows4(r[x], dw[x]);
          else filter_grad_rows2(r[x], dw[x]);
        }
        for (int lane = 0; lane < imin(4, run - c); ++lane) {
          float* w = grad_w + ((size_t)co * cin + ci0 + c + lane) * 9;
          for (int x = 0; x < 3; ++x)
            for (int y = 0; y < 3; ++y) w[x * 3 + y] += dw[x][y][lane];
        }
      }
    }
  });
}

}  // namespace

bool winograd_weight_grad_pays(int cin) {
  // Multiplies per output pixel and output channel, with cin padded to
  // panels: 9 * cin (direct) against 16 * cin / 4 (per 2x2 tile; a 4x4
  // tile's 36 / 16 pays sooner still).
  const int nr = conv_panel_width();
  const int direct = (9 * cin + nr - 1) / nr * nr;
  const int winograd = 4 * ((cin + nr - 1) / nr * nr);
  return winograd < direct;
}

size_t winograd_backward_weights_scratch_floats(const ConvGeometry& g, int cout, int cin) {
  const GradBlocking k = grad_blocking(g, cout, cin);
  return (size_t)k.slots * (k.v_floats + k.m_floats) + (size_t)k.groups * k.u_floats;
}

void winograd_conv2d_backward_weights(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin,
                                      float* grad_w, float* scratch, const float* zero_row) {
  if (weight_grad_tile(g) == 4)
    weight_grad_tiles<4>(in, g, dy, cout, cin, grad_w, scratch, zero_row);
  else
    weight_grad_tiles<2>(in, g, dy, cout, cin, grad_w, scratch, zero_row);
}

}  // namespace mb
