// adamw.cu compiled as C++ for the CUDA emulation (see cuda_emulation.h).
#include "../adamw.cu"
