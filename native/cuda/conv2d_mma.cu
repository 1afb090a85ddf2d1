// Convolution and linear layers on tensor cores: the forward implicit GEMM
// of conv2d.cu (same rows, columns, reduction order and fused epilogue, see
// conv2d_params.cuh) with float16 or bfloat16 inputs and fp32 accumulation
// through mma.sync.aligned.m16n8k16 (mma.cuh has the fragment layouts). A
// model loaded with dtype 'float16' / 'bfloat16' gets these through its Ops
// table (ops_table.cu); everything else in its graph stays fp32. A model that
// may train also packs a transposed, tap-flipped copy of each weight, so that
// its data gradients (dX) run on the same kernels (conv2d_backward_data_bf16).
//
// Weights are packed once per model, on the host, to the half type as an
// N x k_ld matrix (k fastest, k_ld = K rounded up to the 32-deep slice, zero
// padded), so that a block's B tile is whole 16-byte rows that cp.async
// copies straight into shared memory.
//
// Activations are fp32 in global memory and rounded to the half type while
// the A tile is filled: the rest of the graph (GroupNorm, attention, the
// residual adds, the epilogue here) keeps its fp32 inputs and outputs, at
// the price of reading A as 4-byte floats, not 2-byte halves. A is gathered
// anyway (padding, stride, upsampling), so it goes global -> registers ->
// (convert) -> shared: the next slice's loads are issued before the current
// slice's MMAs and stored after them, which hides their latency as cp.async
// double buffering does for B.
//
// Half activations (sampling): where the input is a GroupNorm's output that
// only this GEMM reads, GroupNorm writes it in the half type already
// (groupnorm.cu; ConvParams::in_half), rounded as this file would round it,
// so the sums are bit-identical. Then A is half the bytes, and each thread's
// eight k of one tap are one 16-byte cp.async like B's, zero-filled over the
// padding: no staging registers, no conversion (the HALF_IN kernels).
//
// Tiles: 128 x 128 per block of 8 warps (each 64 x 32: 4 x 4 MMAs per
// 16-deep step) when there are enough of them to give every multiprocessor
// one, else 64 x 64 per block of 4 warps (each 32 x 32) so that small
// GEMMs (batch 1 at low resolution, the time-embedding linears) still spread
// over the GPU, split over K where even those are too few (conv2d_params.cuh's
// split-K). Both fit two blocks per multiprocessor. Fragments are read
// from shared memory with ldmatrix.x4 (one instruction per A fragment or
// pair of B fragments); tile rows are padded to 40 halves (80 bytes), so the
// eight 16-byte rows each phase of an ldmatrix reads fall in 32 distinct banks.
//
// On Hopper (sm_90a) with MARBLE_CUDA_WGMMA=1, the 128 x 128 tiles go to the
// warpgroup MMA instead (conv_wgmma_gemm below, wgmma.cuh); opt-in until a
// run on an H100/H200 has checked it against these kernels.
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <type_traits>

#include "conv2d_params.cuh"
#include "mma.cuh"
#include "wgmma.cuh"

