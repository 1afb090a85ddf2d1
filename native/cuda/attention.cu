// Multi-head self-attention on the GPU over the fused qkv buffer
// [batch * tokens][3 C] (q | k | v), the twin of cpu/attention.cpp: per
// (sample, head), S = Q K^T as a strided batched GEMM over all (sample,
// head) pairs at once, softmax(scale * S) per row (torch's order: scale,
// subtract the max, exp, divide by the sum), then O = P V into the output's
// head slice. Queries go in blocks so the scores stay under kMaxScoreFloats.
//
// Long token counts (kFlashMinTokens and more: attention at 32 x 32 and
// above) with heads of up to 64 channels and blocks enough to fill the GPU
// (use_flash) take the fused, flash-style kernel
// instead (attention_flash): the scores never reach memory. Each thread
// owns one query, its q and output row in registers; the block walks the
// keys in shared-memory tiles of K and V, and per tile takes the scores,
// their maximum, rescales its running sum and output by exp(old max - new
// max) and adds exp(score - max) times V (the online softmax of Milakov &
// Gimelshein 2018, as FlashAttention-2 tiles it), dividing by the sum at the
// end. The same softmax in another order: results agree with the unfused
// path to float32 rounding, not to the bit.
//
// The backward follows at the end: unfused (P for a chunk of samples in
// memory), or where the forward fuses, in four flash-style passes that
// recompute the scores tile by tile: the forward's, keeping each query row's
// maximum, 1 / exp-sum and D = dO . O; then dQ per query, dV per key, dK per
// key (FlashAttention-2's backward, split so each thread's rows fit in
// registers).
#include <atomic>
#include <type_traits>

#include "../engine/mathf.h"
#include "cuda_common.cuh"

