// Convolution as an implicit GEMM on the GPU, fp32 (the float16 / bfloat16
// tensor-core forward is conv2d_mma.cu), and
// the strided batched GEMM that attention uses. The GEMM view is the CPU's:
// rows M = output pixels (b, oy, ox), columns N = output channels, and the
// reduction K = (tap, input channel), input channel fastest, so that a row of
// A reads channel runs of NHWC pixels. Padding, stride 2 and the nearest x2
// upsampled input are resolved while loading A (no im2col buffer); the
// epilogue (bias, per-sample bias, residual, divisor) is fused into the store
// in the CPU's order, so only the K-sum's rounding differs from the CPU.
//
// Weights are packed on the device, from the parameters' device copies, as a
// plain K x N row-major matrix (Winograd is a CPU-side choice; the flag is
// ignored here): at load, and after every optimizer step. The backward (dX, dW, db)
// follows at the end.
#include "conv2d_params.cuh"

namespace mb {
namespace cuda {

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16, kGemmThreads = 256;

// 64 x 64 output tile per block of 256 threads, 4 x 4 per thread (rows ty +
// 16 i, columns tx + 16 j, so a warp's shared-memory reads spread over banks).
// Split-K (conv2d_params.cuh): block z sums K chunks [z, z + 1) x
// chunks_per_split into partial[z] (no epilogue); partial null: one split.
__global__ void __launch_bounds__(kGemmThreads) conv_implicit_gemm(ConvParams p, int chunks_per_split, float* partial) {
  __shared__ float As[kBK][kBM + 4];
  __shared__ float Bs[kBK][kBN];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const long long m0 = (long long)blockIdx.x * kBM;
  const int n0 = blockIdx.y * kBN;

  // This thread loads A's row ar (fixed for the whole K loop), four k at a time.
  const int ar = tid >> 2, ak = (tid & 3) * 4;
  const ConvRow arow = conv_row(p, m0 + ar);
  // ... and B's row bk, four consecutive columns.
  const int bk = tid >> 4, bn = (tid & 15) * 4;

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  const int k_begin = partial ? (int)blockIdx.z * chunks_per_split * kBK : 0;
  const int k_end = partial && k_begin + chunks_per_split * kBK < p.K ? k_begin + chunks_per_split * kBK : p.K;
  for (int k0 = k_begin; k0 < k_end; k0 += kBK) {
#pragma unroll
    for (int q = 0; q < 4; ++q) As[ak + q][ar] = conv_a(p, arow, k0 + ak + q);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int k = k0 + bk, n = n0 + bn + q;
      Bs[bk][bn + q] = (k < p.K && n < p.N) ? p.w[(size_t)k * p.N + n] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __fmaf_rn(a[i], b[j], acc[i][j]);  // explicit FMA: the file is built with --fmad=false
    }
    __syncthreads();
  }

  float* split_out = partial ? partial + (size_t)blockIdx.z * p.M * p.N : nullptr;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const long long m = m0 + ty + 16 * i;
    if (m >= p.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx + 16 * j;
      if (n >= p.N) continue;
      if (split_out)
        split_out[(size_t)m * p.N + n] = acc[i][j];
      else
        conv_store(p, m, n, acc[i][j]);
    }
  }
}

__global__ void conv_split_sum(ConvParams p, const float* partial, int splits) {
  const size_t total = (size_t)p.M * p.N;
  MB_GRID_STRIDE(i, total) {
    float sum = partial[i];
    for (int s = 1; s < splits; ++s) sum += partial[(size_t)s * total + i];
    conv_store(p, (long long)(i / (size_t)p.N), (int)(i % (size_t)p.N), sum);
  }
}

int g_forced_splits = 0;  // conv_split_force: set by the parity self-test only, between cases

struct GemmParams {
  BatchedGemm g;
  int z0;  // first batch of this launch (gridDim.z is at most 65535)
};