namespace mb {
namespace cuda {

namespace {

constexpr int kSliceK = 32;            // K per shared-memory slice: two m16n8k16 steps
constexpr int kTileLd = kSliceK + 8;   // halves per tile row (80 bytes: 16-byte aligned, conflict-free fragments)

inline int packed_k(int K) { return (K + kSliceK - 1) / kSliceK * kSliceK; }

// Eight consecutive A(m, k .. k + 7) of row r. VEC8: cin is a multiple of 8
// and the input rows are 16-byte aligned, so the eight share one tap and are
// two float4 loads of one pixel (k < K then implies k + 7 < K). A template
// argument, not a branch: the general gather's registers would crowd the
// vector path's (every layer but conv_in takes it).
template <bool VEC8>
__device__ __forceinline__ void load_a8(const ConvParams& p, const ConvRow& r, int k, float v[8]) {
  if constexpr (VEC8) {
    const float* pixel = r.ok && k < p.K ? conv_tap_pixel(p, r, k / p.cin) : nullptr;
    if (pixel) {
      const int ci = k - (k / p.cin) * p.cin;
      load_f32x4(pixel + ci, v);
      load_f32x4(pixel + ci + 4, v + 4);
    } else {
#pragma unroll
      for (int q = 0; q < 8; ++q) v[q] = 0.0f;
    }
  } else {
#pragma unroll
    for (int q = 0; q < 8; ++q) v[q] = conv_a(p, r, k + q);
  }
}

// Two blocks per multiprocessor at least (128 registers a thread for the
// large tile): one block's barrier waits then overlap the other's MMAs.
// Split-K (conv2d_params.cuh): block z runs slices [z, z + 1) x
// slices_per_split into partial[z] (no epilogue); partial null: all slices.
// HALF_IN: A from p.in_half by cp.async (VEC8 only: whole 16-byte runs).
template <WeightType T, int BM, int BN, int WARPS_M, int WARPS_N, bool VEC8, bool HALF_IN>
__global__ void __launch_bounds__(WARPS_M* WARPS_N * 32, 2)
    conv_mma_gemm(ConvParams p, int k_ld, int slices_per_split, float* partial) {
  static_assert(VEC8 || !HALF_IN, "half inputs are read 8 channels at a time");
  using InElem = std::conditional_t<HALF_IN, uint16_t, float>;
  constexpr int kThreads = WARPS_M * WARPS_N * 32;
  constexpr int kWarpM = BM / WARPS_M, kWarpN = BN / WARPS_N;
  constexpr int kFragsM = kWarpM / 16, kFragsN = kWarpN / 8;
  constexpr int kRowsPerPass = kThreads / 4;  // A: four threads per tile row, 8 k each
  constexpr int kAPasses = BM / kRowsPerPass;
  constexpr int kBChunks = BN * (kSliceK / 8) / kThreads;  // B: 16-byte chunks (8 halves) per thread
  static_assert(kAPasses * kRowsPerPass == BM && kBChunks * kThreads == BN * (kSliceK / 8), "tile / thread mismatch");
  static_assert(kFragsN % 2 == 0, "B fragments are loaded in pairs (ldmatrix.x4)");
  __shared__ __align__(16) uint16_t As[2][BM][kTileLd];  // [m][k]: row-major A
  __shared__ __align__(16) uint16_t Bs[2][BN][kTileLd];  // [n][k]: column-major B

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = (warp / WARPS_N) * kWarpM, warp_n = (warp % WARPS_N) * kWarpN;
  const int group = lane >> 2, pair = lane & 3;
  // ldmatrix.x4 row addresses (mma.cuh). A fragment: matrices (rows 0-7, k 0-7),
  // (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) are a[0..3].
  const int a_frag_row = lane & 15, a_frag_k = (lane >> 4) * 8;
  // B fragments j and j + 1: matrices (j, k 0-7), (j, k 8-15), (j + 1, k 0-7),
  // (j + 1, k 8-15) are bf[j][0], bf[j][1], bf[j + 1][0], bf[j + 1][1].
  const int b_row = (lane >> 4) * 8 + (lane & 7), b_k = ((lane >> 3) & 1) * 8;
  const long long m0 = (long long)blockIdx.x * BM;
  const int n0 = blockIdx.y * BN;
  const uint16_t* w = reinterpret_cast<const uint16_t*>(p.w);

  const int a_row = tid >> 2, a_k = (tid & 3) * 8;
  const InElem* in;
  if constexpr (HALF_IN)
    in = p.in_half;
  else
    in = p.in;
  ConvRowOf<InElem> rows[kAPasses];
#pragma unroll
  for (int pass = 0; pass < kAPasses; ++pass) rows[pass] = conv_row_of(p, in, m0 + a_row + pass * kRowsPerPass);
  float staged[HALF_IN ? 1 : kAPasses][8];  // A through registers (fp32 input)

  float acc[kFragsM][kFragsN][4];
#pragma unroll
  for (int i = 0; i < kFragsM; ++i)
#pragma unroll
    for (int j = 0; j < kFragsN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  const int s_begin = partial ? (int)blockIdx.z * slices_per_split : 0;
  const int s_end = partial && s_begin + slices_per_split < k_ld / kSliceK ? s_begin + slices_per_split : k_ld / kSliceK;
  // Slice s of B into buffer `buf`: rows past N are zero-filled (source size 0).
  auto copy_b = [&](int buf, int s) {
#pragma unroll
    for (int c = 0; c < kBChunks; ++c) {
      const int chunk = tid + c * kThreads, row = chunk >> 2, kc = (chunk & 3) * 8;
      const int n = n0 + row;
      const bool ok = n < p.N;
      cp_async_16(&Bs[buf][row][kc], w + (size_t)(ok ? n : 0) * k_ld + s * kSliceK + kc, ok ? 16 : 0);
    }
    if constexpr (HALF_IN) {  // A's eight k of one tap, or zeros (padding, past M or K: source size 0)
#pragma unroll
      for (int pass = 0; pass < kAPasses; ++pass) {
        const int k = s * kSliceK + a_k;
        const uint16_t* pixel = rows[pass].ok && k < p.K ? conv_tap_pixel(p, rows[pass], k / p.cin) : nullptr;
        const uint16_t* src = pixel ? pixel + (k - (k / p.cin) * p.cin) : p.in_half;
        cp_async_16(&As[buf][a_row + pass * kRowsPerPass][a_k], src, pixel ? 16 : 0);
      }
    }
    cp_async_commit();
  };
  auto load_a = [&](int s) {
    if constexpr (!HALF_IN) {
#pragma unroll
      for (int pass = 0; pass < kAPasses; ++pass) load_a8<VEC8>(p, rows[pass], s * kSliceK + a_k, staged[pass]);
    }
  };
  auto store_a = [&](int buf) {
    if constexpr (!HALF_IN) {
#pragma unroll
      for (int pass = 0; pass < kAPasses; ++pass) {
        const float* v = staged[pass];
        store_u32x4(&As[buf][a_row + pass * kRowsPerPass][a_k], pack_half2<T>(v[0], v[1]), pack_half2<T>(v[2], v[3]),
                    pack_half2<T>(v[4], v[5]), pack_half2<T>(v[6], v[7]));
      }
    }
  };

  copy_b(0, s_begin);  // and A, with half inputs
  load_a(s_begin);
  store_a(0);
  cp_async_wait<0>();
  __syncthreads();
  for (int s = s_begin; s < s_end; ++s) {
    const int cur = (s - s_begin) & 1, next = cur ^ 1;
    const bool more = s + 1 < s_end;
    if (more) {  // `next` was last read in slice s - 1, which the barrier below it closed
      copy_b(next, s + 1);  // and A, with half inputs
      load_a(s + 1);
    }
#pragma unroll
    for (int kk = 0; kk < kSliceK; kk += 16) {
      // All of B's fragments, then A's one row of fragments at a time (fewer live registers).
      uint32_t bf[kFragsN][2];
#pragma unroll
      for (int j = 0; j < kFragsN; j += 2) {
        uint32_t r[4];
        ldmatrix_x4(r, &Bs[cur][warp_n + j * 8 + b_row][kk + b_k]);
        bf[j][0] = r[0], bf[j][1] = r[1], bf[j + 1][0] = r[2], bf[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < kFragsM; ++i) {
        uint32_t af[4];
        ldmatrix_x4(af, &As[cur][warp_m + i * 16 + a_frag_row][kk + a_frag_k]);
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) mma_m16n8k16<T>(acc[i][j], af, bf[j]);
      }
    }
    if (more) {
      store_a(next);
      cp_async_wait<0>();
    }
    __syncthreads();
  }

  // D element e of fragment (i, j): row group + 8 (e >> 1), column 2 pair + (e & 1).
  float* split_out = partial ? partial + (size_t)blockIdx.z * p.M * p.N : nullptr;
#pragma unroll
  for (int i = 0; i < kFragsM; ++i)
#pragma unroll
    for (int e2 = 0; e2 < 2; ++e2) {
      const long long m = m0 + warp_m + i * 16 + group + 8 * e2;
      if (m >= p.M) continue;
#pragma unroll
      for (int j = 0; j < kFragsN; ++j)
#pragma unroll
        for (int e1 = 0; e1 < 2; ++e1) {
          const int n = n0 + warp_n + j * 8 + 2 * pair + e1;
          if (n >= p.N) continue;
          if (split_out)
            split_out[(size_t)m * p.N + n] = acc[i][j][2 * e2 + e1];
          else
            conv_store(p, m, n, acc[i][j][2 * e2 + e1]);
        }
    }
}

// `scratch`: room for the split-K partial sums of a 64 x 64 tiling (conv_scratch_floats_half), or null.
template <WeightType T, int BM, int BN, int WARPS_M, int WARPS_N, bool VEC8, bool HALF_IN>
void launch_conv_mma(const ConvParams& p, int k_ld, float* scratch) {
  dim3 grid;
  if (!conv_grid(p, BM, BN, "conv2d (tensor cores): output too large for one launch", &grid)) return;
  const auto kernel = conv_mma_gemm<T, BM, BN, WARPS_M, WARPS_N, VEC8, HALF_IN>;  // named: the launch macro cannot take the commas
  const int slices = k_ld / kSliceK;
  const int splits = BM == 64 && BN == 64 && scratch ? conv_split_count(p.M, p.N, p.K, BM, BN, kSliceK) : 1;
  if (splits > 1) {
    int per_split;
    grid.z = (unsigned)conv_split_ranges(slices, splits, &per_split);
    MB_LAUNCH_SYNC(kernel, grid, WARPS_M * WARPS_N * 32)(p, k_ld, per_split, scratch);
    if (!check_launch("conv_mma_gemm (split K)")) return;
    conv_split_reduce(p, scratch, (int)grid.z);
    return;
  }
  MB_LAUNCH_SYNC(kernel, grid, WARPS_M * WARPS_N * 32)(p, k_ld, 0, nullptr);
  check_launch("conv_mma_gemm");
}

// --- the weight gradient -------------------------------------------------------
// C[n][k] = sum_m dY[m][n] X[m][k] (WeightParams, conv2d_params.cuh): a block
// makes a 64 x 64 tile of C (rows n, columns k = (tap, ci)) over its split of
// the pixels m, 32 pixels a slice, on 4 warps of 32 x 32. Both operands are
// gathered pixel-major, as they lie in memory (dY[m][n], the input under
// (m, tap)): each thread reads two adjacent columns of 8 of the slice's rows
// (coalesced over the warp), rounds each pair to T and stores it as one
// word. ldmatrix.trans then hands the MMA the transposed fragments it needs:
// A = dY^T (rows n, reduction m) and B = X (reduction m, columns k). The next
// slice's loads are issued before the current slice's MMAs and stored after
// them, as the forward does with its A tile.
constexpr int kWgradThreads = 128;
constexpr int kWgradLd = kWgradTile + 8;  // halves per row: 144 bytes, so ldmatrix's eight rows fall in distinct banks

struct WgradColumn {  // one column k of X: its tap's offsets and its channel
  int dy, dx, ci;
  bool ok;  // k < K
};

template <WeightType T>
__global__ void __launch_bounds__(kWgradThreads) conv_wgrad_mma(WeightParams p) {
  __shared__ __align__(16) uint16_t Ds[2][kWgradSliceM][kWgradLd];  // dY: [m][n]
  __shared__ __align__(16) uint16_t Xs[2][kWgradSliceM][kWgradLd];  // the gathered input: [m][k]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_n = (warp >> 1) * 32, warp_k = (warp & 1) * 32;
  const int group = lane >> 2, pair = lane & 3;
  const int n0 = blockIdx.x * kWgradTile, k0 = blockIdx.y * kWgradTile;
  const long long m_begin = (long long)blockIdx.z * p.m_per_split;
  const long long m_end = m_begin + p.m_per_split < p.M ? m_begin + p.m_per_split : p.M;
  const long long slices = m_end > m_begin ? (m_end - m_begin + kWgradSliceM - 1) / kWgradSliceM : 0;

  // This thread's two columns (of dY's tile and of X's) and its rows row0 + 4 j of each slice.
  const int col = (tid & 31) * 2, row0 = tid >> 5;
  WgradColumn xc[2];
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const int k = k0 + col + c;
    xc[c].ok = k < p.K;
    const int tap = xc[c].ok ? k / p.cin : 0;
    xc[c].ci = xc[c].ok ? k - tap * p.cin : 0;
    xc[c].dy = tap / p.kw;
    xc[c].dx = tap - xc[c].dy * p.kw;
  }
  const long long pixels = (long long)p.out_h * p.out_w;
  const bool small_m = p.M < 0x7fffffffLL;
  float dv[8][2], xv[8][2];  // the next slice, staged
  auto load = [&](long long first) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const long long m = first + row0 + 4 * j;
#pragma unroll
      for (int c = 0; c < 2; ++c) dv[j][c] = xv[j][c] = 0.0f;
      if (m >= m_end) continue;
#pragma unroll
      for (int c = 0; c < 2; ++c)
        if (n0 + col + c < p.N) dv[j][c] = p.dy[(size_t)m * p.dy_ld + n0 + col + c];
      // 32-bit division where the pixel index fits (always, short of 2^31
      // pixels): a 64-bit one is a long software sequence on the GPU.
      const long long b = small_m ? (long long)((unsigned)m / (unsigned)pixels) : m / pixels;
      const int rem = (int)(m - b * pixels), oy = rem / p.out_w, ox = rem - (rem / p.out_w) * p.out_w;
      const float* image = p.in + (size_t)b * p.in_h * p.in_w * p.in_ld;
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int iy = oy * p.stride - p.pad_top + xc[c].dy, ix = ox * p.stride - p.pad_left + xc[c].dx;
        if (xc[c].ok && iy >= 0 && iy < p.logical_h && ix >= 0 && ix < p.logical_w)
          xv[j][c] = image[((size_t)(iy >> p.up_shift) * p.in_w + (size_t)(ix >> p.up_shift)) * p.in_ld + xc[c].ci];
      }
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      store_u32(&Ds[buf][row0 + 4 * j][col], pack_half2<T>(dv[j][0], dv[j][1]));
      store_u32(&Xs[buf][row0 + 4 * j][col], pack_half2<T>(xv[j][0], xv[j][1]));
    }
  };

