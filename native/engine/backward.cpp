// The training step: add-noise, forward in training mode (keeping what the
// backward needs), MSE loss, and the backward pass through the UNet graph.
#include "mathf.h"
#include "unet.h"

namespace mb {

int train_step(Model* m, const TrainBatch& batch, float* loss_out) {
  (void)batch;
  *loss_out = 0;
  const char* msg = "training is not implemented yet";
  int i = 0;
  for (; msg[i]; ++i) m->error[i] = msg[i];
  m->error[i] = 0;
  return kErrUnsupported;
}

}  // namespace mb