__global__ void __launch_bounds__(kGemmThreads) strided_batched_gemm(GemmParams p) {
  __shared__ float As[kBK][kBM + 4];
  __shared__ float Bs[kBK][kBN];
  const BatchedGemm& g = p.g;
  const int z = p.z0 + blockIdx.z;
  const long long zo = z / g.inner, zi = z % g.inner;
  const float* A = g.a + zo * g.a_outer + zi * g.a_inner;
  const float* B = g.b + zo * g.b_outer + zi * g.b_inner;
  float* C = g.c + zo * g.c_outer + zi * g.c_inner;
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int m0 = blockIdx.x * kBM, n0 = blockIdx.y * kBN;
  const int ar = tid >> 2, ak = (tid & 3) * 4;
  const int bk = tid >> 4, bn = (tid & 15) * 4;

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  for (int k0 = 0; k0 < g.k; k0 += kBK) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int i = m0 + ar, k = k0 + ak + q;
      As[ak + q][ar] = (i < g.m && k < g.k) ? A[(long long)i * g.a_i + (long long)k * g.a_k] : 0.0f;
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int k = k0 + bk, j = n0 + bn + q;
      Bs[bk][bn + q] = (k < g.k && j < g.n) ? B[(long long)k * g.b_k + (long long)j * g.b_j] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __fmaf_rn(a[i], b[j], acc[i][j]);  // explicit FMA: the file is built with --fmad=false
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = m0 + ty + 16 * i;
    if (row >= g.m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = n0 + tx + 16 * j;
      if (col < g.n) C[(long long)row * g.c_i + col] = acc[i][j];
    }
  }
}

// --- backward -----------------------------------------------------------------

// dX as an implicit GEMM: rows = input pixels (at the logical, upsampled size
// for an upsampling conv), columns = input channels, K = (tap, output
// channel). A(m, (tap, n)) = dY at the output pixel that tap connects to m, or
// 0 where the stride skips it or it falls outside; B((tap, n), ci) reads the
// forward's packed weights [tap][ci][n] transposed in place, or (W a half
// type, conv2d_mma.cu's data-gradient layout) the half weights
// wt[ci][(taps - 1 - tap, n)], with dY rounded to that type as it is read, as
// the tensor-core kernels round their A operand.
struct DataParams {
  const float* dy;
  const float* w;
  const uint16_t* wt;
  int wt_ld;
  float* out;
  long long M;
  int N, K;  // N = cin, K = taps * cout
  int cout, cin, kw;
  int lh, lw;  // rows' image size
  int out_h, out_w, dy_ld, stride, pad_top, pad_left;
  int out_ld;
  bool accumulate;
};

template <WeightType W>
__global__ void __launch_bounds__(kGemmThreads) conv_backward_data_gemm(DataParams p) {
  __shared__ float As[kBK][kBM + 4];
  __shared__ float Bs[kBK][kBN];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const long long m0 = (long long)blockIdx.x * kBM;
  const int n0 = blockIdx.y * kBN;
  const int ar = tid >> 2, ak = (tid & 3) * 4;
  const long long am = m0 + ar;
  const bool a_row_ok = am < p.M;
  const long long pixels = (long long)p.lh * p.lw;
  const long long ab = a_row_ok ? am / pixels : 0;
  const int rem = a_row_ok ? (int)(am - ab * pixels) : 0;
  const int iy = rem / p.lw, ix = rem - (rem / p.lw) * p.lw;
  const float* image = p.dy + (size_t)ab * p.out_h * p.out_w * p.dy_ld;
  const int bk = tid >> 4, bn = (tid & 15) * 4;

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  for (int k0 = 0; k0 < p.K; k0 += kBK) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int k = k0 + ak + q;
      float v = 0.0f;
      if (a_row_ok && k < p.K) {
        const int tap = k / p.cout, n = k - (k / p.cout) * p.cout;
        const int ky = tap / p.kw, kx = tap - (tap / p.kw) * p.kw;
        const int oy_s = iy + p.pad_top - ky, ox_s = ix + p.pad_left - kx;
        if (oy_s >= 0 && ox_s >= 0 && oy_s % p.stride == 0 && ox_s % p.stride == 0) {
          const int oy = oy_s / p.stride, ox = ox_s / p.stride;
          if (oy < p.out_h && ox < p.out_w) v = image[((size_t)oy * p.out_w + ox) * p.dy_ld + n];
          if constexpr (W != WeightType::kFloat32) v = half_bits_to_float(W, float_to_half_bits(W, v));
        }
      }
      As[ak + q][ar] = v;
    }
    {
      const int k = k0 + bk;
      const int tap = k / p.cout, n = k - (k / p.cout) * p.cout;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int ci = n0 + bn + q;
        float v = 0.0f;
        if (k < p.K && ci < p.N) {
          if constexpr (W == WeightType::kFloat32)
            v = p.w[((size_t)tap * p.cin + ci) * p.cout + n];
          else
            v = half_bits_to_float(W, p.wt[(size_t)ci * p.wt_ld + (size_t)(p.K / p.cout - 1 - tap) * p.cout + n]);
        }
        Bs[bk][bn + q] = v;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __fmaf_rn(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const long long m = m0 + ty + 16 * i;
    if (m >= p.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx + 16 * j;
      if (n >= p.N) continue;
      float* o = p.out + (size_t)m * p.out_ld + n;
      *o = p.accumulate ? *o + acc[i][j] : acc[i][j];
    }
  }
}