  // ldmatrix.trans row addresses (lane: matrix q = lane / 8, its row lane % 8).
  // A fragment i: matrices (n 0-7, m 0-7), (n 8-15, m 0-7), (n 0-7, m 8-15),
  // (n 8-15, m 8-15) are a[0..3]: stored rows m, columns n.
  const int q = lane >> 3, r8 = lane & 7;
  const int a_m = r8 + 8 * (q >> 1), a_n = 8 * (q & 1);
  // B fragments j and j + 1: matrices (m 0-7, k of j), (m 8-15, k of j),
  // (m 0-7, k of j + 1), (m 8-15, k of j + 1): stored rows m, columns k.
  const int b_m = r8 + 8 * (q & 1), b_k = 8 * (q >> 1);

  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  if (slices > 0) {
    load(m_begin);
    store(0);
  }
  __syncthreads();
  for (long long s = 0; s < slices; ++s) {
    const int cur = (int)(s & 1), next = cur ^ 1;
    const bool more = s + 1 < slices;
    if (more) load(m_begin + (s + 1) * kWgradSliceM);  // `next` was last read in slice s - 1, closed by its barrier
#pragma unroll
    for (int kk = 0; kk < kWgradSliceM; kk += 16) {
      uint32_t bf[4][2];
#pragma unroll
      for (int j = 0; j < 4; j += 2) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, &Xs[cur][kk + b_m][warp_k + j * 8 + b_k]);
        bf[j][0] = r[0], bf[j][1] = r[1], bf[j + 1][0] = r[2], bf[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        uint32_t af[4];
        ldmatrix_x4_trans(af, &Ds[cur][kk + a_m][warp_n + i * 16 + a_n]);
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_m16n8k16<T>(acc[i][j], af, bf[j]);
      }
    }
    if (more) store(next);
    __syncthreads();
  }

  // D element e of fragment (i, j): row (n) group + 8 (e >> 1), column (k) 2 pair + (e & 1).
  float* out = p.partial + (size_t)blockIdx.z * p.N * p.K;
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int e2 = 0; e2 < 2; ++e2) {
      const int n = n0 + warp_n + i * 16 + group + 8 * e2;
      if (n >= p.N) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e1 = 0; e1 < 2; ++e1) {
          const int k = k0 + warp_k + j * 8 + 2 * pair + e1;
          if (k < p.K) out[(size_t)n * p.K + k] = acc[i][j][2 * e2 + e1];
        }
    }
}

