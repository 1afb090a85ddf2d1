// The cpu backend: the Node-API addon built by cmake-js into build/Release.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import { BackendError, InputError } from '../errors.js';
import { split64 } from './backend.js';
import type { Backend, EngineModel } from './backend.js';

interface Addon {
  Model: new (config: Float64Array) => EngineModel;
  threads(): number;
  setThreads(n: number): number;
  isa(): string;
  selectIsa(name: string): string;
  randnPhilox(seedLo: number, seedHi: number, drawLo: number, drawHi: number, offset: number, n: number): Float32Array;
  philoxBlock(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number): Uint32Array;
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

/** The package root (dist/src/backend -> three levels up). */
export function packageRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

export function loadAddon(): Addon {
  if (addon) return addon;
  if (loadError) throw loadError;
  const file = path.join(packageRoot(), 'build', 'Release', 'marble.node');
  if (!existsSync(file)) {
    loadError = new BackendError(`the native addon is not built (${file} is missing); run \`npm run build:addon\``);
    throw loadError;
  }
  try {
    addon = createRequire(import.meta.url)(file) as Addon;
  } catch (e) {
    loadError = new BackendError(`the native addon failed to load: ${(e as Error).message}`);
    throw loadError;
  }
  const isa = process.env.MARBLE_ISA;
  if (isa) addon.selectIsa(isa);
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

export function createNativeBackend(options: { threads?: number } = {}): Backend {
  const lib = loadAddon();
  if (options.threads !== undefined) lib.setThreads(options.threads);
  return {
    name: 'cpu',
    createModel: (config) => new lib.Model(config),
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
      );
      if (status !== 0) throw new InputError(`diffusion step: invalid coefficients or layout (status ${status})`);
    },
    addNoise: (x0, noise, sqrtAlphaProd, sqrtOneMinusAlphaProd, out) =>
      lib.addNoise(x0, noise, sqrtAlphaProd, sqrtOneMinusAlphaProd, sqrtAlphaProd.length, x0.length / sqrtAlphaProd.length, out),
  };
}
