// Test and benchmark entry points of the development addons (marble_dev.node,
// marble_emulated.node; CMakeLists.txt's MARBLE_DEV targets): the CUDA op
// self-test (native/cuda/parity.cpp), the GPU kernel benchmarks, the
// context-loss probe and the FMA peak kernel. The product addon (marble.node)
// is built without them: it exports only what src/node/native.ts uses.
#include "dev_hooks.h"

#include <string>

#include "../cpu/lanes_parity.h"
#include "../cuda/cuda_api.h"
#include "../engine/api.h"

namespace {

// peakFma(isa, tasks, iterations) -> float operations done (synchronous; bench/peak.ts times it)
Napi::Value PeakFma(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), mb_peak_fma(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(),
                                                   info[2].As<Napi::Number>().DoubleValue()));
}

// cudaParity(device, seed, dryRun) -> [{ op, name, exact, maxAbsErr, maxRef, elements, status, error }]
// Synchronous: a test helper that runs every op family once on small inputs.
Napi::Value CudaParity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int n = mb_cuda_parity_run(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Uint32Value(),
                                   info[2].ToBoolean().Value() ? 1 : 0);
  Napi::Array list = Napi::Array::New(env, (size_t)n);
  for (int i = 0; i < n; ++i) {
    MbParityCase c;
    if (mb_cuda_parity_case(i, &c) != 0) continue;
    Napi::Object e = Napi::Object::New(env);
    e.Set("op", std::string(c.op));
    e.Set("name", std::string(c.name));
    e.Set("exact", Napi::Boolean::New(env, c.exact != 0));
    e.Set("maxAbsErr", c.max_abs_err);
    e.Set("maxRef", c.max_ref);
    e.Set("elements", c.elements);
    e.Set("status", c.status);
    e.Set("error", std::string(c.error));
    list.Set((uint32_t)i, e);
  }
  return list;
}

// The GPU benchmark's timings (synchronous: benchmark helpers). `n` integer
// arguments go to `bench`, which writes the mean ms and a reason; the result
// is { status, ms, reason }.
template <int n, typename Bench>
Napi::Value RunCudaBench(const Napi::CallbackInfo& info, Bench bench) {
  int a[n];
  for (int i = 0; i < n; ++i) a[i] = info[i].As<Napi::Number>().Int32Value();
  double ms = 0.0;
  char reason[512] = {0};
  const int status = bench(a, &ms, reason, (int)sizeof(reason));
  Napi::Object result = Napi::Object::New(info.Env());
  result.Set("status", status);
  result.Set("ms", ms);
  result.Set("reason", std::string(reason));
  return result;
}

// cudaConvBench(device, weightType, flags, batch, cin, cout, h, w, iterations): one 3x3 conv GEMM (mb_cuda_conv_bench).
Napi::Value CudaConvBench(const Napi::CallbackInfo& info) {
  return RunCudaBench<9>(info, [](const int* a, double* ms, char* reason, int len) {
    return mb_cuda_conv_bench(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], ms, reason, len);
  });
}

// cudaAttentionBench(device, fused, batch, tokens, heads, headDim, iterations): one attention forward (mb_cuda_attention_bench).
Napi::Value CudaAttentionBench(const Napi::CallbackInfo& info) {
  return RunCudaBench<7>(info, [](const int* a, double* ms, char* reason, int len) {
    return mb_cuda_attention_bench(a[0], a[1], a[2], a[3], a[4], a[5], a[6], ms, reason, len);
  });
}

// cudaFaultProbe(device) -> { status, message }: loses the CUDA context (child processes only).
Napi::Value CudaFaultProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  char message[512] = {0};
  const int status = mb_cuda_fault_probe(info[0].As<Napi::Number>().Int32Value(), message, sizeof(message));
  Napi::Object result = Napi::Object::New(env);
  result.Set("status", status);
  result.Set("message", std::string(message));
  return result;
}

// lanesParity(seed) -> [{ pass, isa, cases, mismatches }]: the per-width
// passes against their four-lane originals, bit for bit (lanes_parity.cpp).
Napi::Value LanesParity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  mb::LanesParityResult results[32];
  const int n = mb::lanes_parity(info[0].As<Napi::Number>().Uint32Value(), results, 32);
  Napi::Array list = Napi::Array::New(env, (size_t)n);
  for (int i = 0; i < n; ++i) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("pass", std::string(results[i].pass));
    e.Set("isa", std::string(results[i].isa));
    e.Set("cases", results[i].cases);
    e.Set("mismatches", results[i].mismatches);
    list.Set((uint32_t)i, e);
  }
  return list;
}

}  // namespace

void mb_register_dev_hooks(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaConvBench", Napi::Function::New(env, CudaConvBench));
  exports.Set("cudaAttentionBench", Napi::Function::New(env, CudaAttentionBench));
  exports.Set("cudaFaultProbe", Napi::Function::New(env, CudaFaultProbe));
  exports.Set("cudaParity", Napi::Function::New(env, CudaParity));
  exports.Set("peakFma", Napi::Function::New(env, PeakFma));
  exports.Set("lanesParity", Napi::Function::New(env, LanesParity));
}