// dW as a GEMM with the reduction over output pixels (WeightParams,
// conv2d_params.cuh), 64 x 64 tiles of C[n][(tap, ci)] per block.
__global__ void __launch_bounds__(kGemmThreads) conv_backward_weights_gemm(WeightParams p) {
  __shared__ float Ds[kBK][kBM + 4];  // dY^T: [m][n]
  __shared__ float Xs[kBK][kBN];      // A: [m][k]
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int n0 = blockIdx.x * kBM, c0 = blockIdx.y * kBN;
  const long long m_begin = (long long)blockIdx.z * p.m_per_split;
  const long long m_end = m_begin + p.m_per_split < p.M ? m_begin + p.m_per_split : p.M;
  const int lm = tid >> 4, lq = (tid & 15) * 4;  // this thread's row of both tiles, and its 4 columns
  const long long pixels = (long long)p.out_h * p.out_w;

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  for (long long mb = m_begin; mb < m_end; mb += kBK) {
    const long long m = mb + lm;
    const bool row_ok = m < m_end;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int n = n0 + lq + q;
      Ds[lm][lq + q] = (row_ok && n < p.N) ? p.dy[(size_t)m * p.dy_ld + n] : 0.0f;
    }
    long long b = 0;
    int oy = 0, ox = 0;
    if (row_ok) {
      b = m / pixels;
      const int rem = (int)(m - b * pixels);
      oy = rem / p.out_w;
      ox = rem - oy * p.out_w;
    }
    const float* image = p.in + (size_t)b * p.in_h * p.in_w * p.in_ld;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int k = c0 + lq + q;
      float v = 0.0f;
      if (row_ok && k < p.K) {
        const int tap = k / p.cin, ci = k - (k / p.cin) * p.cin;
        const int dy = tap / p.kw, dx = tap - (tap / p.kw) * p.kw;
        const int iy = oy * p.stride - p.pad_top + dy, ix = ox * p.stride - p.pad_left + dx;
        if (iy >= 0 && iy < p.logical_h && ix >= 0 && ix < p.logical_w)
          v = image[((size_t)(iy >> p.up_shift) * p.in_w + (size_t)(ix >> p.up_shift)) * p.in_ld + ci];
      }
      Xs[lm][lq + q] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[4], b2[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = Ds[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b2[j] = Xs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __fmaf_rn(a[i], b2[j], acc[i][j]);
    }
    __syncthreads();
  }
  float* out = p.partial + (size_t)blockIdx.z * p.N * p.K;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int n = n0 + ty + 16 * i;
    if (n >= p.N) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int k = c0 + tx + 16 * j;
      if (k < p.K) out[(size_t)n * p.K + k] = acc[i][j];
    }
  }
}

// grad_w[n][ci][tap] += sum over splits of partial[s][n][tap * cin + ci]
__global__ void weight_grad_reduce(const float* partial, int splits, int N, int K, int cin, int taps, float* grad_w) {
  MB_GRID_STRIDE(i, (size_t)N * K) {
    const size_t n = i / (size_t)K;
    const int k = (int)(i % (size_t)K);
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += partial[(size_t)s * N * K + i];
    const int tap = k / cin, ci = k - (k / cin) * cin;
    grad_w[(n * cin + ci) * taps + tap] += sum;
  }
}

// grad_b[n] += sum over rows of dY[m][n]: 32 columns x 8 row lanes per block, in double.
__global__ void __launch_bounds__(256) bias_grad(const float* dy, long long rows, int ld, int N, float* grad_b) {
  __shared__ double part[8][32];
  const int lane_n = threadIdx.x & 31, lane_m = threadIdx.x >> 5;
  const int n = blockIdx.x * 32 + lane_n;
  double sum = 0.0;
  if (n < N)
    for (long long m = lane_m; m < rows; m += 8) sum += (double)dy[(size_t)m * ld + n];
  part[lane_m][lane_n] = sum;
  __syncthreads();
  if (lane_m == 0 && n < N) {
    for (int l = 1; l < 8; ++l) sum += part[l][lane_n];
    grad_b[n] += (float)sum;
  }
}

