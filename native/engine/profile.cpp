// Op profiling (`marble train --profile`, bench/train_profile.ts): while a
// model profiles, its Ops table is swapped for a copy whose entries time the
// real ones and add the time to a family (conv forward, data gradient, ...).
// The graph walk is untouched, so what is timed is exactly what runs.
//
// Native builds only (the wasm module has no clock without imports). A
// device with its own memory is synchronised after every op, so each op's
// time is its own; that serialises the device, which profiling accepts.
// One model profiles at a time: the wrappers reach the real table through
// one global, set while profiling.
#include <chrono>

#include "api.h"
#include "exec.h"

namespace mb {

namespace {

enum Family : int {
  kConvForward,
  kConvDataGrad,
  kConvWeightGrad,
  kNormForward,
  kNormBackward,
  kAttentionForward,
  kAttentionBackward,
  kElementwise,   // activations, residual adds, resampling, concat, layout, dropout
  kEmbedding,     // timestep / class embeddings and their backward
  kLoss,          // noise, add_noise, the loss and its gradient
  kOptimizer,     // AdamW, EMA, the gradient norm
  kWeightPacking, // repacking the convs' weights after each update
  kMemory,        // zero-fills, copies, uploads, downloads
  kSampling,      // the fused scheduler steps
  kFamilies
};

struct Profile {
  const Ops* base = nullptr;
  const Model* owner = nullptr;
  double seconds[kFamilies] = {};
  double calls[kFamilies] = {};
};
Profile g_profile;
Ops g_profiled_ops;

struct Timer {
  int family;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  explicit Timer(int f) : family(f) {}
  ~Timer() {
    if (g_profile.base->device_memory) g_profile.base->sync();
    g_profile.seconds[family] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    g_profile.calls[family] += 1;
  }
};

// Timed<Family, &Ops::entry>::call has the entry's signature and times the
// base table's entry.
template <int F, auto Member>
struct Timed;
template <int F, typename R, typename... Args, R (*Ops::*Member)(Args...)>
struct Timed<F, Member> {
  static R call(Args... args) {
    Timer timer(F);
    return (g_profile.base->*Member)(args...);
  }
};

#define MB_TIME(entry, family) \
  if (base->entry) ops.entry = &Timed<family, &Ops::entry>::call

Ops timed_table(const Ops* base) {
  Ops ops = *base;
  MB_TIME(upload, kMemory);
  MB_TIME(download, kMemory);
  MB_TIME(zero, kMemory);
  MB_TIME(copy, kMemory);
  MB_TIME(pack_conv, kWeightPacking);
  MB_TIME(conv2d_forward, kConvForward);
  MB_TIME(conv2d_forward_half_input, kConvForward);
  MB_TIME(group_norm_forward, kNormForward);
  MB_TIME(group_norm_forward_half, kNormForward);
  MB_TIME(attention_forward, kAttentionForward);
  MB_TIME(nchw_to_nhwc, kElementwise);
  MB_TIME(nhwc_to_nchw, kElementwise);
  MB_TIME(nhwc_to_nchw_div, kElementwise);
  MB_TIME(upsample_nearest2x, kElementwise);
  MB_TIME(avgpool2x2, kElementwise);
  MB_TIME(concat_channels, kElementwise);
  MB_TIME(timestep_embedding, kEmbedding);
  MB_TIME(fourier_embedding, kEmbedding);
  MB_TIME(gather_rows, kEmbedding);
  MB_TIME(scatter_add_rows, kEmbedding);
  MB_TIME(silu_forward, kElementwise);
  MB_TIME(add_forward, kElementwise);
  MB_TIME(dropout_apply, kElementwise);
  MB_TIME(randn_philox, kLoss);
  MB_TIME(add_noise, kLoss);
  MB_TIME(diffusion_step, kSampling);
  MB_TIME(solver_step, kSampling);
  MB_TIME(diffusion_loss, kLoss);
  MB_TIME(divide_scalar, kElementwise);
  MB_TIME(add_broadcast_backward, kElementwise);
  MB_TIME(conv2d_backward_data, kConvDataGrad);
  MB_TIME(conv2d_backward_weights, kConvWeightGrad);
  MB_TIME(group_norm_backward, kNormBackward);
  MB_TIME(attention_backward, kAttentionBackward);
  MB_TIME(upsample_nearest2x_backward, kElementwise);
  MB_TIME(avgpool2x2_backward, kElementwise);
  MB_TIME(concat_channels_backward, kElementwise);
  MB_TIME(silu_backward, kElementwise);
  MB_TIME(adamw_update, kOptimizer);
  MB_TIME(ema_update, kOptimizer);
  MB_TIME(sum_squares, kOptimizer);
  return ops;
}

#undef MB_TIME

}  // namespace

}  // namespace mb

using mb::g_profile;

// Starts (or restarts, zeroing the counters) profiling `m`'s ops.
// kErrState while another model profiles or while `m` is sampling on a
// device recording (a replay would bypass the wrappers).
MB_API int mb_model_profile_start(mb::Model* m) {
  if (g_profile.owner && g_profile.owner != m)
    return mb::set_error(m, mb::kErrState, mb::Name("another model is being profiled: one at a time"));
  if (!g_profile.owner) {
    g_profile.base = m->ops;
    mb::g_profiled_ops = mb::timed_table(m->ops);
    m->ops = &mb::g_profiled_ops;
    g_profile.owner = m;
  }
  for (int f = 0; f < mb::kFamilies; ++f) g_profile.seconds[f] = g_profile.calls[f] = 0;
  return mb::kOk;
}

// Seconds and calls per family since the start (2 * count doubles:
// seconds[f] at 2f, calls[f] at 2f + 1); returns the number of families.
MB_API int mb_model_profile_read(mb::Model* m, double* out, int count) {
  if (g_profile.owner != m) return 0;
  int n = count < mb::kFamilies ? count : mb::kFamilies;
  for (int f = 0; f < n; ++f) out[2 * f] = g_profile.seconds[f], out[2 * f + 1] = g_profile.calls[f];
  return mb::kFamilies;
}

// Puts the model's own table back. Also called when a model is freed.
MB_API void mb_model_profile_stop(mb::Model* m) {
  if (g_profile.owner != m) return;
  m->ops = g_profile.base;
  g_profile.owner = nullptr;
  g_profile.base = nullptr;
}