// --- Hopper: the warpgroup MMA ------------------------------------------------
// The same implicit GEMM in 128 x 128 tiles, a block of two warpgroups (rows
// 0-63 and 64-127 of the tile, all 128 columns each: one m64n128k16 per 16
// of K), 64-deep K slices in three buffers of dynamic shared memory (96 KB),
// A and B in wgmma.cuh's core-matrix layout. As in conv_mma_gemm, B comes by
// cp.async and A through registers (converted to the half type), or by
// cp.async too when it is in the half type already (HALF_IN); the MMAs
// run asynchronously, two slices' worth in flight, while the threads fill
// the next slice.
constexpr int kWgBM = 128, kWgBN = kWgmmaN, kWgBK = 64, kWgThreads = 256;
constexpr int kWgTileBytes = kWgBM * kWgBK * 2;               // A's tile; B's is the same size
constexpr int kWgStageBytes = 2 * kWgTileBytes;
constexpr int kWgStages = 3;
constexpr int kWgSharedBytes = kWgStages * kWgStageBytes + 128;  // + slack to align the stages to 128 bytes

#if defined(MB_WGMMA_COMPILED)
constexpr uint32_t kWgLbo = 128, kWgSbo = 128 * (kWgBK / 8);  // next core matrix along K; next 8 rows
// Byte offset of halves k = 8 chunk .. 8 chunk + 7 of tile row `row` (one core-matrix row).
__device__ __forceinline__ int wg_offset(int row, int chunk) {
  return (row >> 3) * (int)kWgSbo + chunk * (int)kWgLbo + (row & 7) * 16;
}
#endif