// Splits of the pixel reduction: enough blocks to fill the GPU, and partial
// results within kMaxPartialFloats.
constexpr size_t kMaxPartialFloats = (size_t)16 << 20;
int weight_grad_splits(long long M, int N, int K) {
  long long splits = (M + 511) / 512;
  const size_t nk = (size_t)N * K;
  const long long cap = (long long)(kMaxPartialFloats / (nk ? nk : 1));
  if (splits > cap) splits = cap;
  if (splits > 65535) splits = 65535;
  return splits < 1 ? 1 : (int)splits;
}

// Columns [col0, col0 + ps.cout) of packed[(tap * cin + ci) * ld + n], the
// K x N row-major matrix (ld = N): one chunk of at most 3 sources.
__global__ void pack_kernel(PackSources ps, int col0, int ld, size_t total, float* packed) {
  MB_GRID_STRIDE(i, total) {
    const int n = (int)(i % (size_t)ps.cout);
    const size_t k = i / (size_t)ps.cout;
    packed[k * ld + col0 + n] = pack_source_value(ps, n, (int)k);
  }
}

}  // namespace

size_t conv_packed_floats(int cout, int cin, int k, int) {
  return align_up((size_t)cout * cin * k * k, 16);  // keeps the next layer's weights 64-byte aligned
}

void pack_conv(PackedWeights* packed, float* storage, const WeightSource* sources, const int* couts, int num_sources,
               int cin, int k, int) {
  const int cout = stacked_cout(couts, num_sources);
  describe_packed(packed, storage, cout, cin, k);
  // PackSources holds 3 sources (q|k|v); more (the resnets' time
  // projections) are packed 3 at a time, each launch writing its columns.
  for (int s = 0, col0 = 0; s < num_sources; s += 3) {
    const int chunk = num_sources - s < 3 ? num_sources - s : 3;
    const PackSources ps = pack_sources(sources + s, couts + s, chunk, cin, k);
    const size_t total = (size_t)ps.taps * cin * ps.cout;
    if (total) {
      if (!begin_launch()) return;
      MB_LAUNCH(pack_kernel, grid_for(total), kThreads)(ps, col0, cout, total, storage);
      check_launch("pack_conv");
    }
    col0 += ps.cout;
  }
}

int conv_split_count(long long M, int N, int K, int bm, int bn, int kc) {
  const int chunks = (K + kc - 1) / kc;
  if (M <= 0 || N <= 0 || chunks < 2) return 1;
  long long splits;
  if (g_forced_splits > 0) {
    splits = g_forced_splits;
  } else {
    const long long tiles = (M + bm - 1) / bm * ((N + bn - 1) / bn);
    const int sms = multiprocessor_count();
    if (tiles * 2 > sms) return 1;
    splits = sms / tiles;
    if (splits > chunks / 8) splits = chunks / 8;
    if (splits > 16) splits = 16;
  }
  if (splits > chunks) splits = chunks;
  while (splits > 1 && (size_t)splits * (size_t)M * (size_t)N > kMaxSplitFloats) --splits;
  return splits < 1 ? 1 : (int)splits;
}
void conv_split_force(int splits) { g_forced_splits = splits > 0 ? splits : 0; }

void conv_split_reduce(const ConvParams& p, const float* partial, int splits) {
  MB_LAUNCH(conv_split_sum, grid_for((size_t)p.M * p.N), kThreads)(p, partial, splits);
  check_launch("conv_split_sum");
}

size_t conv_split_scratch_floats(const ConvGeometry& g, int cout, int cin, int k, int bm, int bn, int kc) {
  const ConvShape s = conv_shape(g, cout, cin, k);
  const int splits = conv_split_count(s.M, s.N, s.K, bm, bn, kc);
  return splits > 1 ? (size_t)splits * (size_t)s.M * (size_t)s.N : 0;
}

// The fp32 forward's split-K partial sums (conv2d_mma.cu's conv_scratch_floats_half: the half types').
size_t conv_scratch_floats(const ConvGeometry& g, int cout, int cin, int k, int) {
  return conv_split_scratch_floats(g, cout, cin, k, kBM, kBN, kBK);
}

void conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep, float* out,
                    const float*, float* scratch) {
  if (!begin_launch()) return;
  const ConvParams p = conv_params(in, g, w, ep, out);
  dim3 grid;
  if (p.M <= 0 || p.N <= 0 || !conv_grid(p, kBM, kBN, "conv2d: output too large for one launch", &grid)) return;
  const int splits = conv_split_count(p.M, p.N, p.K, kBM, kBN, kBK);
  if (splits > 1 && scratch) {
    int per_split;
    grid.z = (unsigned)conv_split_ranges((p.K + kBK - 1) / kBK, splits, &per_split);
    MB_LAUNCH_SYNC(conv_implicit_gemm, grid, kGemmThreads)(p, per_split, scratch);
    if (!check_launch("conv_implicit_gemm (split K)")) return;
    conv_split_reduce(p, scratch, (int)grid.z);
    return;
  }
  MB_LAUNCH_SYNC(conv_implicit_gemm, grid, kGemmThreads)(p, 0, nullptr);
  check_launch("conv_implicit_gemm");
}

void batched_gemm(const BatchedGemm& g) {
  if (g.m <= 0 || g.n <= 0 || g.batches <= 0 || !begin_launch()) return;
  const int mtiles = (g.m + kBM - 1) / kBM, ntiles = (g.n + kBN - 1) / kBN;
  if (ntiles > 65535) {
    record(cudaErrorInvalidConfiguration, "batched_gemm: n too large for one launch");
    return;
  }
  for (int z0 = 0; z0 < g.batches; z0 += 65535) {
    const int nz = g.batches - z0 < 65535 ? g.batches - z0 : 65535;
    GemmParams p{g, z0};
    MB_LAUNCH_SYNC(strided_batched_gemm, dim3((unsigned)mtiles, (unsigned)ntiles, (unsigned)nz), kGemmThreads)(p);
    if (!check_launch("strided_batched_gemm")) return;
  }
}

// ---------------------------------------------------------------------------
// Backward.

size_t conv2d_backward_data_scratch_floats(const ConvGeometry& g, int, int cin, int, bool) {
  // an upsampling conv's dX at the upsampled size, summed 2x2 into dx afterwards
  return g.upsample == 2 ? (size_t)g.batch * g.in_h * 2 * g.in_w * 2 * cin : 0;
}

namespace {
// W float32: w's fp32 packing; a half type: wt, the data-gradient layout of
// conv2d_mma.cu, rows wt_ld halves long.
template <WeightType W>
void conv2d_backward_data_simt(const float* dy, const ConvGeometry& g, const PackedWeights& w, const uint16_t* wt,
                               int wt_ld, float* dx, float* scratch, bool accumulate) {
  if (!begin_launch()) return;
  DataParams p;
  p.dy = dy;
  p.w = w.data;
  p.wt = wt;
  p.wt_ld = wt_ld;
  p.cout = w.cout;
  p.cin = w.cin;
  p.kw = w.kw;
  p.N = w.cin;
  p.K = w.kh * w.kw * w.cout;
  p.lh = g.in_h * g.upsample;
  p.lw = g.in_w * g.upsample;
  p.M = (long long)g.batch * p.lh * p.lw;
  p.out_h = g.out_h;
  p.out_w = g.out_w;
  p.dy_ld = g.out_ld;
  p.stride = g.stride;
  p.pad_top = g.pad_top;
  p.pad_left = g.pad_left;
  if (g.upsample == 2) {
    p.out = scratch;
    p.out_ld = w.cin;
    p.accumulate = false;
  } else {
    p.out = dx;
    p.out_ld = g.in_ld;
    p.accumulate = accumulate;
  }
  if (p.M <= 0 || p.N <= 0) return;
  const long long mtiles = (p.M + kBM - 1) / kBM;
  const int ntiles = (p.N + kBN - 1) / kBN;
  if (mtiles > 0x7fffffffLL || ntiles > 65535) {
    record(cudaErrorInvalidConfiguration, "conv2d_backward_data: too large for one launch");
    return;
  }
  const auto kernel = conv_backward_data_gemm<W>;  // named: the launch macro cannot take the template's brackets
  MB_LAUNCH_SYNC(kernel, dim3((unsigned)mtiles, (unsigned)ntiles), kGemmThreads)(p);
  if (!check_launch("conv_backward_data_gemm")) return;
  if (g.upsample == 2) upsample_nearest2x_backward(scratch, g.batch, g.in_h, g.in_w, w.cin, dx, g.in_ld);
}
}  // namespace

