// marble_cuda_emulation: the CUDA op self-test (native/cuda/parity.cpp) with
// the CUDA kernels emulated on the CPU (cuda_emulation.h) as the side under
// test. Prints the cases as a JSON array; test/cuda_emulation.test.ts judges
// them with the tolerances a GPU run uses. Runs anywhere, no GPU needed.
#include <stdio.h>
#include <stdlib.h>

#include "../../engine/ops.h"
#include "../cuda_api.h"

namespace mb {
int run_parity(const Ops* device_ops, uint32_t seed);
const Ops* cuda_ops();
}  // namespace mb

static void print_json_string(const char* s) {
  putchar('"');
  for (; *s; ++s) {
    if (*s == '"' || *s == '\\') putchar('\\');
    if ((unsigned char)*s >= 0x20) putchar(*s);
  }
  putchar('"');
}

int main(int argc, char** argv) {
  const uint32_t seed = argc > 1 ? (uint32_t)strtoul(argv[1], nullptr, 10) : 20261128u;
  const int n = mb::run_parity(mb::cuda_ops(), seed);
  printf("[");
  for (int i = 0; i < n; ++i) {
    MbParityCase c;
    mb_cuda_parity_case(i, &c);
    printf("%s\n{\"op\":", i ? "," : "");
    print_json_string(c.op);
    printf(",\"name\":");
    print_json_string(c.name);
    printf(",\"exact\":%s,\"maxAbsErr\":%.9g,\"maxRef\":%.9g,\"elements\":%.0f,\"status\":%d,\"error\":", c.exact ? "true" : "false",
           c.max_abs_err, c.max_ref, c.elements, c.status);
    print_json_string(c.error);
    printf("}");
  }
  printf("]\n");
  return 0;
}