template <WeightType T, bool HALF_IN>
__global__ void __launch_bounds__(kWgThreads, 1) conv_wgmma_gemm(ConvParams p, int k_ld) {
#if defined(MB_WGMMA_COMPILED)
  using InElem = std::conditional_t<HALF_IN, uint16_t, float>;
  MB_DYNAMIC_SHARED(raw);
  uint8_t* smem = raw + ((128 - (shared_address(raw) & 127)) & 127);
  const int tid = threadIdx.x, warpgroup = tid >> 7;
  // Tile filling: thread tid writes core-matrix row tid % 8 of K chunk
  // (tid / 8) % 8 in row blocks tid / 64 + 4 pass: eight consecutive threads
  // fill one 128-byte core matrix (conflict-free 16-byte stores).
  const int fill_row = tid & 7, fill_chunk = (tid >> 3) & 7, fill_block = tid >> 6;
  const long long m0 = (long long)blockIdx.x * kWgBM;
  const int n0 = blockIdx.y * kWgBN;
  const uint16_t* w = reinterpret_cast<const uint16_t*>(p.w);
  const InElem* in;
  if constexpr (HALF_IN)
    in = p.in_half;
  else
    in = p.in;
  ConvRowOf<InElem> rows[4];
#pragma unroll
  for (int pass = 0; pass < 4; ++pass) rows[pass] = conv_row_of(p, in, m0 + (fill_block + 4 * pass) * 8 + fill_row);
  float staged[HALF_IN ? 1 : 4][8];  // A through registers (fp32 input)
  float acc[kWgmmaAccs];
#pragma unroll
  for (int i = 0; i < kWgmmaAccs; ++i) acc[i] = 0.0f;

  auto a_tile = [&](int buf) { return smem + buf * kWgStageBytes; };
  auto b_tile = [&](int buf) { return smem + buf * kWgStageBytes + kWgTileBytes; };
  // Slice s of B into buffer `buf`: columns past N and K past k_ld (the last slice of a 32-deep k_ld) are zero-filled.
  auto copy_b = [&](int buf, int s) {
    const int k = s * kWgBK + fill_chunk * 8;
#pragma unroll
    for (int pass = 0; pass < 4; ++pass) {
      const int row = (fill_block + 4 * pass) * 8 + fill_row, n = n0 + row;
      const bool ok = n < p.N && k < k_ld;
      cp_async_16(b_tile(buf) + wg_offset(row, fill_chunk), w + (ok ? (size_t)n * k_ld + k : 0), ok ? 16 : 0);
    }
    if constexpr (HALF_IN) {  // A's eight k of one tap, or zeros (padding, past M or K: source size 0)
#pragma unroll
      for (int pass = 0; pass < 4; ++pass) {
        const uint16_t* pixel = rows[pass].ok && k < p.K ? conv_tap_pixel(p, rows[pass], k / p.cin) : nullptr;
        const uint16_t* src = pixel ? pixel + (k - (k / p.cin) * p.cin) : p.in_half;
        cp_async_16(a_tile(buf) + wg_offset((fill_block + 4 * pass) * 8 + fill_row, fill_chunk), src, pixel ? 16 : 0);
      }
    }
    cp_async_commit();
  };
  auto load_a = [&](int s) {
    if constexpr (!HALF_IN) {
#pragma unroll
      for (int pass = 0; pass < 4; ++pass) load_a8<true>(p, rows[pass], s * kWgBK + fill_chunk * 8, staged[pass]);
    }
  };
  auto store_a = [&](int buf) {
    if constexpr (!HALF_IN) {
#pragma unroll
      for (int pass = 0; pass < 4; ++pass) {
        const float* v = staged[pass];
        uint8_t* dst = a_tile(buf) + wg_offset((fill_block + 4 * pass) * 8 + fill_row, fill_chunk);
        store_u32x4(reinterpret_cast<uint16_t*>(dst), pack_half2<T>(v[0], v[1]), pack_half2<T>(v[2], v[3]),
                    pack_half2<T>(v[4], v[5]), pack_half2<T>(v[6], v[7]));
      }
    }
  };

  const int slices = (k_ld + kWgBK - 1) / kWgBK;
  // Three buffers: while slice s's MMAs run, slice s - 1's may still be
  // running (each warpgroup waits for all but its newest group), and the
  // threads fill slice s + 1 into the third, whose last reader, slice s - 2,
  // every warpgroup has waited for before the barrier that opens slice s.
  // So the tensor cores always have the next group queued: no drain per slice.
  copy_b(0, 0);  // and A, with half inputs
  load_a(0);
  store_a(0);
  for (int s = 0; s < slices; ++s) {
    const int cur = s % kWgStages;
    cp_async_wait<0>();   // this thread's part of slice s has landed
    fence_proxy_async();  // the threads' tile writes, visible to the MMAs
    __syncthreads();
    const uint32_t a_start = shared_address(a_tile(cur)) + (uint32_t)warpgroup * (64 / 8) * kWgSbo;
    const uint32_t b_start = shared_address(b_tile(cur));
    wgmma_fence(acc);
#pragma unroll
    for (int kk = 0; kk < kWgBK / 16; ++kk)
      wgmma_m64n128k16<T>(acc, wgmma_descriptor(a_start + kk * 2 * kWgLbo, kWgLbo, kWgSbo),
                          wgmma_descriptor(b_start + kk * 2 * kWgLbo, kWgLbo, kWgSbo));
    wgmma_commit();
    wgmma_wait<1>(acc);  // slice s - 1's MMAs are done; slice s's keep running
    if (s + 1 < slices) {
      const int next = (s + 1) % kWgStages;
      copy_b(next, s + 1);
      load_a(s + 1);
      store_a(next);
    }
  }
  wgmma_wait<0>(acc);

  // Accumulator v: row 16 (warp % 4) + group + 8 ((v >> 1) & 1) of the warpgroup's 64, column 8 (v >> 2) + 2 pair + (v & 1).
  const int lane = tid & 31, group = lane >> 2, pair = lane & 3, warp_in_group = (tid >> 5) & 3;
#pragma unroll
  for (int v = 0; v < kWgmmaAccs; ++v) {
    const long long m = m0 + 64 * warpgroup + 16 * warp_in_group + group + 8 * ((v >> 1) & 1);
    const int n = n0 + 8 * (v >> 2) + 2 * pair + (v & 1);
    if (m < p.M && n < p.N) conv_store(p, m, n, acc[v]);
  }
#endif
}

