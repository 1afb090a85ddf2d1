// The cpu and cuda backends: the Node-API addon, found by node-gyp-build: a
// source build in build/Release (cmake-js) first, else the prebuilt addon the
// package ships in prebuilds/<platform>-<arch>/ (scripts/install.mjs says
// which, or why neither). cuda is the same addon with the model's forward on a GPU
// (native/cuda); the addon links cudart statically, so it loads everywhere
// and reports "no device" with the CUDA runtime's reason where there is none.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import { BackendError, InputError } from '../core/errors.js';
import { DTYPES, checkThreads, dtypeUnsupported, split64 } from '../core/backend/backend.js';
import type { Backend, DType, EngineModel } from '../core/backend/backend.js';
import { useNormalFillKernel } from '../core/rng/torch.js';

/** What the addon knows about CUDA here (native/cuda/cuda_api.h). */
export interface CudaDevices {
  /** The addon was compiled with the CUDA backend (nvcc found, MARBLE_CUDA not OFF). */
  built: boolean;
  buildInfo: string;
  count: number;
  /** Why there is no device, when count is 0 (the CUDA runtime's words). */
  reason: string;
  devices: {
    index: number;
    name?: string;
    computeCapability?: string;
    multiprocessors?: number;
    totalBytes?: number;
    driverVersion?: number;
    runtimeVersion?: number;
    pciBusId?: string;
    error?: string;
  }[];
}

/** One case of the CUDA op self-test (native/cuda/parity.cpp). */
export interface CudaParityCase {
  op: string;
  name: string;
  /** The CUDA op must reproduce the CPU's bits. */
  exact: boolean;
  maxAbsErr: number;
  maxRef: number;
  elements: number;
  /** 0, or the engine status when the op did not run (5: a device error). */
  status: number;
  error: string;
}

type NativeModel = EngineModel & { useCuda(device: number, weightType: number): void; device(): string };

export interface Addon {
  Model: new (config: Float64Array) => NativeModel;
  cudaDevices(): CudaDevices;
  /** dryRun: the CPU ops on both sides, no device needed (checks the harness). */
  // The development addon's entry points (build/dev/marble_dev.node, native/node/dev_hooks.cpp):
  cudaParity(device: number, seed: number, dryRun: boolean): CudaParityCase[];
  cudaFaultProbe(device: number): { status: number; message: string };
  /** One attention forward timed on the device (bench/gpu.ts): fused 1 the flash-style kernel, 0 the batched GEMMs. */
  cudaAttentionBench(device: number, fused: number, batch: number, tokens: number, heads: number, headDim: number,
    iterations: number): { status: number; ms: number; reason: string };
  /**
   * One 3x3 conv GEMM timed on the device (bench/gpu.ts); weightType 0 float32, 1 float16, 2 bfloat16;
   * flags: 1 Hopper's warpgroup MMA, 2 the input in the half type (half activations).
   */
  cudaConvBench(device: number, weightType: number, flags: number, batch: number, cin: number, cout: number, h: number,
    w: number, iterations: number): { status: number; ms: number; reason: string };
  threads(): number;
  setThreads(n: number): number;
  isa(): string;
  selectIsa(name: string): string;
  selectTrainingWinogradTile(tile: number): number;
  randnPhilox(seedLo: number, seedHi: number, drawLo: number, drawHi: number, offset: number, n: number): Float32Array;
  philoxBlock(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number): Uint32Array;
  torchNormalFill?(words: Uint32Array, index: number, out: Float32Array): number;
  diffusionStep(
    coefficients: Float32Array,
    batch: number,
    sampleSize: number,
    modelOutputStride: number,
    modelOutput: Float32Array,
    sample: Float32Array,
    noise: Float32Array | null,
    prevSample: Float32Array,
    predOriginalSample: Float32Array,
    guidanceScale?: number,
  ): number;
  solverStep(
    coefficients: Float32Array,
    batch: number,
    sampleSize: number,
    modelOutputStride: number,
    modelOutput: Float32Array,
    sample: Float32Array,
    last: Float32Array | null,
    h0: Float32Array | null,
    h1: Float32Array | null,
    h2: Float32Array | null,
    noise: Float32Array | null,
    prevSample: Float32Array,
    converted: Float32Array,
    lastOut: Float32Array | null,
    guidanceScale?: number,
  ): number;
  addNoise(
    x0: Float32Array,
    noise: Float32Array,
    sqrtAlphaProd: Float32Array,
    sqrtOneMinusAlphaProd: Float32Array,
    batch: number,
    sampleSize: number,
    out: Float32Array,
  ): void;
}