namespace mb {
namespace cuda {

namespace {

constexpr size_t kMaxScoreFloats = (size_t)32 << 20;  // 128 MB of scores per block of queries
constexpr int kSoftmaxThreads = 256;

// The fused kernel: one query per thread, kFlashKeys keys per tile.
constexpr int kFlashMinTokens = 1024;
constexpr int kFlashMaxHeadDim = 64;
constexpr int kFlashQueries = 128;
constexpr int kFlashKeys = 32;
// The self-test's and benchmark's switch (attention_flash_mode): 0 the
// rule below, 1 fused for every head of <= 64 channels, -1 never fused. Both
// set it around their own calls only: a model planned while it was set would
// have sized its scratch (attention_scratch_floats) for the other path.
std::atomic<int> g_flash_mode{0};

// Fused for long token counts, where the scores are what costs, and only
// when its blocks (one per 128 queries of each sample's head) fill every
// multiprocessor at least once: at batch 1 with few heads the batched GEMMs
// spread wider. Not yet measured (bench/gpu.ts times both).
bool use_flash(const AttentionArgs& a) {
  const int mode = g_flash_mode;
  if (a.head_dim > kFlashMaxHeadDim || mode < 0) return false;
  if (mode > 0) return true;
  const long long blocks = (long long)a.batch * a.heads * ((a.tokens + kFlashQueries - 1) / kFlashQueries);
  return a.tokens >= kFlashMinTokens && blocks >= multiprocessor_count();
}

struct FlashParams {
  const float* qkv;
  float* out;  // null in the backward's first pass
  int tokens, heads, head_dim;
  float scale;
  // The backward's first pass: per (sample * heads + head, query) the row's
  // maximum score, 1 / its exp-sum, and D = dO . O (the softmax backward's
  // rowsum(dP * P)), three floats, from dout. Null in the forward.
  const float* dout;
  float* stats;
};

// Rows first .. first + kFlashKeys - 1 (of `rows`) of two head slices into
// shared tiles, by the whole block: a[r][d] = rows_a[(first + r) * ld_a + d],
// likewise b; zeros past the rows and past head_dim (the padding to DH).
template <int DH>
__device__ __forceinline__ void fill_tiles(float (*a)[DH], float (*b)[DH], const float* rows_a, int ld_a,
                                           const float* rows_b, int ld_b, int first, int rows, int dh) {
  for (int e = threadIdx.x; e < kFlashKeys * DH; e += kFlashQueries) {
    const int r = e / DH, d = e - (e / DH) * DH, row = first + r;
    const bool ok = row < rows && d < dh;
    a[r][d] = ok ? rows_a[(size_t)row * ld_a + d] : 0.0f;
    b[r][d] = ok ? rows_b[(size_t)row * ld_b + d] : 0.0f;
  }
}

// What a fused kernel's thread works on. Block (sample * heads + head, tile
// of kFlashQueries rows): the thread's row (a query, or a key) is `row`.
struct FlashThread {
  int T, dh, C, ld, b, h, row;
  bool active;          // row < T
  const float* sample;  // the sample's qkv rows, ld floats apart
};
__device__ __forceinline__ FlashThread flash_thread(const FlashParams& p) {
  FlashThread t;
  t.T = p.tokens, t.dh = p.head_dim, t.C = p.heads * p.head_dim, t.ld = 3 * t.C;
  t.b = blockIdx.x / p.heads, t.h = blockIdx.x - t.b * p.heads;
  t.row = blockIdx.y * kFlashQueries + threadIdx.x;
  t.active = t.row < t.T;
  t.sample = p.qkv + (size_t)t.b * t.T * t.ld;
  return t;
}

// x[d] = src[d] for d < dh on an active row, zero otherwise (the padding to DH).
template <int DH>
__device__ __forceinline__ void load_row(float (&x)[DH], const float* src, bool active, int dh) {
#pragma unroll
  for (int d = 0; d < DH; ++d) x[d] = active && d < dh ? src[d] : 0.0f;
}

// Block (sample * heads + head, query tile). DH: head_dim rounded up to a
// multiple of 16 (q, K and V zero-padded past head_dim: the padding adds
// zeros to every dot product and output column, which are not stored).
template <int DH>
__global__ void __launch_bounds__(kFlashQueries) attention_flash(FlashParams p) {
  __shared__ __align__(16) float k_tile[kFlashKeys][DH];
  __shared__ __align__(16) float v_tile[kFlashKeys][DH];
  const auto [T, dh, C, ld, b, h, i, active, sample] = flash_thread(p);
  float q[DH], o[DH] = {};
  load_row<DH>(q, sample + (size_t)i * ld + h * dh, active, dh);
  float running_max = -__int_as_float(0x7f800000), running_sum = 0.0f;
  for (int j0 = 0; j0 < T; j0 += kFlashKeys) {
    __syncthreads();  // every thread is done with the previous tile
    fill_tiles<DH>(k_tile, v_tile, sample + C + h * dh, ld, sample + 2 * C + h * dh, ld, j0, T, dh);
    __syncthreads();
    const int keys = T - j0 < kFlashKeys ? T - j0 : kFlashKeys;
    float s[kFlashKeys];
    float tile_max = -__int_as_float(0x7f800000);
#pragma unroll
    for (int jj = 0; jj < kFlashKeys; ++jj) {
      float dot = 0.0f;
#pragma unroll
      for (int d = 0; d < DH; ++d) dot = __fmaf_rn(q[d], k_tile[jj][d], dot);  // this file is built with --fmad=false
      s[jj] = dot * p.scale;
      if (jj < keys) tile_max = s[jj] > tile_max ? s[jj] : tile_max;
    }
    const float new_max = tile_max > running_max ? tile_max : running_max;
    const float correction = exp_f32(running_max - new_max);  // 0 on the first tile (exp(-inf))
    running_sum *= correction;
#pragma unroll
    for (int d = 0; d < DH; ++d) o[d] *= correction;
#pragma unroll
    for (int jj = 0; jj < kFlashKeys; ++jj) {
      if (jj >= keys) break;
      const float e = exp_f32(s[jj] - new_max);
      running_sum += e;
#pragma unroll
      for (int d = 0; d < DH; ++d) o[d] = __fmaf_rn(e, v_tile[jj][d], o[d]);
    }
    running_max = new_max;
  }
  if (!active) return;
  const float inv = 1.0f / running_sum;
  if (p.out) {
    float* row = p.out + ((size_t)b * T + i) * C + h * dh;
#pragma unroll
    for (int d = 0; d < DH; ++d)
      if (d < dh) row[d] = o[d] * inv;
  }
  if (p.stats) {
    const float* grad_row = p.dout + ((size_t)b * T + i) * C + h * dh;
    float dot = 0.0f;
#pragma unroll
    for (int d = 0; d < DH; ++d)
      if (d < dh) dot = __fmaf_rn(grad_row[d], o[d] * inv, dot);
    float* st = p.stats + ((size_t)blockIdx.x * T + i) * 3;
    st[0] = running_max;
    st[1] = inv;
    st[2] = dot;
  }
}

// The fused backward's second pass, per query (one a thread, like the
// forward): dQ_i = scale sum_j P_ij (dP_ij - D_i) K_j, with P_ij = exp(s_ij -
// max_i) / sum_i recomputed from the first pass's statistics and dP_ij =
// dO_i . V_j. Writes dqkv's q columns.
template <int DH>
__global__ void __launch_bounds__(kFlashQueries) attention_flash_dq(FlashParams p, float* dqkv) {
  __shared__ __align__(16) float k_tile[kFlashKeys][DH];
  __shared__ __align__(16) float v_tile[kFlashKeys][DH];
  const auto [T, dh, C, ld, b, h, i, active, sample] = flash_thread(p);
  const float* grad_row = p.dout + ((size_t)b * T + (active ? i : 0)) * C + h * dh;
  float q[DH], g[DH], dq[DH] = {};
  load_row<DH>(q, sample + (size_t)i * ld + h * dh, active, dh);
  load_row<DH>(g, grad_row, active, dh);
  const float* st = p.stats + ((size_t)blockIdx.x * T + (active ? i : 0)) * 3;
  const float row_max = st[0], inv_sum = st[1], row_d = st[2];
  for (int j0 = 0; j0 < T; j0 += kFlashKeys) {
    __syncthreads();  // every thread is done with the previous tile
    fill_tiles<DH>(k_tile, v_tile, sample + C + h * dh, ld, sample + 2 * C + h * dh, ld, j0, T, dh);
    __syncthreads();
    const int keys = T - j0 < kFlashKeys ? T - j0 : kFlashKeys;
    for (int jj = 0; jj < keys; ++jj) {
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < DH; ++d) {
        s = __fmaf_rn(q[d], k_tile[jj][d], s);
        dp = __fmaf_rn(g[d], v_tile[jj][d], dp);
      }
      const float prob = exp_f32(s * p.scale - row_max) * inv_sum;
      const float ds = prob * (dp - row_d);
#pragma unroll
      for (int d = 0; d < DH; ++d) dq[d] = __fmaf_rn(ds, k_tile[jj][d], dq[d]);
    }
  }
  if (!active) return;
  float* out = dqkv + ((size_t)b * T + i) * ld + h * dh;
#pragma unroll
  for (int d = 0; d < DH; ++d)
    if (d < dh) out[d] = dq[d] * p.scale;
}

// The fused backward's last passes, per key (one a thread): DV: dV_j =
// sum_i P_ij dO_i; else dK_j = scale sum_i P_ij (dP_ij - D_i) Q_i. Two
// kernels rather than one, so that each thread's rows (k and the sum; v too
// for dK) fit in registers at 64 channels. Writes dqkv's k or v columns.
template <int DH, bool DV>
__global__ void __launch_bounds__(kFlashQueries) attention_flash_dkv(FlashParams p, float* dqkv) {
  __shared__ __align__(16) float q_tile[kFlashKeys][DH];
  __shared__ __align__(16) float g_tile[kFlashKeys][DH];
  __shared__ float stat_tile[kFlashKeys][3];
  const auto [T, dh, C, ld, b, h, j, active, sample] = flash_thread(p);
  const float* grads = p.dout + (size_t)b * T * C;
  float k[DH], v[DV ? 1 : DH], acc[DH] = {};
  load_row<DH>(k, sample + (size_t)j * ld + C + h * dh, active, dh);
  if constexpr (!DV) load_row<DH>(v, sample + (size_t)j * ld + 2 * C + h * dh, active, dh);
  for (int i0 = 0; i0 < T; i0 += kFlashKeys) {
    __syncthreads();  // every thread is done with the previous tile
    fill_tiles<DH>(q_tile, g_tile, sample + h * dh, ld, grads + h * dh, C, i0, T, dh);
    for (int e = threadIdx.x; e < kFlashKeys * 3; e += kFlashQueries) {
      const int ii = e / 3, i = i0 + ii;
      stat_tile[ii][e - ii * 3] = i < T ? p.stats[((size_t)blockIdx.x * T + i) * 3 + (e - ii * 3)] : 0.0f;
    }
    __syncthreads();
    const int queries = T - i0 < kFlashKeys ? T - i0 : kFlashKeys;
    for (int ii = 0; ii < queries; ++ii) {
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < DH; ++d) {
        s = __fmaf_rn(k[d], q_tile[ii][d], s);
        if constexpr (!DV) dp = __fmaf_rn(v[d], g_tile[ii][d], dp);
      }
      const float prob = exp_f32(s * p.scale - stat_tile[ii][0]) * stat_tile[ii][1];
      if constexpr (DV) {
#pragma unroll
        for (int d = 0; d < DH; ++d) acc[d] = __fmaf_rn(prob, g_tile[ii][d], acc[d]);
      } else {
        const float ds = prob * (dp - stat_tile[ii][2]);
#pragma unroll
        for (int d = 0; d < DH; ++d) acc[d] = __fmaf_rn(ds, q_tile[ii][d], acc[d]);
      }
    }
  }
  if (!active) return;
  float* out = dqkv + ((size_t)b * T + j) * ld + (DV ? 2 * C : C) + h * dh;
#pragma unroll
  for (int d = 0; d < DH; ++d)
    if (d < dh) out[d] = DV ? acc[d] : acc[d] * p.scale;
}

template <int DH>
void launch_flash(const FlashParams& p, int batch) {
  const dim3 grid((unsigned)(batch * p.heads), (unsigned)((p.tokens + kFlashQueries - 1) / kFlashQueries));
  MB_LAUNCH_SYNC(attention_flash<DH>, grid, kFlashQueries)(p);
  check_launch("attention_flash");
}

// The fused backward: statistics (the forward's pass), dQ, dV, dK.
template <int DH>
void launch_flash_backward(const FlashParams& p, int batch, float* dqkv) {
  const dim3 grid((unsigned)(batch * p.heads), (unsigned)((p.tokens + kFlashQueries - 1) / kFlashQueries));
  MB_LAUNCH_SYNC(attention_flash<DH>, grid, kFlashQueries)(p);
  if (!check_launch("attention_flash (backward statistics)")) return;
  MB_LAUNCH_SYNC(attention_flash_dq<DH>, grid, kFlashQueries)(p, dqkv);
  if (!check_launch("attention_flash_dq")) return;
  const auto dv_kernel = attention_flash_dkv<DH, true>;  // named: the launch macro cannot take the commas
  MB_LAUNCH_SYNC(dv_kernel, grid, kFlashQueries)(p, dqkv);
  if (!check_launch("attention_flash_dkv (dV)")) return;
  const auto dk_kernel = attention_flash_dkv<DH, false>;
  MB_LAUNCH_SYNC(dk_kernel, grid, kFlashQueries)(p, dqkv);
  check_launch("attention_flash_dkv (dK)");
}

// f(std::integral_constant<int, DH>) for the head size padded to 16, 32, 48 or 64.
template <typename F>
void by_head_size(int dh, F f) {
  if (dh <= 16)
    f(std::integral_constant<int, 16>());
  else if (dh <= 32)
    f(std::integral_constant<int, 32>());
  else if (dh <= 48)
    f(std::integral_constant<int, 48>());
  else
    f(std::integral_constant<int, 64>());
}

// The fused kernels' grid has one row of blocks per 128 queries: false (recorded) past 8 million tokens.
bool flash_grid_ok(const AttentionArgs& a) {
  if ((a.tokens + kFlashQueries - 1) / kFlashQueries > 65535) {
    record(cudaErrorInvalidConfiguration, "attention: more than 8 million tokens");
    return false;
  }
  return true;
}

int query_block(const AttentionArgs& a) {
  const size_t per_query = (size_t)a.batch * a.heads * a.tokens;
  size_t rows = kMaxScoreFloats / (per_query ? per_query : 1);
  if (rows < 1) rows = 1;
  return rows >= (size_t)a.tokens ? a.tokens : (int)rows;
}

__device__ float block_reduce_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_down_sync(0xffffffffu, v, o);
    v = other > v ? other : v;
  }
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = shared[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) m = shared[w] > m ? shared[w] : m;
    shared[0] = m;
  }
  __syncthreads();
  const float result = shared[0];
  __syncthreads();
  return result;
}

