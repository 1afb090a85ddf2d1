// The CUDA backend's C ABI, next to the engine's (engine/api.h): device
// discovery, choosing cuda for a model, and the per-op parity self-test.
// Every build has these symbols: a build without nvcc (or with
// MARBLE_CUDA=OFF) gets native/cuda/none.cpp, which reports why there is no
// device. Messages are copied into caller buffers so nothing here allocates
// on the caller's behalf.
#pragma once

#include "../engine/api.h"

struct MbCudaDevice {
  char name[256];
  int major, minor;           // compute capability
  int multiprocessors;
  double total_bytes, free_bytes;
  int driver_version;         // e.g. 13000 for 13.0 (cudaDriverGetVersion)
  int runtime_version;        // the cudart this addon was built with
  char pci_bus_id[32];
};

// 1 when this addon was compiled with the CUDA backend, else 0.
MB_API int mb_cuda_built(void);
// Devices usable by this build: >= 1, or 0 with the reason in `reason`
// ("no CUDA driver", "no device", "built without CUDA", ...).
MB_API int mb_cuda_device_count(char* reason, int reason_len);
// Fills `out` for device `index`; 0, or a status with the reason in `reason`.
MB_API int mb_cuda_device_info(int index, MbCudaDevice* out, char* reason, int reason_len);
// The compile-time description: CUDA version and architectures.
MB_API const char* mb_cuda_build_info(void);
// Runs `m` on cuda device `device` (before its weights are finalized), its
// conv/linear weights packed as `weight_type` (mb::WeightType: 0 float32,
// 1 float16, 2 bfloat16; the halves run on tensor cores); 0, or a status with
// the reason in mb_model_error(m).
MB_API int mb_model_use_cuda(mb::Model* m, int device, int weight_type);
// Name of the device a model runs on: "cpu" or "cuda".
MB_API const char* mb_model_device(mb::Model* m);

// The per-op parity self-test (native/cuda/parity.cpp): every CUDA op family
// on random inputs against the CPU op, each case independently (a failing
// case never stops the others). Returns the number of cases (0 without a
// device); mb_cuda_parity_case fills case i's results.
struct MbParityCase {
  char op[48];         // op family, e.g. "conv2d"
  char name[128];      // the case: shapes and options
  int exact;           // 1: the results must be bit-identical
  double max_abs_err;  // max |cuda - cpu|
  double max_ref;      // max |cpu|, for a relative bound
  double elements;
  int status;          // 0, or the device status when the op failed to run
  char error[256];
};
MB_API int mb_cuda_parity_run(int device, uint32_t seed, int dry_run);
// Launches a kernel that writes through a bad pointer and reports what the
// error path makes of it: the status (kErrDevice) with the message in
// `message`. It loses the CUDA context for good: call it only in a child
// process (test/cuda.test.ts does).
MB_API int mb_cuda_fault_probe(int device, char* message, int message_len);
MB_API int mb_cuda_parity_case(int index, MbParityCase* out);

// The GPU benchmark's conv GEMM timing (bench/gpu.ts): one 3x3 convolution
// (stride 1, padding 1, bias) of batch x h x w x cin -> cout, weights packed
// for `weight_type` (0 float32, 1 float16, 2 bfloat16), timed over
// `iterations` launches after one warm-up. `flags`: kConvBenchWgmma runs the
// half types on Hopper's warpgroup MMA (refused where it is not available),
// kConvBenchHalfInput reads the input in the half type (half activations, as
// a sampling model's resnet convs do). Writes the mean ms per launch;
// returns kOk or a status with the reason in `reason`.
enum { kConvBenchWgmma = 1, kConvBenchHalfInput = 2 };
// The GPU benchmark's attention timing: one multi-head self-attention forward
// (random fp32 qkv), `fused` 1 on the flash-style kernel (heads of up to 64
// channels), 0 on the batched GEMMs and softmax, whatever the token count.
MB_API int mb_cuda_attention_bench(int device, int fused, int batch, int tokens, int heads, int head_dim,
                                   int iterations, double* ms, char* reason, int reason_len);
MB_API int mb_cuda_conv_bench(int device, int weight_type, int flags, int batch, int cin, int cout, int h, int w,
                              int iterations, double* ms, char* reason, int reason_len);