let addon: Addon | null = null;
let loadError: Error | null = null;

/** The package root (dist/src/node -> three levels up). */
export function packageRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

/** Where the addon came from, for `marble info`. */
export interface AddonOrigin {
  /** 'MARBLE_ADDON', 'source build', 'prebuild', or 'none'. */
  kind: string;
  file: string | null;
  /** Why there is none (the install step's reason, or the load error). */
  reason?: string;
}

let origin: AddonOrigin | null = null;

function installRecord(): { addon?: string; reason?: string } {
  try {
    return JSON.parse(readFileSync(path.join(packageRoot(), 'build', 'install.json'), 'utf8')) as { addon?: string; reason?: string };
  } catch {
    return {};
  }
}

function resolveAddon(): AddonOrigin {
  // MARBLE_ADDON points at another build of the addon (the tests' dev and
  // emulated addons, bench/gpu-check.sh).
  if (process.env.MARBLE_ADDON) return { kind: 'MARBLE_ADDON', file: path.resolve(process.env.MARBLE_ADDON) };
  const require = createRequire(import.meta.url);
  try {
    const nodeGypBuild = require('node-gyp-build') as { path(dir: string): string };
    const file = nodeGypBuild.path(packageRoot());
    return { kind: file.includes(`${path.sep}prebuilds${path.sep}`) ? 'prebuild' : 'source build', file };
  } catch {
    const why = installRecord().reason ?? `no prebuilt addon for ${process.platform}-${process.arch} and no source build`;
    return { kind: 'none', file: null, reason: why };
  }
}

/** Which addon loads (or would), and from where. */
export function addonOrigin(): AddonOrigin {
  origin ??= resolveAddon();
  return origin;
}

export function loadAddon(): Addon {
  if (addon) return addon;
  if (loadError) throw loadError;
  const found = addonOrigin();
  if (!found.file || !existsSync(found.file)) {
    loadError = new BackendError(
      `the native addon is not available (${found.reason ?? `${found.file} is missing`}); marble uses its WebAssembly backend. ` +
        'To build the addon: npm rebuild marble-diffusion --build-from-source (needs cmake and a C++17 compiler)',
    );
    throw loadError;
  }
  try {
    addon = createRequire(import.meta.url)(found.file) as Addon;
  } catch (e) {
    loadError = new BackendError(`the native addon failed to load: ${(e as Error).message}`);
    origin = { ...found, reason: (e as Error).message };
    throw loadError;
  }
  const isa = process.env.MARBLE_ISA;
  if (isa) addon.selectIsa(isa);
  // MARBLE_TRAIN_WINOGRAD_TILE=2: training with F(2x2, 3x3) instead of F(4x4, 3x3), to compare them (bench/).
  const tile = process.env.MARBLE_TRAIN_WINOGRAD_TILE;
  if (tile) addon.selectTrainingWinogradTile(Number(tile));
  // torch.randn's bits from native code for every TorchGenerator (training's noise each step).
  const fill = addon.torchNormalFill?.bind(addon);
  if (fill) useNormalFillKernel(fill);
  return addon;
}

export function nativeAvailable(): boolean {
  try {
    loadAddon();
    return true;
  } catch {
    return false;
  }
}

