// conv2d_mma.cu compiled as C++ for the CUDA emulation (see cuda_emulation.h).
#include "../conv2d_mma.cu"
