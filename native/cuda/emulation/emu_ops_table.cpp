// ops_table.cu compiled as C++ for the CUDA emulation (see cuda_emulation.h).
#include "../ops_table.cu"
