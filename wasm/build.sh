#!/usr/bin/env bash
# Builds the wasm modules from the engine and CPU op sources with Debian's
# clang-16 + lld-16: wasm32, freestanding (no libc, no WASI imports), SIMD128.
# All outputs are committed; CI rebuilds them and fails if they differ.
#
#   wasm/dist/marble.wasm          single-threaded; no imports, its own memory.
#                                  For runtimes without SharedArrayBuffer.
#   wasm/dist/marble-threads.wasm  threads: atomics, an imported shared memory
#                                  (env.memory) and wasm/thread_pool.cpp. Every
#                                  thread instantiates it on the same memory.
#   wasm/dist/marble-relaxed.wasm, marble-threads-relaxed.wasm
#                                  the same two with relaxed SIMD (the GEMM
#                                  micro-kernel's f32x4.relaxed_madd), which
#                                  the loaders pick where the runtime has it.
set -euo pipefail
cd "$(dirname "$0")/.."

CLANG=${CLANG:-clang-16}
WASM_LD=${WASM_LD:-wasm-ld-16}
mkdir -p wasm/dist

SOURCES=(
  native/engine/unet.cpp
  native/engine/api.cpp
  native/engine/sampling.cpp
  native/engine/train.cpp
  native/engine/backward.cpp
  native/cpu/conv2d.cpp
  native/cpu/conv2d_winograd.cpp
  native/cpu/conv2d_im2col_grad.cpp
  native/cpu/conv2d_thin.cpp
  native/cpu/gemm_generic.cpp
  native/cpu/peak.cpp
  native/cpu/groupnorm.cpp
  native/cpu/attention.cpp
  native/cpu/resample.cpp
  native/cpu/embed.cpp
  native/cpu/elementwise.cpp
  native/cpu/noise.cpp
  native/cpu/diffusion_step.cpp
  native/cpu/adamw.cpp
  native/cpu/cpu_ops.cpp
  wasm/runtime.cpp
)
FLAGS=(--target=wasm32 -std=c++17 -O3 -msimd128 -mbulk-memory -mnontrapping-fptoint -ffreestanding -nostdlib
  -fno-exceptions -fno-rtti -fvisibility=hidden -ffp-contract=off -fno-math-errno -Wall
  -ffile-prefix-map="$PWD"=.)
# Memory limits. The threaded build's memory is created by the loader
# (src/core/backend/wasm_core.ts, WASM_THREADS_MEMORY), which must use these numbers.
INITIAL_MEMORY=16777216
MAX_MEMORY=4294967296
STACK_SIZE=1048576  # the first instance's stack; other threads get theirs from the heap

# compile OBJ_DIR SOURCES...: compiles each source with FLAGS + EXTRA_FLAGS into OBJ_DIR, sets `objects`
compile() {
  local dir=$1
  shift
  local -a flags=("${FLAGS[@]}" "${EXTRA_FLAGS[@]}")
  mkdir -p "$dir"
  objects=()
  for src in "$@"; do
    local obj="$dir/$(basename "${src%.cpp}").o"
    "$CLANG" "${flags[@]}" -c "$src" -o "$obj"
    objects+=("$obj")
  done
}

# build VARIANT_SUFFIX OBJ_SUBDIR EXTRA_FLAGS...: both modules with these flags
build() {
  local suffix=$1 sub=$2
  shift 2
  EXTRA_FLAGS=("$@")
  compile "wasm/obj$sub" "${SOURCES[@]}"
  "$WASM_LD" --no-entry --export-dynamic --strip-all -z stack-size=$STACK_SIZE \
    --initial-memory=$INITIAL_MEMORY --max-memory=$MAX_MEMORY \
    -o "wasm/dist/marble$suffix.wasm" "${objects[@]}"
  echo "built wasm/dist/marble$suffix.wasm ($(stat -c %s "wasm/dist/marble$suffix.wasm") bytes)"

  # The threaded build: every object needs atomics (lld refuses to mix), the
  # memory is imported and shared, and lld turns the data segments passive with
  # a start function (__wasm_init_memory) that initialises them only in the
  # first instance. __stack_pointer is exported so that each thread's instance
  # can point it at a stack of its own before its first call.
  EXTRA_FLAGS=("$@" -matomics -DMB_WASM_THREADS=1)
  compile "wasm/obj$sub/threads" "${SOURCES[@]}" wasm/thread_pool.cpp
  "$WASM_LD" --no-entry --export-dynamic --strip-all -z stack-size=$STACK_SIZE \
    --import-memory --shared-memory --initial-memory=$INITIAL_MEMORY --max-memory=$MAX_MEMORY \
    --export=__stack_pointer \
    -o "wasm/dist/marble-threads$suffix.wasm" "${objects[@]}"
  echo "built wasm/dist/marble-threads$suffix.wasm ($(stat -c %s "wasm/dist/marble-threads$suffix.wasm") bytes)"
}

build "" ""
build "-relaxed" "/relaxed" -mrelaxed-simd
