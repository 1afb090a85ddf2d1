// One element of the training loss (cpu/ops.h, diffusion_loss), shared by
// the CPU op (diffusion_step.cpp) and the CUDA kernel (cuda/diffusion_step.cu)
// so that both evaluate the same float32 expressions: the output divided by
// t (fourier), the target, their difference, and the gradient
// 2 w_b diff / (B * C * H * W) in double, rounded, then times 1/t.
#pragma once

#include "../engine/mathf.h"
#include "ops.h"

namespace mb {

struct LossTerm {
  float diff;  // output - target
  float grad;  // d(batch loss) / d(output)
};

MB_HD inline LossTerm diffusion_loss_term(const DiffusionLossArgs& a, const float* out, int b, size_t nhwc,
                                          size_t nchw) {
  const size_t per_sample = (size_t)a.channels * a.pixels;
  const float weight = a.loss_weights ? a.loss_weights[b] : 1.0f;
  const float inv_t = a.divisors ? 1.0f / a.divisors[b] : 1.0f;
  const float o = a.divisors ? out[nhwc] / a.divisors[b] : out[nhwc];
  float target;
  if (a.target == kTargetEpsilon)
    target = a.noise[nchw];
  else if (a.target == kTargetSample)
    target = a.x0[nchw];
  else
    target = a.sqrt_alpha_prod[b] * a.noise[nchw] - a.sqrt_one_minus_alpha_prod[b] * a.x0[nchw];
  LossTerm t;
  t.diff = o - target;
  t.grad = (float)(2.0 * weight * t.diff / ((double)a.batch * per_sample)) * inv_t;
  return t;
}

}  // namespace mb
