// noise.cu compiled as C++ for the CUDA emulation (see cuda_emulation.h).
#include "../noise.cu"
