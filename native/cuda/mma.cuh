// The tensor-core and async-copy instructions the half GEMMs use
// (conv2d_mma.cu), as inline PTX on the GPU and as calls into the CPU
// emulation (emulation/runtime.cpp) under MB_CUDA_EMULATION, so the same
// kernel source is checked on every machine.
//
// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 (PTX ISA,
// "Warp Level Matrix Multiply-Accumulate Instructions", section "Matrix
// Fragments for mma.m16n8k16 with floating point type"): D(16x8) = A(16x16) *
// B(16x8) + C, warp-collective. With group = lane / 4 and pair = lane % 4, a
// lane holds, two elements per 32-bit register (the lower column or row index
// in the lower 16 bits):
//   A: a[0] = A[group][2 pair + {0,1}]      a[1] = A[group + 8][2 pair + {0,1}]
//      a[2] = A[group][2 pair + 8 + {0,1}]  a[3] = A[group + 8][2 pair + 8 + {0,1}]
//   B: b[0] = B[2 pair + {0,1}][group]      b[1] = B[2 pair + 8 + {0,1}][group]
//   C, D: c[0..1] = C[group][2 pair + {0,1}]  c[2..3] = C[group + 8][2 pair + {0,1}]
// So a row-major A tile and a column-major B tile (B stored [n][k]) in shared
// memory give every register with one 32-bit load.
//
// ldmatrix.sync.aligned.m8n8.x4.shared.b16 (PTX ISA, "Warp-level matrix load
// instruction: ldmatrix"): four 8x8 matrices of 16-bit elements from shared
// memory, warp-collective. Lanes 8q .. 8q + 7 give the addresses of matrix
// q's eight 16-byte rows; lane l receives in r[q] the two elements of row
// l / 4, columns 2 (l % 4) + {0, 1}: exactly the group/pair layout of the
// mma fragments above, so one ldmatrix.x4 fills a whole A fragment (or two
// B fragments) where four (two) 32-bit shared loads did. With .trans each
// matrix arrives transposed (lane l: rows 2 (l % 4) + {0, 1}, column l / 4):
// the fragments of a tile stored the other way round (the weight gradient's
// dY and input tiles, pixel-major).
//
// cp.async.cg.shared.global (PTX ISA, "Data Movement and Conversion
// Instructions: cp.async"): 16 bytes global -> shared without a register
// round trip, zero-filling past src_bytes; cp.async.commit_group closes a
// group, cp.async.wait_group N waits until at most N groups are in flight.
#pragma once

#include <stdint.h>

#include "half_bits.h"

#if defined(MB_CUDA_EMULATION)

namespace mb {
namespace cuda {

template <WeightType T>
inline void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  ::mb_emu::mma_m16n8k16(T == WeightType::kBfloat16, d, a, b);
}
inline void ldmatrix_x4(uint32_t r[4], const uint16_t* row) { ::mb_emu::ldmatrix_x4(r, row); }
inline void ldmatrix_x4_trans(uint32_t r[4], const uint16_t* row) { ::mb_emu::ldmatrix_x4_trans(r, row); }
// The emulation lands a copy when its thread waits for its group, not before.
inline void cp_async_16(void* shared_dst, const void* global_src, int src_bytes) {
  ::mb_emu::cp_async(shared_dst, global_src, 16, src_bytes);
}
inline void cp_async_commit() { ::mb_emu::cp_async_commit(); }
template <int N>
inline void cp_async_wait() {
  ::mb_emu::cp_async_wait(N);
}
// Two floats rounded to the half type, `lo` in the lower 16 bits.
template <WeightType T>
inline uint32_t pack_half2(float lo, float hi) {
  return (uint32_t)float_to_half_bits(T, lo) | ((uint32_t)float_to_half_bits(T, hi) << 16);
}
// Wide accesses (memcpy: the C++ compiler may not alias uint16_t storage as wider words).
inline uint32_t load_u32(const uint16_t* p) {
  ::mb_emu::check_aligned("a 32-bit load", p, 4);
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
inline void store_u32(uint16_t* p, uint32_t v) {
  ::mb_emu::check_aligned("a 32-bit store", p, 4);
  memcpy(p, &v, 4);
}
inline void store_u32x4(uint16_t* p, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  ::mb_emu::check_aligned("a 16-byte store", p, 16);
  const uint32_t v[4] = {a, b, c, d};
  memcpy(p, v, 16);
}
inline void load_f32x4(const float* p, float v[4]) {
  ::mb_emu::check_aligned("a float4 load", p, 16);
  memcpy(v, p, 16);
}

}  // namespace cuda
}  // namespace mb

#else

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mb {
namespace cuda {

// d += A * B (d is both C and D).
template <WeightType T>
__device__ __forceinline__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  if constexpr (T == WeightType::kBfloat16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const uint16_t* row) {
  const unsigned address = (unsigned)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// The same rows, each 8x8 matrix transposed: r[q] holds elements (rows
// 2 (lane % 4) + {0, 1}, column lane / 4) of matrix q.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const uint16_t* row) {
  const unsigned address = (unsigned)__cvta_generic_to_shared(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

__device__ __forceinline__ void cp_async_16(void* shared_dst, const void* global_src, int src_bytes) {
  const unsigned dst = (unsigned)__cvta_generic_to_shared(shared_dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global_src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

template <WeightType T>
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  uint32_t r;
  if constexpr (T == WeightType::kBfloat16) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo: the lower 16 bits
    memcpy(&r, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&r, &v, 4);
  }
  return r;
}

// Wide accesses at addresses the caller keeps aligned (4, 16 and 16 bytes).
__device__ __forceinline__ uint32_t load_u32(const uint16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ void store_u32(uint16_t* p, uint32_t v) { *reinterpret_cast<uint32_t*>(p) = v; }
__device__ __forceinline__ void store_u32x4(uint16_t* p, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  *reinterpret_cast<uint4*>(p) = make_uint4(a, b, c, d);
}
__device__ __forceinline__ void load_f32x4(const float* p, float v[4]) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}

}  // namespace cuda
}  // namespace mb

#endif
