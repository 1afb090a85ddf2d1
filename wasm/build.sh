#!/usr/bin/env bash
# Builds wasm/dist/marble.wasm from the engine and CPU op sources with
# Debian's clang-16 + lld-16: wasm32, freestanding (no libc, no WASI imports),
# SIMD128. The output is committed; CI rebuilds it and fails if it differs.
set -euo pipefail
cd "$(dirname "$0")/.."

CLANG=${CLANG:-clang-16}
WASM_LD=${WASM_LD:-wasm-ld-16}
OBJ=wasm/obj
OUT=wasm/dist/marble.wasm
mkdir -p "$OBJ" wasm/dist

SOURCES=(
  native/engine/unet.cpp
  native/engine/api.cpp
  native/engine/train.cpp
  native/engine/backward.cpp
  native/cpu/conv2d.cpp
  native/cpu/conv2d_winograd.cpp
  native/cpu/gemm_generic.cpp
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

objects=()
for src in "${SOURCES[@]}"; do
  obj="$OBJ/$(basename "${src%.cpp}").o"
  "$CLANG" "${FLAGS[@]}" -c "$src" -o "$obj"
  objects+=("$obj")
done

"$WASM_LD" --no-entry --export-dynamic --strip-all -z stack-size=1048576 \
  --initial-memory=16777216 --max-memory=4294967296 \
  -o "$OUT" "${objects[@]}"
echo "built $OUT ($(stat -c %s "$OUT") bytes)"
