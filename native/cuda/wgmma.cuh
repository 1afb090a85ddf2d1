// Hopper's warpgroup MMA (sm_90a), for conv2d_wgmma.cu, as inline PTX on the
// GPU and as calls into the CPU emulation (emulation/runtime.cpp) under
// MB_CUDA_EMULATION, like mma.cuh.
//
// wgmma.mma_async.sync.aligned.m64n128k16.f32.{f16,bf16}.{f16,bf16} (PTX ISA,
// "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"): the 128 threads
// of a warpgroup (four consecutive warps) compute D(64 x 128) += A(64 x 16) *
// B(16 x 128), both operands read from shared memory through 64-bit matrix
// descriptors, asynchronously: wgmma.fence before the first one (the
// accumulator registers are in order), wgmma.commit_group closes a group and
// wgmma.wait_group N waits until at most N groups are in flight; only then may
// the accumulators be read or the shared tiles be overwritten.
//
// Accumulators: thread t (warp w = t / 32 of the warpgroup, group = lane / 4,
// pair = lane % 4) holds d[v], v = 0 .. 63, at row 16 w + group + 8 ((v >> 1)
// & 1), column 8 (v >> 2) + 2 pair + (v & 1): the mma.m16n8 layout of
// mma.cuh, repeated over the 16 eight-column blocks.
//
// Shared operands, "no swizzle" (interleaved) K-major layout: the matrix is
// made of 8 x 8 core matrices of 16-bit elements, each 128 contiguous bytes
// (row r of a core matrix at byte 16 r). The descriptor holds the start
// address, the leading byte offset (LBO: from one core matrix to the next
// along K) and the stride byte offset (SBO: to the next eight rows along M or
// N), each in 16-byte units: bits 0-13, 16-29 and 32-45; bits 62-63 (swizzle
// mode) are 0. One wgmma reads two core matrices along K (k 0-7, 8-15). The
// tiles here put a row block's core matrices along K next to each other:
// LBO = 128 bytes, SBO = 128 x (tile depth / 8), and the next 16-deep step
// starts 256 bytes further on. Threads write these tiles with 16-byte stores
// (one core-matrix row each), eight consecutive threads one whole core
// matrix: no bank conflicts, and no alignment beyond 16 bytes, which is why
// this layout and not a swizzled one (those suit TMA's row-major boxes).
//
// Shared memory written by threads (st.shared, cp.async) is seen by wgmma
// (the async proxy) only after fence.proxy.async.shared::cta.
#pragma once

#include <stdint.h>

#include "half_bits.h"

namespace mb {
namespace cuda {

constexpr int kWgmmaN = 128;                // columns per warpgroup MMA
constexpr int kWgmmaAccs = kWgmmaN / 2;     // accumulator floats per thread

#if defined(MB_CUDA_EMULATION)

#define MB_WGMMA_COMPILED 1
// Dynamic shared memory: the emulation's per-launch buffer; addresses in it as the descriptors want them.
#define MB_DYNAMIC_SHARED(name) uint8_t* name = ::mb_emu::dynamic_shared()
inline uint32_t shared_address(const void* p) { return ::mb_emu::shared_address(p); }
inline uint64_t wgmma_descriptor(uint32_t address, uint32_t lbo, uint32_t sbo) {
  return (uint64_t)((address >> 4) & 0x3fff) | ((uint64_t)((lbo >> 4) & 0x3fff) << 16) |
         ((uint64_t)((sbo >> 4) & 0x3fff) << 32);
}
inline void fence_proxy_async() {}
inline void wgmma_fence(float*) {}
template <WeightType T>
inline void wgmma_m64n128k16(float d[kWgmmaAccs], uint64_t desc_a, uint64_t desc_b) {
  ::mb_emu::wgmma(T == WeightType::kBfloat16, kWgmmaN, d, desc_a, desc_b);
}
inline void wgmma_commit() { ::mb_emu::wgmma_commit(); }
template <int N>
inline void wgmma_wait(float*) {
  ::mb_emu::wgmma_wait(N);
}

#else

#define MB_DYNAMIC_SHARED(name) extern __shared__ __align__(128) uint8_t name[]
__device__ __forceinline__ uint32_t shared_address(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ uint64_t wgmma_descriptor(uint32_t address, uint32_t lbo, uint32_t sbo) {
  return (uint64_t)((address >> 4) & 0x3fff) | ((uint64_t)((lbo >> 4) & 0x3fff) << 16) |
         ((uint64_t)((sbo >> 4) & 0x3fff) << 32);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MB_WGMMA_COMPILED 1
// Keeps the compiler from moving accumulator reads or writes across the async MMAs.
__device__ __forceinline__ void accumulators_in_order(float* d) {
#pragma unroll
  for (int i = 0; i < kWgmmaAccs; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence(float* d) {
  accumulators_in_order(d);
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
#define MB_WGMMA_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define MB_WGMMA_ASM(types)                                                                                         \
  asm volatile(                                                                                                     \
      "{\n"                                                                                                         \
      ".reg .pred p;\n"                                                                                              \
      "setp.ne.b32 p, %66, 0;\n"                                                                                    \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." types " "                                                      \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                     \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                            \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                             \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "                           \
      "%64, %65, p, 1, 1, 0, 0;\n"                                                                                  \
      "}\n"                                                                                                         \
      : MB_WGMMA_D8(0), MB_WGMMA_D8(8), MB_WGMMA_D8(16), MB_WGMMA_D8(24), MB_WGMMA_D8(32), MB_WGMMA_D8(40),         \
        MB_WGMMA_D8(48), MB_WGMMA_D8(56)                                                                            \
      : "l"(desc_a), "l"(desc_b), "r"(1))
// d += A * B (scale-d 1, no negation, both operands K-major).
template <WeightType T>
__device__ __forceinline__ void wgmma_m64n128k16(float d[kWgmmaAccs], uint64_t desc_a, uint64_t desc_b) {
  if constexpr (T == WeightType::kBfloat16)
    MB_WGMMA_ASM("bf16.bf16");
  else
    MB_WGMMA_ASM("f16.f16");
}
#undef MB_WGMMA_ASM
#undef MB_WGMMA_D8
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait(float* d) {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
  accumulators_in_order(d);
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

#endif  // MB_CUDA_EMULATION

}  // namespace cuda
}  // namespace mb
