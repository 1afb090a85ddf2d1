// C ABI over the engine (see api.h). Thin: argument checks and forwarding.
#include "api.h"

#include "../cpu/ops.h"
#include "philox.h"
#include "unet.h"

namespace mb {
const char* select_conv_isa(const char* wanted);
const char* conv_isa_name();
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
MB_API float* mb_model_param_data(Model* m, int index) {
  return valid_param(m, index) ? m->params[index].data : nullptr;
}

MB_API int mb_model_finalize(Model* m) { return mb::model_finalize(m); }

MB_API double mb_model_plan_bytes(Model* m, int batch, int height, int width) {
  size_t bytes = 0;
  if (mb::model_plan_bytes(m, batch, height, width, &bytes) != mb::kOk) return -1;
  return (double)bytes;
}

MB_API void mb_model_set_memory_limit(Model* m, double bytes) {
  m->arena_limit_bytes = bytes > 0 ? (size_t)bytes : 0;
}

MB_API int mb_model_forward(Model* m, int batch, int channels, int height, int width, const float* sample_nchw,
                            const float* timesteps, const float* class_cond, int class_cond_len, float* out_nchw) {
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
  mb::model_release(m);
  delete m;
}

MB_API int mb_get_threads(void) { return mb::num_threads(); }
MB_API void mb_set_threads(int n) { mb::set_num_threads(n); }
MB_API const char* mb_isa(void) { return mb::conv_isa_name(); }
MB_API const char* mb_select_isa(const char* wanted) { return mb::select_conv_isa(wanted); }
MB_API int mb_has_non_finite(const float* x, double n) { return mb::has_non_finite(x, (long long)n) ? 1 : 0; }

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
