// CUDA emulated on the CPU, just enough for native/cuda's kernels: a launch
// runs every block in turn, and a block's threads as cooperative fibers
// (ucontext) on one OS thread, so __syncthreads is a real barrier, shared
// memory (static storage here) is shared by the block's threads,
// __shfl_down_sync exchanges values across the warp, and mma.sync m16n8k16
// (f16 and bf16, fp32 accumulation) multiplies the fragments the warp's 32
// lanes hold, in the PTX ISA's fragment layouts (native/cuda/mma.cuh). Used by the
// marble_emulated.node addon (the CUDA backend with these kernels) to run the
// CUDA test suite on machines without a GPU. It checks index math, bounds, tiling and
// reductions; it cannot see GPU timing or the memory model.
//
// Hazards: a block runs one warp at a time, each to its next __syncthreads
// (warp-collective instructions wait for the warp's lanes only, not the
// block), in warp order 0, 1, ... or, with MB_EMU_SCHEDULE=reverse, last warp
// first and lanes in reverse, blocks in reverse too. Between two barriers
// one warp's work then happens entirely before or entirely after another's,
// both ways round over the two schedules, so shared or global data read
// without the barrier that orders it after its write (or overwritten before
// another warp has read it) gives a wrong result in one of them. cp.async
// copies land only when the issuing thread's cp.async.wait_group covers
// them, so a read that a missing wait leaves unordered sees stale data.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};

typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidConfiguration = 9;
constexpr cudaError_t cudaErrorNotSupported = 801;
#define cudaStreamPerThread ((cudaStream_t)0)

#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __launch_bounds__(...)
#define __forceinline__ inline
#define __align__(n) __attribute__((aligned(n)))

namespace mb_emu {

struct ThreadState {
  uint3 tid;
};
extern thread_local ThreadState* t_current;
extern thread_local uint3 t_block;
extern thread_local dim3 t_block_dim, t_grid_dim;

void syncthreads();
// Every thread of the block publishes a value; returns lane + delta's (own value past the warp).
double shfl_down(double v, int delta);
// mma.sync.aligned.m16n8k16.row.col.f32.{f16|bf16}.{f16|bf16}.f32 with C = D:
// every lane of the warp publishes its A, B and C fragments, scattered to
// their (row, column) by the PTX ISA layout (mma.cuh), waits until all 32
// lanes have, and computes its own four D elements as the exact sum of the 16
// products (half x half is exact) plus C, rounded once to float. All 32 lanes
// must call it together (a missing lane aborts: mma.sync is warp-collective).
void mma_m16n8k16(bool bf16, float d[4], const uint32_t a[4], const uint32_t b[2]);
// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8q .. 8q + 7 each publish
// the address of one 16-byte row of matrix q; every lane then receives, in
// r[q], the 32-bit word (lane % 4) of row (lane / 4) of matrix q. All 32
// lanes must call it together.
void ldmatrix_x4(uint32_t r[4], const void* row);
// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: the same rows, each matrix
// transposed: lane receives in r[q] elements (rows 2 (lane % 4) and
// 2 (lane % 4) + 1, column lane / 4) of matrix q, the first in the low half.
void ldmatrix_x4_trans(uint32_t r[4], const void* row);
// cp.async: src_bytes from src, zeros up to bytes, copied when a
// cp_async_wait of the issuing thread covers its group (in a kernel launched
// without MB_LAUNCH_SYNC, at once).
void cp_async(void* dst, const void* src, int bytes, int src_bytes);
// cp.async.commit_group: the thread's copies issued since the last commit form a group.
void cp_async_commit();
// cp.async.wait_group n: every committed group but the newest n has landed.
void cp_async_wait(int n);
// wgmma.mma_async m64nNk16, f32 += {f16|bf16} x {f16|bf16}, both operands in
// shared memory through "no swizzle" K-major descriptors (wgmma.cuh): queued,
// and carried out (reading shared memory then) when a wgmma_wait of the
// issuing thread covers its group. Each thread computes its own accumulators
// d[0 .. n/2) in wgmma.cuh's layout, every element as the exact sum of its 16
// products plus d, rounded once. A descriptor with a swizzle mode aborts.
void wgmma(bool bf16, int n, float* d, uint64_t desc_a, uint64_t desc_b);
void wgmma_commit();
void wgmma_wait(int n);
// The launch's dynamic shared memory (128-byte aligned), and an address in
// it as a 32-bit shared-window address (what matrix descriptors hold).
uint8_t* dynamic_shared();
uint32_t shared_address(const void* p);
// `cooperative`: the kernel synchronises its threads, run them as fibers;
// else each thread runs to its end in turn (a barrier there is an error).
// `shared_bytes`: the launch's dynamic shared memory.
void run_grid(dim3 grid, dim3 block, const std::function<void()>& body, bool cooperative, size_t shared_bytes = 0);
// A wide access (float4, uint4, a 16-byte cp.async) at an address not
// aligned to its size faults on a GPU ("misaligned address", which ends the
// CUDA context): abort here, naming the access.
void misaligned(const char* what, const void* p, size_t bytes);
inline void check_aligned(const char* what, const void* p, size_t bytes) {
  if ((uintptr_t)p % bytes) misaligned(what, p, bytes);
}
// Counts launches whose configuration CUDA would refuse (more than 1024 threads, grid.y/z > 65535).
extern thread_local int g_bad_launches;

template <typename K>
auto launch(dim3 grid, dim3 block, K kernel, bool cooperative, size_t shared_bytes = 0) {
  return [=](auto... args) { run_grid(grid, block, [=]() { kernel(args...); }, cooperative, shared_bytes); };
}

}  // namespace mb_emu

#define threadIdx (::mb_emu::t_current->tid)
#define blockIdx (::mb_emu::t_block)
#define blockDim (::mb_emu::t_block_dim)
#define gridDim (::mb_emu::t_grid_dim)

inline void __syncthreads() { ::mb_emu::syncthreads(); }
inline float __shfl_down_sync(unsigned, float v, int delta) { return (float)::mb_emu::shfl_down((double)v, delta); }
inline double __shfl_down_sync(unsigned, double v, int delta) { return ::mb_emu::shfl_down(v, delta); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
// A block's threads run one at a time between barriers: a plain add is atomic.
inline unsigned atomicAdd(unsigned* address, unsigned value) {
  const unsigned old = *address;
  *address = old + value;
  return old;
}
inline float __int_as_float(int i) {
  float f;
  memcpy(&f, &i, 4);
  return f;
}
