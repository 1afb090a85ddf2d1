// The CUDA C ABI (cuda_api.h) of the emulated build, marble_emulated.node:
// one "device" whose ops are native/cuda's kernels run on the CPU
// (cuda_emulation.h). The cuda backend, the engine's device paths (staging,
// parameter copies, packing, the memory check) and the whole CUDA test suite
// then run without a GPU. Kernel faults cannot be emulated.
#include <string.h>

#include "../../engine/ops.h"
#include "../../engine/unet.h"
#include "../cuda_api.h"
#include "../cuda_common.cuh"

using namespace mb;

namespace {
void copy_text(char* dst, int len, const char* src) {
  if (!dst || len <= 0) return;
  strncpy(dst, src, (size_t)len - 1);
  dst[len - 1] = 0;
}
}  // namespace

MB_API int mb_cuda_built(void) { return 1; }
MB_API int mb_cuda_device_count(char* reason, int reason_len) {
  copy_text(reason, reason_len, "");
  return 1;
}
MB_API int mb_cuda_device_info(int index, MbCudaDevice* out, char* reason, int reason_len) {
  memset(out, 0, sizeof(*out));
  if (index != 0) {
    copy_text(reason, reason_len, "the emulation has one device");
    return kErrInvalidArgument;
  }
  copy_text(out->name, sizeof(out->name), "CPU emulation of marble's CUDA kernels");
  out->major = 0;
  out->minor = 0;
  out->multiprocessors = 1;
  out->total_bytes = (double)cuda::device_available();
  out->free_bytes = out->total_bytes;
  copy_text(out->pci_bus_id, sizeof(out->pci_bus_id), "emulated");
  return kOk;
}
MB_API const char* mb_cuda_build_info(void) { return "CUDA kernels emulated on the CPU"; }
MB_API int mb_model_use_cuda(Model* m, int device, int weight_type) {
  if (m->finalized) {
    copy_text(m->error, (int)sizeof(m->error), "choose the device before the weights are loaded");
    return kErrState;
  }
  if (device != 0) {
    copy_text(m->error, (int)sizeof(m->error), "no usable CUDA device: the emulation has one device");
    return kErrInvalidArgument;
  }
  if (weight_type < 0 || weight_type > 2) {
    copy_text(m->error, (int)sizeof(m->error), "unknown weight type (0 float32, 1 float16, 2 bfloat16)");
    return kErrInvalidArgument;
  }
  cuda::conv_wgmma_prepare();  // MARBLE_CUDA_WGMMA=1: the half convolutions on the emulated warpgroup MMA
  m->ops = cuda_ops_table((WeightType)weight_type, cuda_half_activations_wanted());
  if (!m->queue) m->queue = m->ops->queue_new();
  return kOk;
}
MB_API const char* mb_model_device(Model* m) { return m->ops ? m->ops->name : "cpu"; }
MB_API int mb_cuda_fault_probe(int, char* message, int message_len) {
  copy_text(message, message_len, "kernel faults cannot be emulated");
  return kErrUnsupported;
}
