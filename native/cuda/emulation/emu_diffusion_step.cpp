// diffusion_step.cu compiled as C++ for the CUDA emulation (see cuda_emulation.h).
#include "../diffusion_step.cu"
