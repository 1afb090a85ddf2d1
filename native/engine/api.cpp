// C ABI over the engine (see api.h). Thin: argument checks and forwarding.
#include "api.h"

#include "../cpu/ops.h"
#include "ops.h"
#include "philox.h"
#include "unet.h"

namespace mb {
const char* select_conv_isa(const char* wanted);
const char* conv_isa_name();
double peak_fma(int isa, int tasks, long long iterations);  // native/cpu/peak.cpp
}  // namespace mb

using mb::Model;

MB_API Model* mb_model_new(void) { return new Model(); }

MB_API int mb_model_init(Model* m, const double* config, int config_len) {
  return mb::model_init(m, config, config_len);
}

MB_API const char* mb_model_error(Model* m) { return m->error; }

MB_API int mb_model_param_count(Model* m) { return m->params.size; }

static bool valid_param(Model* m, int index) { return index >= 0 && index < m->params.size; }

MB_API const char* mb_model_param_name(Model* m, int index) {
  return valid_param(m, index) ? m->params[index].name : "";
}
MB_API int mb_model_param_ndim(Model* m, int index) { return valid_param(m, index) ? m->params[index].ndim : 0; }
MB_API int mb_model_param_dim(Model* m, int index, int axis) {
  if (!valid_param(m, index) || axis < 0 || axis >= m->params[index].ndim) return 0;
  return m->params[index].shape[axis];
}
// The host copy, brought up to date when an optimizer step on a device left it behind.
MB_API float* mb_model_param_data(Model* m, int index) {
  mb::QueueScope scope(m->ops, m->queue);
  if (!valid_param(m, index) || mb::sync_host_params(m) != mb::kOk) return nullptr;
  return m->params[index].data;
}

MB_API int mb_model_finalize(Model* m) {
  mb::QueueScope scope(m->ops, m->queue);
  return mb::model_finalize(m);
}

MB_API double mb_model_plan_bytes(Model* m, int batch, int height, int width) {
  size_t bytes = 0;
  const int status = mb::model_plan_bytes(m, batch, height, width, &bytes);
  if (status != mb::kOk) return -(double)status;  // negative: the status code
  return (double)bytes;
}

MB_API void mb_model_set_memory_limit(Model* m, double bytes) {
  m->arena_limit_bytes = bytes > 0 ? (size_t)bytes : 0;
}

MB_API int mb_model_forward(Model* m, int batch, int channels, int height, int width, const float* sample_nchw,
                            const float* timesteps, const float* class_cond, int class_cond_len, float* out_nchw) {
  mb::QueueScope scope(m->ops, m->queue);
  return mb::model_forward(m, batch, channels, height, width, sample_nchw, timesteps, class_cond, class_cond_len,
                           out_nchw);
}

MB_API void mb_model_set_capture(Model* m, int enabled) {
  m->capture_enabled = enabled != 0;
  if (!enabled) mb::model_clear_captures(m);
}
MB_API int mb_model_capture_count(Model* m) { return m->captures.size; }
static bool valid_capture(Model* m, int index) { return index >= 0 && index < m->captures.size; }
MB_API const char* mb_model_capture_name(Model* m, int index) {
  return valid_capture(m, index) ? m->captures[index].name : "";
}
MB_API int mb_model_capture_ndim(Model* m, int index) { return valid_capture(m, index) ? m->captures[index].ndim : 0; }
MB_API int mb_model_capture_dim(Model* m, int index, int axis) {
  if (!valid_capture(m, index) || axis < 0 || axis >= 4) return 0;
  return m->captures[index].shape[axis];
}
MB_API const float* mb_model_capture_data(Model* m, int index) {
  return valid_capture(m, index) ? m->captures[index].data : nullptr;
}

MB_API void mb_model_delete(Model* m) {
  if (!m) return;
  mb::QueueScope scope(m->ops, m->queue);
  mb::model_release(m);
  delete m;
}

MB_API int mb_get_threads(void) { return mb::num_threads(); }
MB_API void mb_set_threads(int n) { mb::set_num_threads(n); }
MB_API const char* mb_isa(void) { return mb::conv_isa_name(); }
MB_API const char* mb_select_isa(const char* wanted) { return mb::select_conv_isa(wanted); }
MB_API int mb_select_training_winograd_tile(int tile) { return mb::select_training_winograd_tile(tile); }
MB_API int mb_has_non_finite(const float* x, double n) { return mb::has_non_finite(x, (long long)n) ? 1 : 0; }
MB_API double mb_peak_fma(int isa, int tasks, double iterations) {
  if (!(iterations >= 1 && iterations <= 1e15)) return 0;
  return mb::peak_fma(isa, tasks, (long long)iterations);
}

MB_API void mb_randn_philox(uint32_t seed_lo, uint32_t seed_hi, uint32_t draw_lo, uint32_t draw_hi, double offset,
                            double n, float* out) {
  const uint64_t seed = ((uint64_t)seed_hi << 32) | seed_lo;
  const uint64_t draw = ((uint64_t)draw_hi << 32) | draw_lo;
  mb::randn_philox(seed, draw, (uint64_t)offset, (long long)n, out);
}

MB_API void mb_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                             uint32_t* out4) {
  mb::Philox4 r = mb::philox4x32_10(c0, c1, c2, c3, k0, k1);
  for (int i = 0; i < 4; ++i) out4[i] = r.v[i];
}

