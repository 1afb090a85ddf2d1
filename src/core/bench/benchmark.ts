// benchmark(): native against wasm sampling on the user's own machine and
// runtime, through the runtime-neutral core, so `marble bench` (Node), the
// web demo and a Deno, Bun or workerd script measure the same way. For each
// backend and batch: the forward's time (tinybench: warm-up, then a median
// over several runs, min and max kept), one whole sampling run, the time per
// image, GFLOP/s from the model's counted FLOPs, activation memory, and the
// backend's identity (ISA, threads, why it fell back).
import { Bench } from 'tinybench';

import type { BackendDescription, BackendName } from '../backend/backend.js';
import { BackendError, InputError } from '../errors.js';
import { host } from '../host.js';
import type { WasmOptions } from '../host.js';
import { classConditioning } from '../model/config.js';
import type { ModelSource } from '../model/source.js';
import { createUNet } from '../model/unet.js';
import type { UNet2DModel } from '../model/unet.js';
import { loadPipeline } from '../pipeline.js';
import type { SchedulerName } from '../pipeline.js';
import { sample } from '../sampler.js';
import { DDIMScheduler } from '../schedulers/ddim.js';
import { DDPMScheduler } from '../schedulers/ddpm.js';
import { ARCHS } from './archs.js';
import type { ArchName } from './archs.js';
import { unetFlops } from './flops.js';

/** cpu and cuda: the native addon (Node); wasm: the default wasm build with `threads`; wasm-1: wasm on one thread. */
export type BenchBackend = 'cpu' | 'wasm' | 'wasm-1' | 'cuda';
export const BENCH_BACKENDS: readonly BenchBackend[] = ['cpu', 'wasm', 'wasm-1', 'cuda'];

export interface BenchmarkOptions {
  /** A model to load (path, URL or file bytes); or `arch` for random weights of a known architecture. */
  model?: ModelSource;
  arch?: ArchName;
  /** Default: every one this runtime has (those that fail to start are listed in `skipped`). */
  backends?: readonly BenchBackend[];
  /** Default [1, 8]. */
  batches?: readonly number[];
  /** Steps of the sampling run (default 20). */
  steps?: number;
  /** Default 'ddim'. */
  scheduler?: SchedulerName;
  /** Threads of the cpu and wasm backends (default: the runtime's cores). */
  threads?: number;
  /** Timed forwards per backend and batch, after one warm-up (default 10). */
  iterations?: number;
  wasm?: WasmOptions;
  onProgress?: (progress: { task: string; done: number; total: number }) => void;
  signal?: AbortSignal;
}

export interface BenchmarkRow {
  backend: BenchBackend;
  identity: BackendDescription;
  batch: number;
  forward: { minMs: number; medianMs: number; maxMs: number; runs: number };
  /** One sampling run of `steps` steps at this batch. */
  samplingMs: number;
  msPerImage: number;
  /** Forward GFLOP/s from the counted FLOPs (median forward). */
  gflops: number;
  /** Activation memory a forward at this batch needs (the engine's plan). */
  activationBytes: number;
}

export interface BenchmarkReport {
  schema: 'marble-bench/1';
  date: string;
  /** The runtime, as the host names it ('node' or 'web') and its user agent or version. */
  runtime: string;
  model: { name: string; parameters: number; gflopPerImage: number; height: number; width: number };
  steps: number;
  scheduler: SchedulerName;
  rows: BenchmarkRow[];
  skipped: { backend: BenchBackend; reason: string }[];
  /** wasm's median forward over the native cpu's, per batch, where both ran. */
  ratios: { batch: number; wasmOverCpu: number | null; wasm1OverCpu: number | null }[];
}

function positiveIntegers(what: string, values: readonly number[]): void {
  if (!Array.isArray(values) || values.length === 0 || !values.every((v) => Number.isInteger(v) && v >= 1 && v <= 4096))
    throw new InputError(`${what} must be a non-empty list of integers from 1 to 4096, got ${JSON.stringify(values)}`);
}

/** Checks every option before any work. */
export function resolveBenchmarkOptions(options: BenchmarkOptions) {
  if (options.model !== undefined && options.arch !== undefined) throw new InputError('benchmark: give model or arch, not both');
  if (options.model === undefined && options.arch === undefined) throw new InputError('benchmark: give a model (path, URL or bytes) or an arch (mnist, cifar10-32)');
  if (options.arch !== undefined && !Object.hasOwn(ARCHS, options.arch))
    throw new InputError(`benchmark: unknown arch ${JSON.stringify(options.arch)} (${Object.keys(ARCHS).join(', ')})`);
  const backends = options.backends ?? BENCH_BACKENDS;
  for (const b of backends) if (!BENCH_BACKENDS.includes(b)) throw new InputError(`benchmark: unknown backend ${JSON.stringify(b)} (${BENCH_BACKENDS.join(', ')})`);
  const batches = options.batches ?? [1, 8];
  positiveIntegers('batches', batches);
  const steps = options.steps ?? 20;
  if (!Number.isInteger(steps) || steps < 1 || steps > 1000) throw new InputError(`steps must be an integer from 1 to 1000, got ${steps}`);
  const iterations = options.iterations ?? 10;
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > 10000) throw new InputError(`iterations must be an integer from 1 to 10000, got ${iterations}`);
  const scheduler = options.scheduler ?? 'ddim';
  if (scheduler !== 'ddim' && scheduler !== 'ddpm') throw new InputError(`scheduler must be ddim or ddpm, got ${JSON.stringify(scheduler)}`);
  return { backends: [...new Set(backends)], batches: [...batches], steps, iterations, scheduler };
}