__device__ float block_reduce_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) s += shared[w];
    shared[0] = s;
  }
  __syncthreads();
  const float result = shared[0];
  __syncthreads();
  return result;
}

// One block per row of scores (`rows` rows of length T, in place).
__global__ void __launch_bounds__(kSoftmaxThreads) softmax_rows(float* scores, long long rows, int T, float scale) {
  __shared__ float shared[kSoftmaxThreads / 32];
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    float* s = scores + (size_t)row * T;
    float mx = -__int_as_float(0x7f800000);
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
      const float v = s[j] * scale;
      s[j] = v;
      mx = v > mx ? v : mx;
    }
    mx = block_reduce_max(mx, shared);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
      const float e = exp_f32(s[j] - mx);
      s[j] = e;
      sum += e;
    }
    sum = block_reduce_sum(sum, shared);
    const float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < T; j += blockDim.x) s[j] *= inv;
  }
}

// dS = P * (dP - rowsum(dP * P)) * scale, in place over dP; one block per row.
__global__ void __launch_bounds__(kSoftmaxThreads) softmax_backward_rows(const float* probs, float* dprobs, long long rows,
                                                                          int T, float scale) {
  __shared__ double shared[kSoftmaxThreads / 32];
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* p = probs + (size_t)row * T;
    float* dp = dprobs + (size_t)row * T;
    double dot = 0.0;
    for (int j = threadIdx.x; j < T; j += blockDim.x) dot += (double)dp[j] * p[j];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_down_sync(0xffffffffu, dot, o);
    if (lane == 0) shared[warp] = dot;
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = 0.0;
      for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += shared[w];
      shared[0] = total;
    }
    __syncthreads();
    const float rowsum = (float)shared[0];
    __syncthreads();
    for (int j = threadIdx.x; j < T; j += blockDim.x) dp[j] = p[j] * (dp[j] - rowsum) * scale;
  }
}

