// Training state and the optimizer: gradients, AdamW (torch.optim.AdamW
// semantics), global gradient norm, EMA of the weights, all in the memory of
// the model's device through its ops, and the copies of tensors between it
// and the host. The training step itself (add-noise + forward + MSE +
// backward) is in backward.cpp.
#include "exec.h"
#include "mathf.h"
#include "ops.h"
#include "unet.h"

namespace mb {

int device_status(Model* m, const char* what) {
  const int status = m->ops->sync();
  if (status == kOk) return kOk;
  Message msg;
  msg.add(m->ops->name).add(" ").add(what).add(": ").add(m->ops->error_message());
  return fail(m, status, msg);
}

int train_init(Model* m, bool ema) {
  if (!m->finalized) return kErrState;
  if (model_weights_released(m)) {
    Message msg;
    msg.add("this model released its unpacked weights to save memory (loadPipeline does): load it with loadUNet to train");
    return fail(m, kErrState, msg);
  }
  // Gradients, AdamW's moments and the EMA live where the ops run: device
  // memory on cuda, host memory on cpu and wasm.
  const Ops& ops = *m->ops;
  auto out_of_memory = [&]() {
    Message msg;
    msg.add("out of ").add(ops.name).add(" memory allocating the optimizer state");
    return fail(m, kErrOutOfMemory, msg);
  };
  if (!m->grad_norm_sums) {
    m->grad_norm_sums = static_cast<double*>(ops.alloc(sizeof(double) * (size_t)(m->params.size ? m->params.size : 1)));
    if (!m->grad_norm_sums) return out_of_memory();
  }
  for (int i = 0; i < m->params.size; ++i) {
    Param& p = m->params[i];
    const size_t bytes = p.numel * sizeof(float);
    if (!p.grad) p.grad = static_cast<float*>(ops.alloc(bytes));
    if (!p.exp_avg) p.exp_avg = static_cast<float*>(ops.alloc(bytes));
    if (!p.exp_avg_sq) p.exp_avg_sq = static_cast<float*>(ops.alloc(bytes));
    if (!p.grad || !p.exp_avg || !p.exp_avg_sq) return out_of_memory();
    ops.zero(p.grad, bytes);
    ops.zero(p.exp_avg, bytes);
    ops.zero(p.exp_avg_sq, bytes);
    if (ema && !p.ema) {
      p.ema = static_cast<float*>(ops.alloc(bytes));
      if (!p.ema) return out_of_memory();
      ops.copy(p.ema, p.dev, bytes);
    }
  }
  int status = device_status(m, "error setting up training");
  if (status != kOk) return status;
  // Training takes F(4x4, 3x3) on the host (the gradients' parity with
  // torch holds; the samplers' with diffusers wants F(2x2, 3x3)).
  if (!ops.device_memory) status = model_set_winograd_tile(m, select_training_winograd_tile(0));
  if (status != kOk) return status;
  m->training_ready = true;
  return kOk;
}

int zero_grad(Model* m) {
  for (int i = 0; i < m->params.size; ++i)
    if (m->params[i].grad) m->ops->zero(m->params[i].grad, m->params[i].numel * sizeof(float));
  return device_status(m, "error clearing the gradients");
}

// The global L2 norm over every trainable gradient (clip_grad_norm_'s
// total_norm): each parameter's squared sum in double on the device, the
// total over parameters in order on the host (one copy back).
int grad_norm(Model* m, double* norm) {
  *norm = 0;
  if (!m->grad_norm_sums) return kOk;  // no training state: no gradient
  const Ops& ops = *m->ops;
  int count = 0;
  for (int i = 0; i < m->params.size; ++i) {
    const Param& p = m->params[i];
    if (!p.grad || !p.trainable) continue;
    ops.sum_squares(p.grad, p.numel, m->grad_norm_sums + count++);
  }
  double* sums = static_cast<double*>(mb_alloc(sizeof(double) * (size_t)(count ? count : 1)));
  if (!sums) return set_error(m, kErrOutOfMemory, Name("out of memory for the gradient norm"));
  ops.download(sums, m->grad_norm_sums, sizeof(double) * (size_t)count);
  double total = 0;
  for (int k = 0; k < count; ++k) total += sums[k];
  mb_free(sums);
  *norm = sqrt_f64(total);
  return device_status(m, "error computing the gradient norm");
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
  // The weights as the ops read them (the device copies; the host ones on
  // cpu), then repacked from there on the device.
  for (int i = 0; i < m->params.size; ++i) {
    Param& p = m->params[i];
    if (!p.trainable) continue;
    m->ops->adamw_update(p.dev, p.exp_avg, p.exp_avg_sq, p.grad, p.numel, c);
  }
  if (m->ops->device_memory) m->device_params_newer = true;
  return model_repack(m);  // syncs, and reports a device failure
}

int ema_update(Model* m, double decay) {
  const float one_minus = (float)(1.0 - decay);
  for (int i = 0; i < m->params.size; ++i) {
    Param& p = m->params[i];
    if (!p.ema) continue;
    m->ops->ema_update(p.ema, p.dev, p.numel, one_minus);
  }
  return device_status(m, "error updating the EMA weights");
}

int sync_host_params(Model* m) {
  if (!m->device_params_newer) return kOk;
  for (int i = 0; i < m->params.size; ++i) {
    Param& p = m->params[i];
    if (p.data && p.dev) m->ops->download(p.data, p.dev, p.numel * sizeof(float));
  }
  const int status = device_status(m, "error copying the weights back");
  if (status == kOk) m->device_params_newer = false;
  return status;
}

namespace {

// The device buffer of one tensor kind, or null when it is not allocated.
float* tensor_on_device(Param& p, int kind) {
  switch (kind) {
    case 0: return p.dev;
    case 1: return p.grad;
    case 2: return p.exp_avg;
    case 3: return p.exp_avg_sq;
    case 4: return p.ema;
    default: return nullptr;
  }
}

int tensor_args(Model* m, int index, int kind) {
  if (index < 0 || index >= m->params.size || kind < 0 || kind > 4)
    return set_error(m, kErrInvalidArgument, Name("tensor index or kind out of range"));
  Param& p = m->params[index];
  if (kind == 0 ? !p.data : !tensor_on_device(p, kind))
    return set_error(m, kErrState, Name(kind == 0 ? "this weight was released after packing" : "that tensor is not allocated (call trainInit first)"));
  return kOk;
}

}  // namespace

// Parameters are read from the host copy (brought up to date first);
// writes go to the host copy and, on a device, to the device copy too (the
// caller repacks the conv weights). Training state lives in the device's memory.
static int copy_tensor(Model* m, int index, int kind, float* host_out, const float* host_in) {
  int status = tensor_args(m, index, kind);
  if (status == kOk && kind == 0) status = sync_host_params(m);
  if (status != kOk) return status;
  Param& p = m->params[index];
  const size_t bytes = p.numel * sizeof(float);
  if (host_out && kind == 0) {
    mb_copy(host_out, p.data, bytes);
    return kOk;
  }
  if (host_out) {
    m->ops->download(host_out, tensor_on_device(p, kind), bytes);
  } else {
    if (kind == 0) mb_copy(p.data, host_in, bytes);
    if (kind != 0 || p.dev != p.data) m->ops->upload(tensor_on_device(p, kind), host_in, bytes);
  }
  return device_status(m, host_out ? "error reading a tensor" : "error writing a tensor");
}

int model_read_tensor(Model* m, int index, int kind, float* host_out) {
  return copy_tensor(m, index, kind, host_out, nullptr);
}

int model_write_tensor(Model* m, int index, int kind, const float* host_in) {
  return copy_tensor(m, index, kind, nullptr, host_in);
}

}  // namespace mb