void conv2d_backward_data(const float* dy, const ConvGeometry& g, const PackedWeights& w, float* dx, float* scratch,
                          const float*, bool accumulate) {
  conv2d_backward_data_simt<WeightType::kFloat32>(dy, g, w, nullptr, 0, dx, scratch, accumulate);
}

void conv2d_backward_data_transposed(const float* dy, const ConvGeometry& g, const PackedWeights& w, int wt_ld,
                                     float* dx, float* scratch, bool accumulate) {
  const uint16_t* wt = reinterpret_cast<const uint16_t*>(w.transposed);
  conv2d_backward_data_simt<WeightType::kBfloat16>(dy, g, w, wt, wt_ld, dx, scratch, accumulate);
}

size_t conv2d_backward_weights_scratch_floats(const ConvGeometry& g, int cout, int cin, int k) {
  const long long M = (long long)g.batch * g.out_h * g.out_w;
  const int K = k * k * cin;
  return (size_t)weight_grad_splits(M, cout, K) * cout * K;
}

namespace {
// The weight and bias gradients: the pixel reduction split over blocks (z),
// each split's partial C by the fp32 kernel (t float32) or on tensor cores
// (t bfloat16: conv2d_mma.cu, dY and the input rounded), then added in split order
// into the torch-layout gradient; the bias gradient from the unrounded dY.
void conv2d_backward_weights_typed(WeightType t, const float* in, const ConvGeometry& g, const float* dy, int cout,
                                   int cin, int k, float* grad_w, float* grad_b, float* scratch) {
  if (!begin_launch()) return;
  WeightParams p;
  static_cast<ConvShape&>(p) = conv_shape(g, cout, cin, k);
  p.in = in;
  p.dy = dy;
  p.partial = scratch;
  p.dy_ld = g.out_ld;
  if (p.M <= 0 || p.N <= 0 || p.K <= 0) return;
  const int splits = weight_grad_splits(p.M, p.N, p.K);
  const int m_step = t == WeightType::kFloat32 ? kBK : kWgradSliceM;  // each split whole slices of the kernel
  p.m_per_split = ((p.M + splits - 1) / splits + m_step - 1) / m_step * m_step;
  const int tile_n = t == WeightType::kFloat32 ? kBM : kWgradTile, tile_k = t == WeightType::kFloat32 ? kBN : kWgradTile;
  const int ntiles = (p.N + tile_n - 1) / tile_n, ktiles = (p.K + tile_k - 1) / tile_k;
  if (ktiles > 65535) {
    record(cudaErrorInvalidConfiguration, "conv2d_backward_weights: too large for one launch");
    return;
  }
  const dim3 grid((unsigned)ntiles, (unsigned)ktiles, (unsigned)splits);
  if (t == WeightType::kFloat32) {
    MB_LAUNCH_SYNC(conv_backward_weights_gemm, grid, kGemmThreads)(p);
    if (!check_launch("conv_backward_weights_gemm")) return;
  } else if (!launch_wgrad_mma(p, grid)) {
    return;
  }
  MB_LAUNCH(weight_grad_reduce, grid_for((size_t)p.N * p.K), kThreads)(scratch, splits, p.N, p.K, cin, k * k, grad_w);
  if (!check_launch("weight_grad_reduce")) return;
  if (grad_b) {
    MB_LAUNCH_SYNC(bias_grad, (unsigned)((cout + 31) / 32), 256)(dy, p.M, g.out_ld, cout, grad_b);
    check_launch("bias_grad");
  }
}
}  // namespace

void conv2d_backward_weights(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, int k,
                             float* grad_w, float* grad_b, float* scratch, const float*) {
  conv2d_backward_weights_typed(WeightType::kFloat32, in, g, dy, cout, cin, k, grad_w, grad_b, scratch);
}
void conv2d_backward_weights_bf16(const float* in, const ConvGeometry& g, const float* dy, int cout, int cin, int k,
                                  float* grad_w, float* grad_b, float* scratch, const float*) {
  conv2d_backward_weights_typed(WeightType::kBfloat16, in, g, dy, cout, cin, k, grad_w, grad_b, scratch);
}

}  // namespace cuda
}  // namespace mb