// Samples per backward chunk: the probabilities and their gradient for every
// head of a chunk stay under kMaxScoreFloats each.
int backward_samples_per_chunk(const AttentionArgs& a) {
  const size_t per_sample = (size_t)a.heads * a.tokens * a.tokens;
  size_t n = kMaxScoreFloats / (per_sample ? per_sample : 1);
  if (n < 1) n = 1;
  return n >= (size_t)a.batch ? a.batch : (int)n;
}

}  // namespace

size_t attention_scratch_floats(const AttentionArgs& a) {
  if (use_flash(a)) return 64;  // the fused kernel keeps its scores on chip
  return (size_t)a.batch * a.heads * query_block(a) * a.tokens + 64;
}

void attention_flash_mode(int mode) { g_flash_mode = mode; }

void attention_forward(const float* qkv, const AttentionArgs& a, float* out, float* scratch, const float*) {
  if (a.batch <= 0 || a.tokens <= 0 || !begin_launch()) return;
  const int T = a.tokens, dh = a.head_dim, H = a.heads, C = H * dh, ld = 3 * C;
  const int qb = query_block(a);
  const long long BH = (long long)a.batch * H;
  if (BH > 0x7fffffffLL) {
    record(cudaErrorInvalidConfiguration, "attention: batch * heads too large");
    return;
  }
  if (use_flash(a)) {
    if (!flash_grid_ok(a)) return;
    const FlashParams p{qkv, out, T, H, dh, a.scale, nullptr, nullptr};
    by_head_size(dh, [&](auto padded) { launch_flash<decltype(padded)::value>(p, a.batch); });
    return;
  }
  for (int q0 = 0; q0 < T; q0 += qb) {
    const int rows = T - q0 < qb ? T - q0 : qb;
    // S[z][i][j] = sum_d Q[b][q0 + i][h d] K[b][j][h d], z = b * H + h
    BatchedGemm s;
    s.a = qkv + (size_t)q0 * ld;
    s.a_i = ld, s.a_k = 1, s.a_outer = (long long)T * ld, s.a_inner = dh;
    s.b = qkv + C;
    s.b_k = 1, s.b_j = ld, s.b_outer = (long long)T * ld, s.b_inner = dh;
    s.c = scratch;
    s.c_i = T, s.c_outer = (long long)H * rows * T, s.c_inner = (long long)rows * T;
    s.m = rows, s.n = T, s.k = dh, s.batches = (int)BH, s.inner = H;
    batched_gemm(s);
    if (failed()) return;
    const long long score_rows = BH * rows;
    MB_LAUNCH_SYNC(softmax_rows, grid_for((size_t)score_rows, 1), kSoftmaxThreads)(scratch, score_rows, T, a.scale);
    if (!check_launch("softmax_rows")) return;
    // O[b][q0 + i][h d] = sum_j P[z][i][j] V[b][j][h d]
    BatchedGemm o;
    o.a = scratch;
    o.a_i = T, o.a_k = 1, o.a_outer = (long long)H * rows * T, o.a_inner = (long long)rows * T;
    o.b = qkv + 2 * C;
    o.b_k = ld, o.b_j = 1, o.b_outer = (long long)T * ld, o.b_inner = dh;
    o.c = out + (size_t)q0 * C;
    o.c_i = C, o.c_outer = (long long)T * C, o.c_inner = dh;
    o.m = rows, o.n = dh, o.k = T, o.batches = (int)BH, o.inner = H;
    batched_gemm(o);
    if (failed()) return;
  }
}

