#!/usr/bin/env bash
# One run on a CUDA machine that tells as much as it can: builds (or takes a
# prebuilt) addon, lists the GPU, runs the CUDA suites (every op family case
# by case against the CPU ops, the diffusers forward fixtures, cuda vs cpu,
# the pipelines, typed errors) and the GPU benchmark, and writes everything
# as files. Nothing stops at the first failure; the exit status is non-zero
# when any part failed. Meant to finish in well under 6 minutes.
#
#   NODE=/path/to/node bash bench/gpu-check.sh
#
# Needs node >= 20 (NODE, else `node` on the PATH) and the package's
# node_modules (runtime dependencies; node-addon-api and node-api-headers to
# build). npm is not needed. The addon is the development one (the product
# addon plus the CUDA self-test and benchmark hooks): MARBLE_ADDON=/path/marble_dev.node,
# else build/dev/marble_dev.node when present, built with CUDA and loadable here
# (say, carried in prebuilt: bench/gpu-pack.sh), else it is built here with
# cmake + nvcc into build-gpu/ for this GPU's architecture; MARBLE_REBUILD=1 forces that build. The TypeScript must be compiled (dist/)
# unless node_modules/typescript is there to compile it.
# Results go to $OUT when set (else bench/results/gpu-check/): gpu-check.json
# (summary), cuda-tests.tap, gpu.json (benchmark), wgmma/gpu.json (the half
# forwards on Hopper's warpgroup MMA), forward-kernels*.csv (time per kernel,
# where nsys is installed), gpu-check.log (all output).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=${OUT:-$ROOT/bench/results/gpu-check}
mkdir -p "$RESULTS"
LOG=$RESULTS/gpu-check.log
exec > >(tee "$LOG") 2>&1
START=$(date +%s)
say() { echo "[gpu-check +$(( $(date +%s) - START ))s] $*"; }
declare -A STATUS

NODE=${NODE:-$(command -v node || true)}
if [ -z "$NODE" ] || ! "$NODE" -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
  echo "gpu-check: node >= 20 is needed: set NODE=/path/to/node" >&2
  exit 2
fi
export PATH="$(dirname "$NODE"):$PATH"  # CMakeLists asks `node` for node-addon-api's path
say "node $("$NODE" --version) at $NODE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader

# 1. The addon.
if [ -n "${MARBLE_ADDON:-}" ]; then
  say "addon given: $MARBLE_ADDON"
  STATUS[build]="given"
elif [ -f build/dev/marble_dev.node ] && [ "${MARBLE_REBUILD:-0}" != 1 ] &&
     "$NODE" -e "if (!require('$ROOT/build/dev/marble_dev.node').cudaDevices().built) { console.error('built without CUDA'); process.exit(1); }" \
       2>"$RESULTS/prebuilt-load-error.txt"; then
  export MARBLE_ADDON=$ROOT/build/dev/marble_dev.node
  say "prebuilt addon: $MARBLE_ADDON"
  STATUS[build]="prebuilt"
else
  # No prebuilt addon, one without CUDA, or one this machine cannot load (other system libraries): build here.
  [ -s "$RESULTS/prebuilt-load-error.txt" ] && say "the prebuilt addon cannot serve here: $(head -c 300 "$RESULTS/prebuilt-load-error.txt")"
  ARCH=${MARBLE_CUDA_ARCHITECTURES:-}
  if [ -z "$ARCH" ] && command -v nvidia-smi >/dev/null; then
    ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
    [ "$ARCH" = 90 ] && ARCH=90a  # Hopper: the arch-specific target, which has the warpgroup MMA
  fi
  say "building the addon with cmake (CUDA architectures: ${ARCH:-the default list})"
  GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
  BUILD_START=$(date +%s)
  [ -n "$ARCH" ] && export MARBLE_CUDA_ARCHITECTURES=$ARCH
  if MARBLE_CUDA=ON MARBLE_DEV=ON MARBLE_DEV_CUDA=ON MARBLE_CUDA_EMULATION=OFF cmake -S . -B build-gpu "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
      "-DCMAKE_JS_INC=$ROOT/node_modules/node-api-headers/include;$ROOT/node_modules/node-addon-api" \
      "-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=$ROOT/build-gpu/Release" \
    && timeout 240 cmake --build build-gpu -j "$(nproc)" --target marble_dev; then
    STATUS[build]="built in $(( $(date +%s) - BUILD_START ))s"
  else
    STATUS[build]="FAILED"
  fi
  export MARBLE_ADDON=$ROOT/build-gpu/dev/marble_dev.node
fi
say "build: ${STATUS[build]}"

# 2. The TypeScript.
if [ ! -f dist/test/cuda.test.js ] || [ ! -f dist/bench/gpu.js ]; then
  if [ -f node_modules/typescript/bin/tsc ]; then
    say "compiling the TypeScript"
    "$NODE" node_modules/typescript/bin/tsc -p . || STATUS[tsc]="FAILED"
  else
    echo "gpu-check: dist/ is missing and node_modules/typescript is not here to build it" >&2
    STATUS[tsc]="FAILED: no dist/"
  fi