async function openModel(options: BenchmarkOptions, backend: BenchBackend) {
  const name: BackendName = backend === 'wasm-1' ? 'wasm' : backend;
  const threads = backend === 'wasm-1' ? 1 : options.threads;
  const load = { backend: name, threads, wasm: options.wasm, signal: options.signal };
  if (options.arch) {
    const unet = await createUNet(ARCHS[options.arch], { ...load, seed: 1, keepWeights: false });
    return { unet, scheduler: (kind: SchedulerName) => (kind === 'ddim' ? new DDIMScheduler() : new DDPMScheduler()), dispose: () => unet.dispose() };
  }
  const pipe = await loadPipeline(options.model!, load);
  return { unet: pipe.unet, scheduler: pipe.scheduler, dispose: () => pipe.dispose() };
}

function labelsFor(unet: UNet2DModel, batch: number): number[] | undefined {
  const conditioning = classConditioning(unet.config);
  if (conditioning === 'none') return undefined;
  if (conditioning !== 'labels') throw new InputError('benchmark: models conditioned by class_embed_type need their own inputs');
  return Array.from({ length: batch }, (_, i) => i % unet.config.numClassEmbeds!);
}

function describe(unet: UNet2DModel): BackendDescription {
  const b = unet.backend;
  return b.describe?.() ?? { name: b.name, isa: b.isa(), threads: b.threads() };
}

function runtimeName(): string {
  const g = globalThis as { navigator?: { userAgent?: string }; Deno?: { version?: { deno?: string } }; Bun?: { version?: string } };
  if (g.Deno) return `Deno ${g.Deno.version?.deno ?? ''}`.trim();
  if (g.Bun) return `Bun ${g.Bun.version ?? ''}`.trim();
  return g.navigator?.userAgent ?? host().name;
}

/** Runs the benchmark; see BenchmarkOptions. */
export async function benchmark(options: BenchmarkOptions): Promise<BenchmarkReport> {
  const { backends, batches, steps, iterations, scheduler } = resolveBenchmarkOptions(options);
  const rows: BenchmarkRow[] = [];
  const skipped: BenchmarkReport['skipped'] = [];
  let model: BenchmarkReport['model'] | null = null;
  const total = backends.length * batches.length;
  let done = 0;

  for (const backend of backends) {
    let opened: Awaited<ReturnType<typeof openModel>>;
    try {
      opened = await openModel(options, backend);
    } catch (e) {
      if (!(e instanceof BackendError)) throw e;
      skipped.push({ backend, reason: e.message });
      done += batches.length;
      continue;
    }
    try {
      const { unet } = opened;
      const size = unet.config.sampleSize;
      const height = Array.isArray(size) ? size[0] : (size ?? 32);
      const width = Array.isArray(size) ? size[1] : (size ?? 32);
      const flopsPerImage = unetFlops(unet.config, unet.parameters(), height, width);
      model ??= {
        name: options.arch ?? (typeof options.model === 'string' ? options.model : options.model instanceof URL ? options.model.href : 'model from bytes'),
        parameters: unet.parameterCount,
        gflopPerImage: flopsPerImage / 1e9,
        height,
        width,
      };
      for (const batch of batches) {
        options.signal?.throwIfAborted();
        options.onProgress?.({ task: `${backend} batch ${batch}`, done, total });
        const shape = [batch, unet.config.inChannels, height, width];
        const x = new Float32Array(shape.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i));
        const labels = labelsFor(unet, batch);
        const bench = new Bench({ iterations, warmupIterations: 1, warmupTime: 0, time: 0 });
        bench.add('forward', async () => {
          await unet.forward(x, shape, 500, labels);
        });
        await bench.run();
        const latency = (bench.tasks[0]!.result as { latency?: { min: number; max: number; p50?: number; mean: number } } | undefined)?.latency;
        if (!latency) throw new BackendError(`benchmark: the ${backend} forward at batch ${batch} failed`);
        const medianMs = latency.p50 ?? latency.mean;
        const started = performance.now();
        await sample({ unet, scheduler: opened.scheduler(scheduler), numInferenceSteps: steps, batchSize: batch, seed: 0, classLabels: labels, signal: options.signal });
        const samplingMs = performance.now() - started;
        rows.push({
          backend,
          identity: describe(unet),
          batch,
          forward: { minMs: latency.min, medianMs, maxMs: latency.max, runs: iterations },
          samplingMs,
          msPerImage: samplingMs / batch,
          gflops: (flopsPerImage * batch) / 1e9 / (medianMs / 1000),
          activationBytes: unet.activationBytes(batch, height, width),
        });
        done++;
      }
    } finally {
      opened.dispose();
    }
  }
  options.onProgress?.({ task: 'done', done: total, total });
  if (!model) throw new BackendError(`benchmark: no backend could run here (${skipped.map((s) => `${s.backend}: ${s.reason}`).join('; ')})`);
  const median = (backend: BenchBackend, batch: number) => rows.find((r) => r.backend === backend && r.batch === batch)?.forward.medianMs;
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? a / b : null);
  return {
    schema: 'marble-bench/1',
    date: new Date().toISOString(),
    runtime: runtimeName(),
    model,
    steps,
    scheduler,
    rows,
    skipped,
    ratios: batches.map((batch) => ({
      batch,
      wasmOverCpu: ratio(median('wasm', batch), median('cpu', batch)),
      wasm1OverCpu: ratio(median('wasm-1', batch), median('cpu', batch)),
    })),
  };
}