// Whether conv_wgmma_gemm has code for this device, and whether it is used.
bool g_wgmma_available = false;
std::atomic<bool> g_wgmma_on{false};
// The parity self-test's switch: the large tiles (and the warpgroup MMA when
// on) for every 8-channel GEMM with N > 64, whatever the tile count, so
// that its small cases reach those kernels on a GPU of 100+ multiprocessors.
std::atomic<bool> g_force_large_tiles{false};

template <WeightType T, bool HALF_IN>
void launch_conv_wgmma(const ConvParams& p, int k_ld) {
  dim3 grid;
  if (!conv_grid(p, kWgBM, kWgBN, "conv2d (warpgroup MMA): output too large for one launch", &grid)) return;
  const auto kernel = conv_wgmma_gemm<T, HALF_IN>;  // named: the launch macro cannot take the template's brackets
  MB_LAUNCH_SYNC_SHARED(kernel, grid, kWgThreads, kWgSharedBytes)(p, k_ld);
  check_launch("conv_wgmma_gemm");
}

#if !defined(MB_CUDA_EMULATION)
// 1 where this device runs sm_90a code (conv_wgmma_gemm's real body), else 0.
__global__ void wgmma_probe(int* out) {
#if defined(MB_WGMMA_COMPILED)
  *out = 1;
#else
  *out = 0;
#endif
}
#endif

// packed[n * k_ld + k]: output channel n's GEMM column, rounded to T, with
// the rows past K (up to the 32-deep slices) zero.
template <WeightType T>
__global__ void pack_half_kernel(PackSources ps, int k_ld, size_t total, uint16_t* packed) {
  const int K = ps.taps * ps.cin;
  MB_GRID_STRIDE(i, total) {
    const int n = (int)(i / (size_t)k_ld), k = (int)(i % (size_t)k_ld);
    packed[i] = k < K ? float_to_half_bits(T, pack_source_value(ps, n, k)) : (uint16_t)0;
  }
}

// The backward's GEMMs run in bfloat16 for both half types: gradients span a
// range float16 cannot hold (a mean-reduced loss gives dY of 1e-6 and less,
// below float16's smallest normal, 6e-5: a float16 model's gradients came out
// hundreds of unit roundoffs off), and bfloat16 keeps float32's exponent on
// tensor cores as fast. What torch's float16 autocast meets with a loss scale.
//
// The data gradient's layout, for a model that may train (kConvTrainable):
// dX of a stride-1 conv is the forward conv of dY with the weights
// transposed (cin <-> cout) and flipped (tap -> taps - 1 - tap), padded by
// k - 1 - pad, so it runs on the same tensor-core kernels.
// transposed[ci * kt_ld + tap' * cout + co] = W[co][ci][taps - 1 - tap'],
// kt_ld = the 32-deep slices over taps * cout (zero past it). One launch per
// chunk of up to 3 stacked sources, whose output channels start at co_begin.
template <WeightType T>
__global__ void pack_half_transposed_kernel(PackSources ps, int co_begin, int cout_total, int kt_ld, size_t total,
                                            uint16_t* transposed) {
  MB_GRID_STRIDE(i, total) {  // i = (ci, tap', co - co_begin), the chunk's output channel fastest
    const int co = (int)(i % (size_t)ps.cout);
    const size_t rest = i / (size_t)ps.cout;
    const int tap = (int)(rest % (size_t)ps.taps), ci = (int)(rest / (size_t)ps.taps);
    const float v = pack_source_value(ps, co, (ps.taps - 1 - tap) * ps.cin + ci);
    transposed[(size_t)ci * kt_ld + (size_t)tap * cout_total + co_begin + co] = float_to_half_bits(T, v);
  }
}

inline size_t half_block_floats(size_t halves) { return align_up(halves / 2, 16); }  // halves is even (k_ld is)

template <WeightType T>
void pack_conv_half(PackedWeights* packed, float* storage, const WeightSource* sources, const int* couts,
                    int num_sources, int cin, int k, int algo) {
  const int cout_total = stacked_cout(couts, num_sources);
  describe_packed(packed, storage, cout_total, cin, k);
  const int k_ld = packed_k(k * k * cin);
  if (algo & kConvTrainable) {
    const int kt_ld = packed_k(k * k * cout_total);
    float* block = storage + half_block_floats((size_t)cout_total * k_ld);
    zero(block, sizeof(uint16_t) * (size_t)cin * kt_ld);  // the padding past taps * cout
    packed->transposed = block;
    int co_begin = 0;
    for (int s = 0; s < num_sources; s += 3) {
      const PackSources ps = pack_sources(sources + s, couts + s, num_sources - s < 3 ? num_sources - s : 3, cin, k);
      const size_t total = (size_t)cin * ps.taps * ps.cout;
      if (total) {
        if (!begin_launch()) return;
        const auto kernel = pack_half_transposed_kernel<WeightType::kBfloat16>;  // the backward's type (above)
        MB_LAUNCH(kernel, grid_for(total), kThreads)(ps, co_begin, cout_total, kt_ld, total,
                                                     reinterpret_cast<uint16_t*>(block));
        check_launch("pack_conv (half, data-gradient layout)");
      }
      co_begin += ps.cout;
    }
  }
  // Output channel n's column is row n: 3 sources (PackSources' capacity) at a time.
  uint16_t* rows = reinterpret_cast<uint16_t*>(storage);
  for (int s = 0; s < num_sources; s += 3) {
    const PackSources ps = pack_sources(sources + s, couts + s, num_sources - s < 3 ? num_sources - s : 3, cin, k);
    const size_t total = (size_t)ps.cout * k_ld;
    if (total) {
      if (!begin_launch()) return;
      const auto kernel = pack_half_kernel<T>;  // named: the launch macro cannot take the template's brackets
      MB_LAUNCH(kernel, grid_for(total), kThreads)(ps, k_ld, total, rows);
      check_launch("pack_conv (half)");
    }
    rows += total;
  }
}