/** CUDA devices and build status; a missing or unloadable addon counts as "no device". */
export function cudaDevices(): CudaDevices {
  try {
    return loadAddon().cudaDevices();
  } catch (e) {
    return { built: false, buildInfo: 'not built', count: 0, reason: (e as Error).message, devices: [] };
  }
}

/** Why the cuda backend cannot run here, or null when a device is usable. */
export function cudaUnavailableReason(): string | null {
  const info = cudaDevices();
  if (info.count > 0) return null;
  return info.reason || 'no CUDA device';
}

export function createNativeBackend(options: { threads?: number } = {}): Backend {
  return nativeBackend('cpu', options);
}

/**
 * The cuda backend: models run on CUDA device 0. sample() keeps the whole
 * loop there (forward, Philox noise, the fused step: engine/sampling.cpp);
 * Backend.randn/diffusionStep/addNoise, for callers with host arrays, run the
 * addon's CPU kernels (bit-identical with the GPU's). Training runs on the
 * device too: gradients, AdamW's moments and the EMA live in device memory.
 */
export function createCudaBackend(options: { threads?: number } = {}): Backend {
  const reason = cudaUnavailableReason();
  if (reason !== null) throw new BackendError(`no CUDA device: ${reason}`);
  return nativeBackend('cuda', options);
}

function nativeBackend(name: 'cpu' | 'cuda', options: { threads?: number }): Backend {
  checkThreads(options.threads);
  const lib = loadAddon();
  if (options.threads !== undefined) lib.setThreads(options.threads);
  const createModel = (config: Float64Array, dtype: DType = 'float32'): EngineModel => {
    if (name === 'cpu' && dtype !== 'float32') throw dtypeUnsupported(name, dtype);
    const model = new lib.Model(config);
    if (name === 'cpu') return model;
    try {
      model.useCuda(0, DTYPES.indexOf(dtype));
    } catch (e) {
      model.dispose();
      throw new BackendError(`cuda: ${(e as Error).message}`);
    }
    return model;
  };
  return {
    name,
    createModel,
    threads: () => lib.threads(),
    isa: () => lib.isa(),
    randn: (seed, draw, n, offset = 0) =>
      lib.randnPhilox(...split64(seed, 'seed'), ...split64(draw, 'draw'), offset, n),
    philoxBlock: (c, k) => lib.philoxBlock(c[0]!, c[1]!, c[2]!, c[3]!, k[0]!, k[1]!),
    diffusionStep: (coefficients, layout, modelOutput, sample, noise, prevSample, predOriginalSample) => {
      const status = lib.diffusionStep(
        coefficients,
        layout.batchSize,
        layout.sampleSize,
        layout.modelOutputStride,
        modelOutput,
        sample,
        noise,
        prevSample,
        predOriginalSample,
        layout.guidanceScale ?? 1,
      );
      if (status !== 0) throw new InputError(`diffusion step: invalid coefficients or layout (status ${status})`);
    },
    solverStep: (coefficients, layout, a) => {
      const h = a.history;
      const status = lib.solverStep(
        coefficients,
        layout.batchSize,
        layout.sampleSize,
        layout.modelOutputStride,
        a.modelOutput,
        a.sample,
        a.last,
        h[0] ?? null,
        h[1] ?? null,
        h[2] ?? null,
        a.noise,
        a.prevSample,
        a.converted,
        a.lastOut,
        layout.guidanceScale ?? 1,
      );
      if (status !== 0) throw new InputError(`solver step: invalid coefficients or layout (status ${status})`);
    },
    addNoise: (x0, noise, sqrtAlphaProd, sqrtOneMinusAlphaProd, out) =>
      lib.addNoise(x0, noise, sqrtAlphaProd, sqrtOneMinusAlphaProd, sqrtAlphaProd.length, x0.length / sqrtAlphaProd.length, out),
  };
}
