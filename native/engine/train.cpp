// Training state and the optimizer: gradients, AdamW (torch.optim.AdamW
// semantics), global gradient norm, EMA of the weights. The training step
// itself (add-noise + forward + MSE + backward) is in backward.cpp.
#include "exec.h"
#include "mathf.h"
#include "ops.h"
#include "unet.h"

namespace mb {

int train_init(Model* m, bool ema) {
  if (!m->finalized) return kErrState;
  if (model_weights_released(m)) {
    Message msg;
    msg.add("this model released its unpacked weights to save memory (loadPipeline does): load it with loadUNet to train");
    return fail(m, kErrState, msg);
  }
  // The backward and the optimizer run on the cpu ops over host memory.
  if (m->ops->device_memory) return kErrUnsupported;
  for (int i = 0; i < m->params.size; ++i) {
    Param& p = m->params[i];
    const size_t bytes = p.numel * sizeof(float);
    if (!p.grad) p.grad = static_cast<float*>(mb_alloc(bytes));
    if (!p.exp_avg) p.exp_avg = static_cast<float*>(mb_alloc(bytes));
    if (!p.exp_avg_sq) p.exp_avg_sq = static_cast<float*>(mb_alloc(bytes));
    if (!p.grad || !p.exp_avg || !p.exp_avg_sq) return kErrOutOfMemory;
    mb_zero(p.grad, bytes);
    mb_zero(p.exp_avg, bytes);
    mb_zero(p.exp_avg_sq, bytes);
    if (ema && !p.ema) {
      p.ema = static_cast<float*>(mb_alloc(bytes));
      if (!p.ema) return kErrOutOfMemory;
      mb_copy(p.ema, p.data, bytes);
    }
  }
  m->training_ready = true;
  return kOk;
}

void zero_grad(Model* m) {
  for (int i = 0; i < m->params.size; ++i)
    if (m->params[i].grad) mb_zero(m->params[i].grad, m->params[i].numel * sizeof(float));
}

double grad_norm(Model* m) {
  double total = 0;
  for (int i = 0; i < m->params.size; ++i) {
    const Param& p = m->params[i];
    if (!p.grad || !p.trainable) continue;
    double sum = 0;
    for (size_t k = 0; k < p.numel; ++k) sum += (double)p.grad[k] * p.grad[k];
    total += sum;
  }
  return sqrt_f64(total);
}

// torch.optim.AdamW, single-tensor path, in its float32 order of operations:
//   param *= 1 - lr * wd
//   exp_avg = lerp(exp_avg, grad, 1 - beta1)
//   exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
//   denom = sqrt(exp_avg_sq) / sqrt(1 - beta2^step) + eps
//   param += -(lr / (1 - beta1^step)) * exp_avg / denom
int adamw_step(Model* m, double lr, double beta1, double beta2, double eps, double weight_decay, double step,
               double grad_scale) {
  if (!m->training_ready) return kErrState;
  if (!(step >= 1)) return kErrInvalidArgument;
  double bc1 = 1.0, bc2 = 1.0;  // 1 - beta^step, by repeated multiplication like Python's **
  double b1p = 1.0, b2p = 1.0;
  for (long long s = 0; s < (long long)step && s < 100000; ++s) b1p *= beta1, b2p *= beta2;
  if (step > 100000) b1p = b2p = 0.0;
  bc1 = 1.0 - b1p;
  bc2 = 1.0 - b2p;
  AdamwCoefs c;
  c.decay = (float)(1.0 - lr * weight_decay);
  c.one_minus_beta1 = (float)(1.0 - beta1);
  c.beta2 = (float)beta2, c.one_minus_beta2 = (float)(1.0 - beta2);
  c.step_size = (float)(lr / bc1);
  c.bc2_sqrt = (float)sqrt_f64(bc2);
  c.eps = (float)eps;
  c.scale = (float)grad_scale;
  for (int i = 0; i < m->params.size; ++i) {
    Param& p = m->params[i];
    if (!p.trainable) continue;
    adamw_update(p.data, p.exp_avg, p.exp_avg_sq, p.grad, p.numel, c);
  }
  return model_repack(m);
}

void ema_update(Model* m, double decay) {
  const float one_minus = (float)(1.0 - decay);
  for (int i = 0; i < m->params.size; ++i) {
    Param& p = m->params[i];
    if (!p.ema) continue;
    ema_update(p.ema, p.data, p.numel, one_minus);
  }
}

}  // namespace mb
