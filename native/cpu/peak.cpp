// Peak float32 throughput: the ceiling that the benchmarks' GFLOP/s figures
// are reported against (bench/peak.ts), measured rather than taken from a
// data sheet. Each task runs `iterations` rounds of multiply-adds on
// independent vector accumulators held in registers: no memory traffic, and
// enough independent chains to cover the FMA latency on every port.
//
// One kernel per GEMM micro-kernel ISA (gemm_*.cpp), so each path is measured
// against the ceiling of the instructions it can use:
//   avx512   16 x zmm fused multiply-add   (32 flops per instruction)
//   avx2     12 x ymm fused multiply-add   (16 flops per instruction)
//   generic  12 x 16-byte vector multiply then add (SSE2 natively, SIMD128 in
//            wasm; the engine builds with -ffp-contract=off, and wasm SIMD128
//            has no FMA, so this is the generic kernel's ceiling too)
// The x86 kernels use target attributes, so this file needs no special flags.
#include "../engine/common.h"

#if defined(__x86_64__) && defined(MB_HAVE_X86_KERNELS)
#include <immintrin.h>
#define MB_PEAK_X86 1
#endif

namespace mb {

namespace {

// acc = acc * 0.5 + 0.5 converges to 1 and never leaves the normal range,
// so no denormal slow path; the sum is stored to keep the work observable.
volatile float g_peak_sink;

constexpr int kGenericAccumulators = 12;
typedef float vec4 __attribute__((vector_size(16)));

void fma_generic(long long iterations) {
  vec4 acc[kGenericAccumulators];
  for (int i = 0; i < kGenericAccumulators; ++i) acc[i] = vec4{} + (float)i;
  const vec4 half = vec4{} + 0.5f;
  for (long long it = 0; it < iterations; ++it)
    for (int i = 0; i < kGenericAccumulators; ++i) acc[i] = acc[i] * half + half;
  vec4 sum = vec4{};
  for (int i = 0; i < kGenericAccumulators; ++i) sum += acc[i];
  g_peak_sink = sum[0] + sum[1] + sum[2] + sum[3];
}
constexpr double kGenericFlopsPerIteration = kGenericAccumulators * 4 * 2;

#if MB_PEAK_X86
constexpr int kAvx2Accumulators = 12;
constexpr int kAvx512Accumulators = 16;

__attribute__((target("avx2,fma"))) void fma_avx2(long long iterations) {
  __m256 acc[kAvx2Accumulators];
  for (int i = 0; i < kAvx2Accumulators; ++i) acc[i] = _mm256_set1_ps((float)i);
  const __m256 half = _mm256_set1_ps(0.5f);
  for (long long it = 0; it < iterations; ++it)
    for (int i = 0; i < kAvx2Accumulators; ++i) acc[i] = _mm256_fmadd_ps(acc[i], half, half);
  __m256 sum = _mm256_setzero_ps();
  for (int i = 0; i < kAvx2Accumulators; ++i) sum = _mm256_add_ps(sum, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  g_peak_sink = lanes[0] + lanes[7];
}
constexpr double kAvx2FlopsPerIteration = kAvx2Accumulators * 8 * 2;

__attribute__((target("avx512f"))) void fma_avx512(long long iterations) {
  __m512 acc[kAvx512Accumulators];
  for (int i = 0; i < kAvx512Accumulators; ++i) acc[i] = _mm512_set1_ps((float)i);
  const __m512 half = _mm512_set1_ps(0.5f);
  for (long long it = 0; it < iterations; ++it)
    for (int i = 0; i < kAvx512Accumulators; ++i) acc[i] = _mm512_fmadd_ps(acc[i], half, half);
  __m512 sum = _mm512_setzero_ps();
  for (int i = 0; i < kAvx512Accumulators; ++i) sum = _mm512_add_ps(sum, acc[i]);
  float lanes[16];  // (not _mm512_reduce_add_ps: GCC 12's header trips -Wuninitialized)
  _mm512_storeu_ps(lanes, sum);
  g_peak_sink = lanes[0] + lanes[15];
}
constexpr double kAvx512FlopsPerIteration = kAvx512Accumulators * 16 * 2;
#endif

}  // namespace

// isa: 0 generic, 1 avx2, 2 avx512. Runs `tasks` tasks of `iterations`
// rounds each on the thread pool (one task: on the calling thread only) and
// returns the float operations done, or 0 when this CPU or build lacks the
// ISA. The caller times the call.
double peak_fma(int isa, int tasks, long long iterations) {
  void (*kernel)(long long) = nullptr;
  double flops_per_iteration = 0;
  if (isa == 0) kernel = fma_generic, flops_per_iteration = kGenericFlopsPerIteration;
#if MB_PEAK_X86
  __builtin_cpu_init();
  if (isa == 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    kernel = fma_avx2, flops_per_iteration = kAvx2FlopsPerIteration;
  if (isa == 2 && __builtin_cpu_supports("avx512f")) kernel = fma_avx512, flops_per_iteration = kAvx512FlopsPerIteration;
#endif
  if (!kernel || tasks < 1 || iterations < 1) return 0;
  parallel_for(tasks, 1, [&](int) { kernel(iterations); });
  return flops_per_iteration * (double)iterations * tasks;
}

}  // namespace mb
