// The implicit-GEMM view of a forward convolution, shared by the fp32 kernel
// (conv2d.cu) and the tensor-core kernels (conv2d_mma.cu): rows M = output
// pixels (b, oy, ox), columns N = output channels, reduction K = (tap, input
// channel), input channel fastest. Padding, stride 2 and the nearest x2
// upsampled input are resolved while reading A; the epilogue (bias,
// per-sample bias, residual, divisor) is applied at the store in the CPU's
// order, so only the K-sum's rounding differs from the CPU.
#pragma once

#include "cuda_common.cuh"

namespace mb {
namespace cuda {

// The input-side geometry of the implicit GEMM, which the forward (below)
// and the weight gradient (conv2d.cu's WeightParams) read the same way.
struct ConvShape {
  long long M;  // batch * out_h * out_w
  int N, K;     // cout, taps * cin
  int cin, kw;
  int in_h, in_w, in_ld, up_shift, logical_h, logical_w;
  int out_h, out_w, stride, pad_top, pad_left;
};
inline ConvShape conv_shape(const ConvGeometry& g, int cout, int cin, int k) {
  ConvShape s;
  s.M = (long long)g.batch * g.out_h * g.out_w;
  s.N = cout;
  s.K = k * k * cin;
  s.cin = cin;
  s.kw = k;
  s.in_h = g.in_h;
  s.in_w = g.in_w;
  s.in_ld = g.in_ld;
  s.up_shift = g.upsample == 2 ? 1 : 0;
  s.logical_h = g.in_h * g.upsample;
  s.logical_w = g.in_w * g.upsample;
  s.out_h = g.out_h;
  s.out_w = g.out_w;
  s.stride = g.stride;
  s.pad_top = g.pad_top;
  s.pad_left = g.pad_left;
  return s;
}

struct ConvParams : ConvShape {
  const float* in;
  // The input in the model's half type instead (half activations: a
  // GroupNorm's output that only this GEMM reads, conv2d_mma.cu), or null.
  const uint16_t* in_half;
  const float* w;  // the packed weights: fp32 [K][N] (conv2d.cu), or half bits [N][k_ld] (conv2d_mma.cu)
  float* out;
  int out_ld;
  const float* bias;
  const float* batch_bias;
  int batch_bias_ld;
  const float* residual;  // may alias out: each element reads its own residual before storing
  int residual_ld;
  float divisor;
};

inline ConvParams conv_params(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                              float* out) {
  ConvParams p;
  static_cast<ConvShape&>(p) = conv_shape(g, w.cout, w.cin, w.kw);
  p.in = in;
  p.in_half = nullptr;
  p.w = w.data;
  p.out = out;
  p.out_ld = g.out_ld;
  p.bias = ep.bias;
  p.batch_bias = ep.batch_bias;
  p.batch_bias_ld = ep.batch_bias_ld;
  p.residual = ep.residual;
  p.residual_ld = ep.residual_ld;
  p.divisor = ep.divisor;
  return p;
}

// Where row m's receptive field starts: its image and the (unclipped)
// top-left input position. E: the input's element type (float, or the
// half type's bits).
template <typename E>
struct ConvRowOf {
  const E* image;
  int iy0, ix0;
  bool ok;  // m < M
};
using ConvRow = ConvRowOf<float>;

template <typename E>
__device__ __forceinline__ ConvRowOf<E> conv_row_of(const ConvParams& p, const E* in, long long m) {
  ConvRowOf<E> r;
  r.ok = m < p.M;
  const long long pixels = (long long)p.out_h * p.out_w;
  const long long b = r.ok ? m / pixels : 0;
  const int rem = r.ok ? (int)(m - b * pixels) : 0;
  const int oy = rem / p.out_w, ox = rem - (rem / p.out_w) * p.out_w;
  r.iy0 = oy * p.stride - p.pad_top;
  r.ix0 = ox * p.stride - p.pad_left;
  r.image = in + (size_t)b * p.in_h * p.in_w * p.in_ld;
  return r;
}
__device__ __forceinline__ ConvRow conv_row(const ConvParams& p, long long m) { return conv_row_of(p, p.in, m); }

// The input pixel under tap `tap` of row r, or null where it falls into the padding.
template <typename E>
__device__ __forceinline__ const E* conv_tap_pixel(const ConvParams& p, const ConvRowOf<E>& r, int tap) {
  const int dy = tap / p.kw, dx = tap - (tap / p.kw) * p.kw;
  const int iy = r.iy0 + dy, ix = r.ix0 + dx;
  if (iy < 0 || iy >= p.logical_h || ix < 0 || ix >= p.logical_w) return nullptr;
  return r.image + ((size_t)(iy >> p.up_shift) * p.in_w + (size_t)(ix >> p.up_shift)) * p.in_ld;
}

// A(m, k): 0 outside the image and past K.
__device__ __forceinline__ float conv_a(const ConvParams& p, const ConvRow& r, int k) {
  if (!r.ok || k >= p.K) return 0.0f;
  const int tap = k / p.cin, ci = k - (k / p.cin) * p.cin;
  const float* pixel = conv_tap_pixel(p, r, tap);
  return pixel ? pixel[ci] : 0.0f;
}

// Stores the GEMM sum of (m, n) through the fused epilogue (m < M, n < N).
__device__ __forceinline__ void conv_store(const ConvParams& p, long long m, int n, float acc) {
  float v = acc;
  if (p.bias) v += p.bias[n];
  if (p.batch_bias) v += p.batch_bias[(size_t)(m / ((long long)p.out_h * p.out_w)) * p.batch_bias_ld + n];
  if (p.residual) v = p.residual[(size_t)m * p.residual_ld + n] + v;
  if (p.divisor != 1.0f) v = v / p.divisor;
  p.out[(size_t)m * p.out_ld + n] = v;
}

// Packing, on the device, from the weights' device copies (at load, and
// after every optimizer step): up to 3 torch-layout sources stacked along
// cout (the fused q|k|v projection), read at (n, k) with n the output channel
// and k = tap * cin + ci its GEMM row. Longer stacks (the resnets' time
// projections) are packed in chunks of 3.
struct PackSources {
  WeightSource src[3];
  int first_n[3];
  int num_sources, cout, cin, taps;
};
inline PackSources pack_sources(const WeightSource* sources, const int* couts, int num_sources, int cin, int k) {
  PackSources ps;
  int cout = 0;
  for (int s = 0; s < num_sources && s < 3; ++s) {
    ps.src[s] = sources[s];
    ps.first_n[s] = cout;
    cout += couts[s];
  }
  ps.num_sources = num_sources < 3 ? num_sources : 3;
  ps.cout = cout;
  ps.cin = cin;
  ps.taps = k * k;
  return ps;
}
__device__ __forceinline__ float pack_source_value(const PackSources& ps, int n, int k) {
  int s = 0;
  while (s + 1 < ps.num_sources && n >= ps.first_n[s + 1]) ++s;
  const WeightSource& src = ps.src[s];
  const int ci = k % ps.cin, t = k / ps.cin;
  return src.data[(n - ps.first_n[s]) * src.stride_n + ci * src.stride_ci + t * src.stride_tap];
}
inline int stacked_cout(const int* couts, int num_sources) {
  int cout = 0;
  for (int s = 0; s < num_sources; ++s) cout += couts[s];
  return cout;
}
inline void describe_packed(PackedWeights* packed, float* storage, int cout, int cin, int k) {
  packed->data = storage;
  packed->cout = cout;
  packed->cin = cin;
  packed->kh = packed->kw = k;
  packed->nr = 0;
  packed->winograd = false;  // a CPU-side choice (see conv2d.cu)
  packed->transposed = nullptr;
}

// Split-K, for GEMMs with too few output tiles to occupy the GPU (batch 1
// at 8 x 8 or 4 x 4: a handful of 64 x 64 tiles, each a 2304-deep reduction,
// on a GPU of 100+ multiprocessors): K is cut into `splits` ranges of whole
// kc-deep chunks, each block (z = split) sums its range into
// partial[z][m][n], and conv_split_reduce adds the splits in order and
// applies the epilogue, so the result is deterministic. Used when the tiles
// fill less than half the multiprocessors; enough splits to fill them once,
// each at least 8 chunks deep, at most 16, and the partial sums within
// kMaxSplitFloats. conv_split_force (the parity self-test) overrides the
// count (0: the rule above).
constexpr size_t kMaxSplitFloats = (size_t)4 << 20;
int conv_split_count(long long M, int N, int K, int bm, int bn, int kc);
// The Ops' conv_scratch_floats for a forward tiled bm x bn over kc-deep
// chunks: room for its partial sums, 0 where it does not split.
size_t conv_split_scratch_floats(const ConvGeometry& g, int cout, int cin, int k, int bm, int bn, int kc);
// `splits` (conv_split_count) over `chunks` as whole chunks per split: the
// launch's grid.z (every split non-empty), with the chunks per split in *per_split.
inline int conv_split_ranges(int chunks, int splits, int* per_split) {
  *per_split = (chunks + splits - 1) / splits;
  return (chunks + *per_split - 1) / *per_split;
}
void conv_split_force(int splits);
// partial[s][m][n] for s < splits, summed in order, through the epilogue into out.
void conv_split_reduce(const ConvParams& p, const float* partial, int splits);

// dW as a GEMM with the reduction over output pixels: C[n][(tap, ci)] =
// sum_m dY[m][n] A[m][(tap, ci)] (A gathered as in the forward). The pixels
// are split over gridDim.z (m_per_split each); each split writes its partial
// C, and conv2d.cu's weight_grad_reduce adds the splits in order into the
// torch-layout gradient (deterministic, no atomics).
struct WeightParams : ConvShape {
  const float* in;
  const float* dy;
  float* partial;  // [splits][N][K]
  long long m_per_split;
  int dy_ld;
};
// conv2d_mma.cu: the partial sums of WeightParams on tensor cores, dY and the
// input rounded to bfloat16 (the backward's type for both half types'
// models), kWgradTile x kWgradTile tiles of C per block (grid: N
// tiles, K tiles, splits), the pixels in slices of kWgradSliceM
// (m_per_split a multiple). False (recorded) when the launch failed.
constexpr int kWgradTile = 64, kWgradSliceM = 32;
bool launch_wgrad_mma(const WeightParams& p, dim3 grid);

// dX through conv2d.cu's fp32 kernel from the bfloat16 data-gradient layout
// (w.transposed, rows wt_ld halves: conv2d_mma.cu), dY rounded to bfloat16 as
// it is read: the tensor-core data gradient's path for strided convs.
void conv2d_backward_data_transposed(const float* dy, const ConvGeometry& g, const PackedWeights& w, int wt_ld,
                                     float* dx, float* scratch, bool accumulate);

// Grid size in tiles of bm x bn; false (recorded) when CUDA could not launch it.
inline bool conv_grid(const ConvParams& p, int bm, int bn, const char* what, dim3* grid) {
  const long long mtiles = (p.M + bm - 1) / bm;
  const int ntiles = (p.N + bn - 1) / bn;
  if (mtiles > 0x7fffffffLL || ntiles > 65535) {
    record(cudaErrorInvalidConfiguration, what);
    return false;
  }
  *grid = dim3((unsigned)mtiles, (unsigned)ntiles);
  return true;
}

}  // namespace cuda
}  // namespace mb