// The implicit GEMM p over half weights w[n * k_ld + k] (p.w) on the kernel
// its shape suits; `scratch` null: no split-K.
// With p.in_half: only the 8-channel kernels (half_input_ok).
template <WeightType T, bool HALF_IN>
void run_conv_on(const ConvParams& p, int k_ld, float* scratch) {
  // The general gather (conv_in's 3 or so channels: K is one or two slices)
  // is bound by its loads, not the MMAs: the small tile, which also keeps the
  // large one's 128 registers free of its index math (it spilled there).
  const bool vec8 = HALF_IN || (p.cin % 8 == 0 && p.in_ld % 4 == 0 && ((uintptr_t)p.in & 15) == 0);
  const long long big_tiles = (p.M + 127) / 128 * ((p.N + 127) / 128);
  if (!vec8) {
    if constexpr (!HALF_IN) launch_conv_mma<T, 64, 64, 2, 2, false, false>(p, k_ld, scratch);
  } else if (p.N > 64 && (big_tiles >= multiprocessor_count() || g_force_large_tiles) && g_wgmma_on) {
    launch_conv_wgmma<T, HALF_IN>(p, k_ld);
  } else if (p.N > 64 && (big_tiles >= multiprocessor_count() || g_force_large_tiles)) {
    launch_conv_mma<T, 128, 128, 2, 4, true, HALF_IN>(p, k_ld, nullptr);
  } else {
    launch_conv_mma<T, 64, 64, 2, 2, true, HALF_IN>(p, k_ld, scratch);
  }
}
template <WeightType T>
void run_conv_half(const ConvParams& p, int k_ld, float* scratch) {
  if (p.in_half)
    run_conv_on<T, true>(p, k_ld, scratch);
  else
    run_conv_on<T, false>(p, k_ld, scratch);
}

template <WeightType T>
void conv2d_forward_half(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                         float* out, float* scratch) {
  if (!begin_launch()) return;
  const ConvParams p = conv_params(in, g, w, ep, out);
  if (p.M <= 0 || p.N <= 0) return;
  run_conv_half<T>(p, packed_k(p.K), scratch);
}

// Half activations: the input in T already (a GroupNorm's half output).
template <WeightType T>
void conv2d_forward_half_input(const void* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                               float* out, float* scratch) {
  if (!begin_launch()) return;
  ConvParams p = conv_params(nullptr, g, w, ep, out);
  p.in_half = static_cast<const uint16_t*>(in);
  if (p.M <= 0 || p.N <= 0) return;
  if (!half_input_ok(g, w.cin, in)) {
    record(cudaErrorNotSupported, "conv2d: a half input needs a multiple of 8 channels in 16-byte aligned rows");
    return;
  }
  run_conv_half<T>(p, packed_k(p.K), scratch);
}

// dX on tensor cores. A stride-1 conv's data gradient is the forward conv of
// dY over the transposed, flipped weights (pack_half_transposed_kernel),
// padded by k - 1 - pad: rows = input pixels (at the upsampled size for an
// upsampling conv), columns = cin, K = (tap', cout). dY is rounded to
// bfloat16 as it is read, like any A operand; the sum is fp32. An upsampling conv's
// comes out at the upsampled size in `scratch` and is summed 2x2 into dx
// (as conv2d.cu's fp32 path does). A strided conv's (the downsamplers) goes
// through conv2d.cu's fp32 kernel reading the same layout.
void conv2d_backward_data_half(const float* dy, const ConvGeometry& g, const PackedWeights& w, float* dx,
                               float* scratch, bool accumulate) {
  if (!w.transposed) {  // the engine refuses to train such a model first: this is the backstop
    record(cudaErrorNotSupported,
           "conv2d_backward_data: this float16/bfloat16 model was packed for sampling only (no data-gradient layout)");
    return;
  }
  const int kt_ld = packed_k(w.kh * w.kw * w.cout);
  if (g.stride != 1) {
    conv2d_backward_data_transposed(dy, g, w, kt_ld, dx, scratch, accumulate);
    return;
  }
  if (!begin_launch()) return;
  const bool up = g.upsample == 2;
  ConvParams p = {};
  p.out_h = g.in_h * g.upsample;
  p.out_w = g.in_w * g.upsample;
  p.M = (long long)g.batch * p.out_h * p.out_w;
  p.N = w.cin;
  p.K = w.kh * w.kw * w.cout;
  p.cin = w.cout;
  p.kw = w.kw;
  p.in_h = p.logical_h = g.out_h;
  p.in_w = p.logical_w = g.out_w;
  p.in_ld = g.out_ld;
  p.up_shift = 0;
  p.stride = 1;
  p.pad_top = w.kh - 1 - g.pad_top;
  p.pad_left = w.kw - 1 - g.pad_left;
  p.in = dy;
  p.w = w.transposed;
  p.out = up ? scratch : dx;
  p.out_ld = up ? w.cin : g.in_ld;
  p.residual = !up && accumulate ? dx : nullptr;  // in place: each element reads its own before storing
  p.residual_ld = p.out_ld;
  p.divisor = 1.0f;
  if (p.M <= 0 || p.N <= 0) return;
  run_conv_half<WeightType::kBfloat16>(p, kt_ld, nullptr);
  if (up) upsample_nearest2x_backward(scratch, g.batch, g.in_h, g.in_w, w.cin, dx, g.in_ld);
}

}  // namespace