fi

# 3. What the addon sees.
"$NODE" --input-type=module -e "
  const m = await import('$ROOT/dist/src/node/native.js');
  const d = m.cudaDevices();
  console.log(JSON.stringify(d, null, 2));
  if (!d.built) console.error('gpu-check: this addon was built without CUDA');
" > "$RESULTS/cuda-devices.json"; STATUS[devices]=$?
cat "$RESULTS/cuda-devices.json"
"$NODE" dist/src/cli/main.js info

# 4. The CUDA suites (each test and each op case reported, none stops the others).
say "CUDA test suites"
# MB_PARITY_TRACE: the op self-test names each case on stderr before running it,
# so a crash inside one still says which.
MB_PARITY_TRACE=1 timeout 240 "$NODE" --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$RESULTS/cuda-tests.tap" \
  dist/test/cuda.test.js dist/test/cuda_backend.test.js
STATUS[tests]=$?

# 5. The benchmark.
say "GPU benchmark"
OUT=$RESULTS timeout 200 "$NODE" dist/bench/gpu.js
STATUS[bench]=$?
# The half-type forwards again with the conv GEMMs on Hopper's warpgroup MMA
# (opt-in until this run has checked it; elsewhere the addon keeps mma.sync and
# the numbers repeat the first run's).
mkdir -p "$RESULTS/wgmma"
say "GPU benchmark, MARBLE_CUDA_WGMMA=1 (half-type forwards)"
MARBLE_CUDA_WGMMA=1 BENCH_DTYPES=float16,bfloat16 BENCH_DDIM_BATCHES= BENCH_DDIM_HALF_BATCHES= BENCH_TRAIN_BATCHES= BENCH_CPU_TRAIN=0 BENCH_CONV=0 BENCH_ATTENTION=0 \
  OUT=$RESULTS/wgmma timeout 120 "$NODE" dist/bench/gpu.js
STATUS[bench_wgmma]=$?

# 6. Where a forward's time goes, kernel by kernel, where Nsight Systems is
# installed: batch 1 and 256, float32 and bfloat16, a few forwards each.
if command -v nsys >/dev/null; then
  say "kernel profile (nsys)"
  mkdir -p "$RESULTS/profile"
  BENCH_BATCHES=1,256 BENCH_DTYPES=float32,bfloat16 BENCH_DDIM_BATCHES= BENCH_DDIM_HALF_BATCHES= BENCH_TRAIN_BATCHES= BENCH_CPU_TRAIN=0 \
    BENCH_CONV=0 BENCH_ATTENTION=0 BENCH_TIME_MS=100 OUT=$RESULTS/profile timeout 120 \
    nsys profile --force-overwrite=true -o "$RESULTS/forward-profile" --stats=false "$NODE" dist/bench/gpu.js >/dev/null 2>&1
  timeout 60 nsys stats --report cuda_gpu_kern_sum --format csv -o "$RESULTS/forward-kernels" "$RESULTS/forward-profile.nsys-rep" \
    >/dev/null 2>&1 && STATUS[profile]="ok" || STATUS[profile]="failed"
  rm -f "$RESULTS/forward-profile.nsys-rep" "$RESULTS/forward-profile.sqlite"
  head -25 "$RESULTS"/forward-kernels*.csv 2>/dev/null
else
  STATUS[profile]="no nsys"
fi
say "profile: ${STATUS[profile]}"

ELAPSED=$(( $(date +%s) - START ))
say "done in ${ELAPSED}s: build ${STATUS[build]}, tests rc ${STATUS[tests]}, bench rc ${STATUS[bench]}, wgmma bench rc ${STATUS[bench_wgmma]}"
PASS=$(grep -cE '^ *ok ' "$RESULTS/cuda-tests.tap" 2>/dev/null); PASS=${PASS:-0}
FAIL=$(grep -cE '^ *not ok ' "$RESULTS/cuda-tests.tap" 2>/dev/null); FAIL=${FAIL:-0}
cat > "$RESULTS/gpu-check.json" <<JSON
{
  "date": "$(date -u +%FT%TZ)",
  "seconds": $ELAPSED,
  "node": "$("$NODE" --version)",
  "addon": "${MARBLE_ADDON}",
  "build": "${STATUS[build]}",
  "tsc": "${STATUS[tsc]:-ok}",
  "testsExitCode": ${STATUS[tests]},
  "tapOk": $PASS,
  "tapNotOk": $FAIL,
  "benchExitCode": ${STATUS[bench]},
  "benchWgmmaExitCode": ${STATUS[bench_wgmma]},
  "kernelProfile": "${STATUS[profile]}"
}
JSON
cat "$RESULTS/gpu-check.json"
[[ "${STATUS[build]}" != FAILED* && -z "${STATUS[tsc]:-}" && ${STATUS[tests]} -eq 0 && ${STATUS[bench]} -eq 0 ]]
