// The CUDA C ABI in a build without the CUDA backend (no nvcc found, or
// MARBLE_CUDA=OFF): every entry says so, and there is never a device.
#include <string.h>

#include "../engine/common.h"
#include "../engine/ops.h"
#include "../engine/unet.h"
#include "cuda_api.h"
#include "half_bits.h"

namespace {
const char kNotBuilt[] =
    "this addon was built without the CUDA backend (no CUDA compiler found, or MARBLE_CUDA=OFF); rebuild with nvcc on "
    "the PATH";
void copy_reason(char* dst, int len, const char* src) {
  if (!dst || len <= 0) return;
  strncpy(dst, src, (size_t)len - 1);
  dst[len - 1] = 0;
}
}  // namespace

namespace mb {
const Ops* cuda_ops() { return nullptr; }
const Ops* cuda_ops_table(WeightType, bool) { return nullptr; }
namespace cuda {
int select_device(int, char* reason, int reason_len) {
  copy_reason(reason, reason_len, kNotBuilt);
  return kErrUnsupported;
}
bool conv_wgmma_set(bool) { return false; }
bool conv_wgmma_enabled() { return false; }
void conv_split_force(int) {}
void conv_force_large_tiles(bool) {}
void attention_flash_mode(int) {}
}  // namespace cuda
}  // namespace mb

MB_API int mb_cuda_built(void) { return 0; }
MB_API int mb_cuda_device_count(char* reason, int reason_len) {
  copy_reason(reason, reason_len, kNotBuilt);
  return 0;
}
MB_API int mb_cuda_device_info(int, MbCudaDevice*, char* reason, int reason_len) {
  copy_reason(reason, reason_len, kNotBuilt);
  return mb::kErrUnsupported;
}
MB_API const char* mb_cuda_build_info(void) { return "not built"; }
MB_API int mb_model_use_cuda(mb::Model* m, int, int) {
  copy_reason(m->error, (int)sizeof(m->error), kNotBuilt);
  return mb::kErrUnsupported;
}
MB_API const char* mb_model_device(mb::Model* m) { return m->ops ? m->ops->name : "cpu"; }
MB_API int mb_cuda_fault_probe(int, char* message, int message_len) {
  copy_reason(message, message_len, kNotBuilt);
  return mb::kErrUnsupported;
}