// At device selection (device.cu): on a compute capability 9 device, whether
// it runs the sm_90a build of conv_wgmma_gemm (a probe kernel says which
// code the driver chose) and allows its 96 KB of dynamic shared memory; the
// parity self-test then checks it. Models use it when MARBLE_CUDA_WGMMA=1.
// Under the emulation it is always available; only the variable decides.
void conv_wgmma_prepare() {
  const char* want = getenv("MARBLE_CUDA_WGMMA");
#if defined(MB_CUDA_EMULATION)
  g_wgmma_available = true;
#else
  static bool probed = false;  // one device per process (select_device): probe it once
  if (probed) {
    g_wgmma_on = g_wgmma_available && want && strcmp(want, "1") == 0;
    return;
  }
  probed = true;
  int major = 0, found = 0;
  int* flag = nullptr;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, current_device()) == cudaSuccess &&
      major == 9 && cudaMalloc(&flag, sizeof(int)) == cudaSuccess) {
    if (cudaMemset(flag, 0, sizeof(int)) == cudaSuccess) {
      wgmma_probe<<<1, 1>>>(flag);
      if (cudaGetLastError() != cudaSuccess || cudaMemcpy(&found, flag, sizeof(int), cudaMemcpyDeviceToHost) != cudaSuccess)
        found = 0;
    }
    cudaFree(flag);
  }
  auto allow_shared = [](auto kernel) {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgSharedBytes) == cudaSuccess;
  };
  g_wgmma_available = found == 1 && allow_shared(conv_wgmma_gemm<WeightType::kFloat16, false>) &&
                      allow_shared(conv_wgmma_gemm<WeightType::kBfloat16, false>) &&
                      allow_shared(conv_wgmma_gemm<WeightType::kFloat16, true>) &&
                      allow_shared(conv_wgmma_gemm<WeightType::kBfloat16, true>);
  (void)cudaGetLastError();  // a refusal here only means: no warpgroup MMA
#endif
  g_wgmma_on = g_wgmma_available && want && strcmp(want, "1") == 0;
}

bool conv_wgmma_set(bool on) {
#if defined(MB_CUDA_EMULATION)
  g_wgmma_available = true;
#endif
  g_wgmma_on = on && g_wgmma_available;
  return g_wgmma_on;
}
bool conv_wgmma_enabled() { return g_wgmma_on; }
void conv_force_large_tiles(bool on) { g_force_large_tiles = on; }

// Split-K partial sums for the 64 x 64 tiles (the large tiles and the
// warpgroup MMA are only chosen when there are tiles enough, and take none).
size_t conv_scratch_floats_half(const ConvGeometry& g, int cout, int cin, int k, int) {
  return conv_split_scratch_floats(g, cout, cin, k, 64, 64, kSliceK);
}

// The forward's N x k_ld halves, then (kConvTrainable) the data gradient's
// cin x kt_ld, each block a multiple of 64 bytes (the next stays aligned).
size_t conv_packed_floats_half(int cout, int cin, int k, int algo) {
  size_t floats = half_block_floats((size_t)cout * packed_k(k * k * cin));
  if (algo & kConvTrainable) floats += half_block_floats((size_t)cin * packed_k(k * k * cout));
  return floats;
}

void pack_conv_f16(PackedWeights* packed, float* storage, const WeightSource* sources, const int* couts,
                   int num_sources, int cin, int k, int algo) {
  pack_conv_half<WeightType::kFloat16>(packed, storage, sources, couts, num_sources, cin, k, algo);
}
void pack_conv_bf16(PackedWeights* packed, float* storage, const WeightSource* sources, const int* couts,
                    int num_sources, int cin, int k, int algo) {
  pack_conv_half<WeightType::kBfloat16>(packed, storage, sources, couts, num_sources, cin, k, algo);
}

void conv2d_forward_half_input_f16(const void* in, const ConvGeometry& g, const PackedWeights& w,
                                   const ConvEpilogue& ep, float* out, const float*, float* scratch) {
  conv2d_forward_half_input<WeightType::kFloat16>(in, g, w, ep, out, scratch);
}
void conv2d_forward_half_input_bf16(const void* in, const ConvGeometry& g, const PackedWeights& w,
                                    const ConvEpilogue& ep, float* out, const float*, float* scratch) {
  conv2d_forward_half_input<WeightType::kBfloat16>(in, g, w, ep, out, scratch);
}
void conv2d_forward_f16(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                        float* out, const float*, float* scratch) {
  conv2d_forward_half<WeightType::kFloat16>(in, g, w, ep, out, scratch);
}
void conv2d_forward_bf16(const float* in, const ConvGeometry& g, const PackedWeights& w, const ConvEpilogue& ep,
                         float* out, const float*, float* scratch) {
  conv2d_forward_half<WeightType::kBfloat16>(in, g, w, ep, out, scratch);
}

bool launch_wgrad_mma(const WeightParams& p, dim3 grid) {
  if (!begin_launch()) return false;
  const auto kernel = conv_wgrad_mma<WeightType::kBfloat16>;  // named: the launch macro cannot take the template's brackets
  MB_LAUNCH_SYNC(kernel, grid, kWgradThreads)(p);
  return check_launch("conv_wgrad_mma");
}

void conv2d_backward_data_bf16(const float* dy, const ConvGeometry& g, const PackedWeights& w, float* dx,
                               float* scratch, const float*, bool accumulate) {
  conv2d_backward_data_half(dy, g, w, dx, scratch, accumulate);
}

}  // namespace cuda
}  // namespace mb