MB_API int mb_diffusion_step(const float* coefficients, int batch, int sample_size, int model_output_stride,
                             float guidance_scale,
                             const float* model_output, const float* sample, const float* noise, float* prev_sample,
                             float* pred_original_sample) {
  const mb::StepCoefficients c = mb::step_coefficients_from_slots(coefficients);
  const mb::StepLayout layout = {batch, sample_size, model_output_stride, guidance_scale};
  if (!mb::step_layout_fits(c, layout, noise != nullptr)) return mb::kErrInvalidArgument;
  return mb::cpu_ops()->diffusion_step(c, layout, model_output, sample, noise, prev_sample, pred_original_sample);
}

MB_API int mb_solver_step(const float* coefficients, int batch, int sample_size, int model_output_stride,
                          float guidance_scale,
                          const float* model_output, const float* sample, const float* last, const float* h0,
                          const float* h1, const float* h2, const float* noise, float* prev_sample, float* converted,
                          float* last_out) {
  const mb::SolverCoefficients c = mb::solver_coefficients_from_slots(coefficients);
  const mb::StepLayout layout = {batch, sample_size, model_output_stride, guidance_scale};
  const mb::SolverArrays a = {model_output, sample, last, {h0, h1, h2}, noise, prev_sample, converted, last_out};
  if (!mb::solver_step_fits(c, layout, a)) return mb::kErrInvalidArgument;
  return mb::cpu_ops()->solver_step(c, layout, a);
}

MB_API void mb_add_noise(const float* x0, const float* noise, const float* sqrt_alpha_prod,
                         const float* sqrt_one_minus_alpha_prod, int batch, int sample_size, float* out) {
  mb::add_noise(x0, noise, sqrt_alpha_prod, sqrt_one_minus_alpha_prod, batch, sample_size, out);
}

MB_API int mb_model_train_init(Model* m, int ema) {
  mb::QueueScope scope(m->ops, m->queue);
  int status = mb::train_init(m, ema != 0);
  if (status == mb::kErrState && !m->finalized) {
    const char* msg = "load the weights before training";
    int i = 0;
    for (; msg[i]; ++i) m->error[i] = msg[i];
    m->error[i] = 0;
  }
  return status;
}

MB_API int mb_model_train_step(Model* m, int batch, int channels, int height, int width, const float* x0,
                               const float* noise, const float* timesteps, const float* sqrt_alpha_prod,
                               const float* sqrt_one_minus_alpha_prod, const float* class_cond, int class_cond_len,
                               int target, const float* loss_weights, double dropout_seed, float* loss_out) {
  mb::QueueScope scope(m->ops, m->queue);
  mb::TrainBatch b = {batch,    channels,         height,         width, x0, noise, timesteps, sqrt_alpha_prod,
                      sqrt_one_minus_alpha_prod, class_cond, class_cond_len, target, loss_weights,
                      (uint64_t)dropout_seed};
  return mb::train_step(m, b, loss_out);
}

MB_API int mb_model_zero_grad(Model* m) {
  mb::QueueScope scope(m->ops, m->queue);
  return mb::zero_grad(m);
}
MB_API double mb_model_grad_norm(Model* m) {
  mb::QueueScope scope(m->ops, m->queue);
  double norm = 0;
  return mb::grad_norm(m, &norm) == mb::kOk ? norm : -1.0;
}
MB_API int mb_model_adamw_step(Model* m, double lr, double beta1, double beta2, double eps, double weight_decay,
                               double step, double grad_scale) {
  mb::QueueScope scope(m->ops, m->queue);
  return mb::adamw_step(m, lr, beta1, beta2, eps, weight_decay, step, grad_scale);
}
MB_API int mb_model_ema_update(Model* m, double decay) {
  mb::QueueScope scope(m->ops, m->queue);
  return mb::ema_update(m, decay);
}
MB_API float* mb_model_tensor_data(Model* m, int index, int kind) {
  if (index < 0 || index >= m->params.size) return nullptr;
  if (m->ops->device_memory && kind != 0) return nullptr;  // in device memory: mb_model_read_tensor
  mb::QueueScope scope(m->ops, m->queue);
  mb::Param& p = m->params[index];
  switch (kind) {
    case 0: return mb::sync_host_params(m) == mb::kOk ? p.data : nullptr;
    case 1: return p.grad;
    case 2: return p.exp_avg;
    case 3: return p.exp_avg_sq;
    case 4: return p.ema;
    default: return nullptr;
  }
}
MB_API int mb_model_read_tensor(Model* m, int index, int kind, float* out) {
  mb::QueueScope scope(m->ops, m->queue);
  return mb::model_read_tensor(m, index, kind, out);
}
MB_API int mb_model_write_tensor(Model* m, int index, int kind, const float* data) {
  mb::QueueScope scope(m->ops, m->queue);
  return mb::model_write_tensor(m, index, kind, data);
}
MB_API int mb_model_repack(Model* m) {
  mb::QueueScope scope(m->ops, m->queue);
  return mb::model_repack(m);
}
MB_API double mb_model_release_host_weights(Model* m) {
  mb::QueueScope scope(m->ops, m->queue);
  size_t bytes = 0;
  const int status = mb::model_release_host_weights(m, &bytes);
  return status == mb::kOk ? (double)bytes : -(double)status;
}
MB_API int mb_model_weights_released(Model* m) { return mb::model_weights_released(m) ? 1 : 0; }
