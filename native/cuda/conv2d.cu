// Convolution as an implicit GEMM on the GPU, fp32 (tensor cores later), and
// the strided batched GEMM that attention uses. The GEMM view is the CPU's:
// rows M = output pixels (b, oy, ox), columns N = output channels, and the
// reduction K = (tap, input channel), input channel fastest, so that a row of
// A reads channel runs of NHWC pixels. Padding, stride 2 and the nearest x2
// upsampled input are resolved while loading A (no im2col buffer); the
// epilogue (bias, per-sample bias, residual, divisor) is fused into the store
// in the CPU's order, so only the K-sum's rounding differs from the CPU.
//
// Weights are packed once at load as a plain K x N row-major matrix (Winograd
// is a CPU-side choice; the flag is ignored here).
#include <vector>

#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16, kGemmThreads = 256;

struct ConvParams {
  const float* in;
  const float* w;  // [K][N]
  float* out;
  long long M;  // batch * out_h * out_w
  int N, K;
  int cin, kw;
  int in_h, in_w, in_ld, up_shift, logical_h, logical_w;
  int out_h, out_w, out_ld, stride, pad_top, pad_left;
  const float* bias;
  const float* batch_bias;
  int batch_bias_ld;
  const float* residual;  // may alias out: each element reads its own residual before storing
  int residual_ld;
  float divisor;
};

// 64 x 64 output tile per block of 256 threads, 4 x 4 per thread (rows ty +
// 16 i, columns tx + 16 j, so a warp's shared-memory reads spread over banks).
__global__ void __launch_bounds__(kGemmThreads) conv_implicit_gemm(ConvParams p) {
  __shared__ float As[kBK][kBM + 4];
  __shared__ float Bs[kBK][kBN];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const long long m0 = (long long)blockIdx.x * kBM;
  const int n0 = blockIdx.y * kBN;

  // This thread loads A's row ar (fixed for the whole K loop), four k at a time.
  const int ar = tid >> 2, ak = (tid & 3) * 4;
  const long long am = m0 + ar;
  const bool a_row_ok = am < p.M;
  const long long pixels = (long long)p.out_h * p.out_w;
  const long long ab = a_row_ok ? am / pixels : 0;
  const int rem = a_row_ok ? (int)(am - ab * pixels) : 0;
  const int oy = rem / p.out_w, ox = rem - (rem / p.out_w) * p.out_w;
  const int iy0 = oy * p.stride - p.pad_top, ix0 = ox * p.stride - p.pad_left;
  const float* image = p.in + (size_t)ab * p.in_h * p.in_w * p.in_ld;
  // ... and B's row bk, four consecutive columns.
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
        const int tap = k / p.cin, ci = k - (k / p.cin) * p.cin;
        const int dy = tap / p.kw, dx = tap - (tap / p.kw) * p.kw;
        const int iy = iy0 + dy, ix = ix0 + dx;
        if (iy >= 0 && iy < p.logical_h && ix >= 0 && ix < p.logical_w)
          v = image[((size_t)(iy >> p.up_shift) * p.in_w + (size_t)(ix >> p.up_shift)) * p.in_ld + ci];
      }
      As[ak + q][ar] = v;
    }
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

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const long long m = m0 + ty + 16 * i;
    if (m >= p.M) continue;
    const long long b = m / pixels;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx + 16 * j;
      if (n >= p.N) continue;
      float v = acc[i][j];
      if (p.bias) v += p.bias[n];
      if (p.batch_bias) v += p.batch_bias[(size_t)b * p.batch_bias_ld + n];
      if (p.residual) v = p.residual[(size_t)m * p.residual_ld + n] + v;
      if (p.divisor != 1.0f) v = v / p.divisor;
      p.out[(size_t)m * p.out_ld + n] = v;
    }
  }
}

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

}  // namespace

size_t conv_packed_floats(int cout, int cin, int k, bool) {
  return align_up((size_t)cout * cin * k * k, 16);  // keeps the next layer's weights 64-byte aligned
}

void pack_conv(PackedWeights* packed, float* storage, const WeightSource* sources, const int* couts, int num_sources,
               int cin, int k, bool) {
  int cout = 0;
  for (int s = 0; s < num_sources; ++s) cout += couts[s];
  const int taps = k * k;
  const size_t K = (size_t)taps * cin;
  std::vector<float> host(K * (size_t)cout);
  int n = 0;
  for (int s = 0; s < num_sources; ++s) {
    const WeightSource& src = sources[s];
    for (int nn = 0; nn < couts[s]; ++nn, ++n)
      for (int t = 0; t < taps; ++t)
        for (int ci = 0; ci < cin; ++ci)
          host[((size_t)t * cin + ci) * cout + n] = src.data[nn * src.stride_n + ci * src.stride_ci + t * src.stride_tap];
  }
  upload(storage, host.data(), host.size() * sizeof(float));  // staged before it returns: host may go
  packed->data = storage;
  packed->cout = cout;
  packed->cin = cin;
  packed->kh = packed->kw = k;
  packed->nr = 0;
  packed->winograd = false;
}

size_t conv_scratch_floats(const ConvGeometry&, int, int, int, bool) { return 0; }

void conv2d_forward(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep, float* out,
                    const float*, float*) {
  if (!begin_launch()) return;
  ConvParams p;
  p.in = in;
  p.w = w.data;
  p.out = out;
  p.M = (long long)g.batch * g.out_h * g.out_w;
  p.N = w.cout;
  p.K = w.kh * w.kw * w.cin;
  p.cin = w.cin;
  p.kw = w.kw;
  p.in_h = g.in_h;
  p.in_w = g.in_w;
  p.in_ld = g.in_ld;
  p.up_shift = g.upsample == 2 ? 1 : 0;
  p.logical_h = g.in_h * g.upsample;
  p.logical_w = g.in_w * g.upsample;
  p.out_h = g.out_h;
  p.out_w = g.out_w;
  p.out_ld = g.out_ld;
  p.stride = g.stride;
  p.pad_top = g.pad_top;
  p.pad_left = g.pad_left;
  p.bias = ep.bias;
  p.batch_bias = ep.batch_bias;
  p.batch_bias_ld = ep.batch_bias_ld;
  p.residual = ep.residual;
  p.residual_ld = ep.residual_ld;
  p.divisor = ep.divisor;
  if (p.M <= 0 || p.N <= 0) return;
  const long long mtiles = (p.M + kBM - 1) / kBM;
  const int ntiles = (p.N + kBN - 1) / kBN;
  if (mtiles > 0x7fffffffLL || ntiles > 65535) {
    record(cudaErrorInvalidConfiguration, "conv2d: output too large for one launch");
    return;
  }
  conv_implicit_gemm<<<dim3((unsigned)mtiles, (unsigned)ntiles), kGemmThreads, 0, stream()>>>(p);
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
    strided_batched_gemm<<<dim3((unsigned)mtiles, (unsigned)ntiles, (unsigned)nz), kGemmThreads, 0, stream()>>>(p);
    if (!check_launch("strided_batched_gemm")) return;
  }
}

}  // namespace cuda
}  // namespace mb