// ---------------------------------------------------------------------------
// Backward: recomputes P = softmax(scale Q K^T), then dV = P^T dO,
// dP = dO V^T, dS = P (dP - rowsum(dP P)) scale, dQ = dS K, dK = dS^T Q, each
// a batched GEMM over a chunk of samples and all their heads. dqkv is
// overwritten.

size_t attention_backward_scratch_floats(const AttentionArgs& a) {
  if (use_flash(a)) return (size_t)3 * a.batch * a.heads * a.tokens + 64;  // the fused backward's row statistics
  return 2 * align_up((size_t)backward_samples_per_chunk(a) * a.heads * a.tokens * a.tokens, 16) + 64;
}

void attention_backward(const float* qkv, const AttentionArgs& a, const float* dout, float* dqkv, float* scratch) {
  if (a.batch <= 0 || a.tokens <= 0 || !begin_launch()) return;
  const int T = a.tokens, dh = a.head_dim, H = a.heads, C = H * dh, ld = 3 * C;
  if (use_flash(a)) {  // the same choice as the forward's: the flash-style passes, no T x T buffers
    if ((long long)a.batch * H > 0x7fffffffLL || !flash_grid_ok(a)) return;
    const FlashParams p{qkv, nullptr, T, H, dh, a.scale, dout, scratch};
    by_head_size(dh, [&](auto padded) { launch_flash_backward<decltype(padded)::value>(p, a.batch, dqkv); });
    return;
  }
  const int chunk = backward_samples_per_chunk(a);
  const size_t block = align_up((size_t)chunk * H * T * T, 16);
  float* probs = scratch;
  float* dprobs = scratch + block;
  const long long TT = (long long)T * T;
  for (int b0 = 0; b0 < a.batch; b0 += chunk) {
    const int nb = a.batch - b0 < chunk ? a.batch - b0 : chunk;
    const float* q = qkv + (size_t)b0 * T * ld;
    const float* k = q + C;
    const float* v = q + 2 * C;
    const float* d_o = dout + (size_t)b0 * T * C;
    float* dq = dqkv + (size_t)b0 * T * ld;
    float* dk = dq + C;
    float* dv = dq + 2 * C;
    const int batches = nb * H;
    // P[z][i][j] = softmax_j(scale sum_d Q[i][d] K[j][d])
    BatchedGemm s{q, ld, 1, (long long)T * ld, dh, k, 1, ld, (long long)T * ld, dh, probs, T, H * TT, TT, T, T, dh, batches, H};
    batched_gemm(s);
    if (failed()) return;
    MB_LAUNCH_SYNC(softmax_rows, grid_for((size_t)batches * T, 1), kSoftmaxThreads)(probs, (long long)batches * T, T, a.scale);
    if (!check_launch("softmax_rows (backward)")) return;
    // dV[j][d] = sum_i P[i][j] dO[i][d]
    BatchedGemm gv{probs, 1, T, H * TT, TT, d_o, C, 1, (long long)T * C, dh, dv, ld, (long long)T * ld, dh, T, dh, T, batches, H};
    batched_gemm(gv);
    // dP[i][j] = sum_d dO[i][d] V[j][d]
    BatchedGemm gp{d_o, C, 1, (long long)T * C, dh, v, 1, ld, (long long)T * ld, dh, dprobs, T, H * TT, TT, T, T, dh, batches, H};
    batched_gemm(gp);
    if (failed()) return;
    MB_LAUNCH_SYNC(softmax_backward_rows, grid_for((size_t)batches * T, 1), kSoftmaxThreads)(probs, dprobs,
                                                                                            (long long)batches * T, T, a.scale);
    if (!check_launch("softmax_backward_rows")) return;
    // dQ[i][d] = sum_j dS[i][j] K[j][d];  dK[j][d] = sum_i dS[i][j] Q[i][d]
    BatchedGemm gq{dprobs, T, 1, H * TT, TT, k, ld, 1, (long long)T * ld, dh, dq, ld, (long long)T * ld, dh, T, dh, T, batches, H};
    batched_gemm(gq);
    BatchedGemm gk{dprobs, 1, T, H * TT, TT, q, ld, 1, (long long)T * ld, dh, dk, ld, (long long)T * ld, dh, T, dh, T, batches, H};
    batched_gemm(gk);
    if (failed()) return;
  }
}

}  // namespace cuda
}  // namespace mb
