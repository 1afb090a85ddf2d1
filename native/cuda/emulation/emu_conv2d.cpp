// conv2d.cu compiled as C++ for the CUDA emulation (see cuda_emulation.h).
#include "../conv2d.cu"
