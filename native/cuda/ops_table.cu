// The CUDA entry in the device seam (engine/ops.h): each op family's .cu file
// provides the functions, this table hands them to the graph walk.
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

namespace mb {

namespace {
int sync_entry() { return cuda::sync_stream(); }
const char* error_entry() { return cuda::error_text(); }

const Ops kCudaOps = {
    "cuda",
    true,
    cuda::device_alloc,
    cuda::device_free,
    cuda::device_available,
    cuda::upload,
    cuda::download,
    cuda::zero,
    cuda::copy,
    sync_entry,
    error_entry,
    cuda::conv_packed_floats,
    cuda::pack_conv,
    cuda::conv_scratch_floats,
    cuda::conv2d_forward,
    cuda::group_norm_forward,
    cuda::attention_scratch_floats,
    cuda::attention_forward,
    cuda::nchw_to_nhwc,
    cuda::nhwc_to_nchw,
    cuda::nhwc_to_nchw_div,
    cuda::upsample_nearest2x,
    cuda::avgpool2x2,
    cuda::concat_channels,
    cuda::timestep_embedding,
    cuda::fourier_embedding,
    cuda::gather_rows,
    cuda::scatter_add_rows,
    cuda::silu_forward,
    cuda::add_forward,
    cuda::dropout_apply,
    cuda::randn_philox,
    cuda::add_noise,
    cuda::diffusion_step,
    cuda::diffusion_loss,
    cuda::divide_scalar,
    cuda::add_broadcast_backward,
    cuda::conv2d_backward_data_scratch_floats,
    cuda::conv2d_backward_data,
    cuda::conv2d_backward_weights_scratch_floats,
    cuda::conv2d_backward_weights,
    cuda::group_norm_backward_scratch_floats,
    cuda::group_norm_backward,
    cuda::attention_backward_scratch_floats,
    cuda::attention_backward,
    cuda::upsample_nearest2x_backward,
    cuda::avgpool2x2_backward,
    cuda::concat_channels_backward,
    cuda::silu_backward,
    cuda::adamw_update,
    cuda::ema_update,
    cuda::sum_squares,
    cuda::queue_new,
    cuda::queue_free,
    cuda::queue_use,
    cuda::capture_begin,
    cuda::capture_end,
    cuda::replay,
    cuda::recording_free,
    cuda::poll,
    nullptr,  // group_norm_forward_half: fp32 models keep fp32 activations
    nullptr,
    cuda::solver_step,
};
// A model loaded with dtype float16 / bfloat16: its conv and linear layers
// pack and run on tensor cores (conv2d_mma.cu), forward in that type, the
// gradients' GEMMs in bfloat16; every other op is fp32's, but for the
// GroupNorm outputs that only a GEMM reads when sampling (half activations,
// engine/ops.h), unless `half_activations` is false.
Ops half_ops(WeightType t, bool half_activations) {
  Ops ops = kCudaOps;
  ops.conv_packed_floats = cuda::conv_packed_floats_half;
  ops.conv_scratch_floats = cuda::conv_scratch_floats_half;
  ops.pack_conv = t == WeightType::kBfloat16 ? cuda::pack_conv_bf16 : cuda::pack_conv_f16;
  ops.conv2d_forward = t == WeightType::kBfloat16 ? cuda::conv2d_forward_bf16 : cuda::conv2d_forward_f16;
  // The backward in bfloat16 for both types (conv2d_mma.cu says why).
  ops.conv2d_backward_data = cuda::conv2d_backward_data_bf16;
  ops.conv2d_backward_weights = cuda::conv2d_backward_weights_bf16;
  if (half_activations) {
    ops.group_norm_forward_half = t == WeightType::kBfloat16 ? cuda::group_norm_forward_bf16 : cuda::group_norm_forward_f16;
    ops.conv2d_forward_half_input =
        t == WeightType::kBfloat16 ? cuda::conv2d_forward_half_input_bf16 : cuda::conv2d_forward_half_input_f16;
  }
  return ops;
}
const Ops kCudaOpsF16 = half_ops(WeightType::kFloat16, true);
const Ops kCudaOpsBf16 = half_ops(WeightType::kBfloat16, true);
const Ops kCudaOpsF16FloatActivations = half_ops(WeightType::kFloat16, false);
const Ops kCudaOpsBf16FloatActivations = half_ops(WeightType::kBfloat16, false);
}  // namespace

bool cuda_half_activations_wanted() {
  const char* v = getenv("MARBLE_CUDA_HALF_ACTIVATIONS");
  return !(v && strcmp(v, "0") == 0);
}

const Ops* cuda_ops_table(WeightType t, bool half_activations) {
  switch (t) {
    case WeightType::kFloat16:
      return half_activations ? &kCudaOpsF16 : &kCudaOpsF16FloatActivations;
    case WeightType::kBfloat16:
      return half_activations ? &kCudaOpsBf16 : &kCudaOpsBf16FloatActivations;
    default:
      return &kCudaOps;
  }
}

}  // namespace mb
