// onnxruntime rows beside marble's, for `marble bench` and the repository's
// `npm run bench`: the same model (the same weights, exported by marble's
// ONNX exporter), run in onnxruntime-node (CPU EP) and onnxruntime-web (wasm
// EP, 1 and N threads) when they are installed (`npm run bench:ort`; optional
// peers, never dependencies). Each runtime and thread count runs in a child
// process of its own: onnxruntime-web fixes its thread count when its wasm
// first initialises, in a process that loaded onnxruntime-node it silently
// runs on the native backend, and separate processes keep the runtimes'
// thread pools from competing with each other or with marble's.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import type { UNet2DModel } from '../core/model/unet.js';
import { classConditioning } from '../core/model/config.js';
import { unetToOnnx } from '../onnx/export.js';
import { createOrtSession, loadOrt } from './onnxruntime.js';
import type { OrtRuntime } from './onnxruntime.js';

export interface OrtForwardRow {
  backend: string;
  isa: string;
  threads: number;
  batch: number;
  /** Median of `iterations` runs after one warm-up. */
  ms: number;
  minMs: number;
  maxMs: number;
}

/** Which optional runtimes are installed here. */
export async function installedRuntimes(): Promise<{ runtime: OrtRuntime; version: string }[]> {
  const found: { runtime: OrtRuntime; version: string }[] = [];
  for (const runtime of ['onnxruntime-node', 'onnxruntime-web'] as const) {
    const loaded = await loadOrt(runtime);
    if (loaded) found.push({ runtime, version: loaded.version });
  }
  return found;
}

/**
 * Forward rows for every installed runtime on `unet` (which must keep its
 * weights, for the export): onnxruntime-node at `threads`, onnxruntime-web at
 * 1 and `threads`. Empty when none is installed.
 */
export async function ortForwardRows(
  unet: UNet2DModel,
  size: { height: number; width: number },
  batches: readonly number[],
  threads: number,
  iterations: number,
): Promise<OrtForwardRow[]> {
  const runtimes = await installedRuntimes();
  if (runtimes.length === 0) return [];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'marble-bench-onnx-'));
  const modelFile = path.join(dir, 'unet.onnx');
  try {
    writeFileSync(modelFile, unetToOnnx(unet));
    const input = {
      channels: unet.config.inChannels,
      ...size,
      classes: classConditioning(unet.config) === 'labels' ? unet.config.numClassEmbeds! : 0,
    };
    const rows: OrtForwardRow[] = [];
    for (const { runtime, version } of runtimes) {
      const threadCounts = runtime === 'onnxruntime-web' ? [...new Set([1, threads])] : [threads];
      for (const n of threadCounts) {
        const job = JSON.stringify({ runtime, threads: n, batches, iterations, modelFile, input });
        const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), job], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
        const timings = JSON.parse(out.trim().split('\n').pop()!) as { batch: number; ms: number; minMs: number; maxMs: number }[];
        for (const t of timings)
          rows.push({ backend: `${runtime} ${version}`, isa: runtime === 'onnxruntime-web' ? 'wasm' : 'mlas', threads: n, ...t });
      }
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// child: node ort_forward.js JOB_JSON -> one JSON line of { batch, ms, minMs, maxMs }
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const job = JSON.parse(process.argv[2]!) as {
    runtime: OrtRuntime;
    threads: number;
    batches: number[];
    iterations: number;
    modelFile: string;
    input: { channels: number; height: number; width: number; classes: number };
  };
  const loaded = await loadOrt(job.runtime);
  if (!loaded) throw new Error(`${job.runtime} is not installed`);
  const { ort } = loaded;
  const session = await createOrtSession(job.runtime, ort, readFileSync(job.modelFile), job.threads);
  const results: { batch: number; ms: number; minMs: number; maxMs: number }[] = [];
  const { channels, height, width, classes } = job.input;
  for (const batch of job.batches) {
    const sample = new Float32Array(batch * channels * height * width).map((_, i) => Math.sin(i));
    const feeds: Record<string, unknown> = {
      sample: new ort.Tensor('float32', sample, [batch, channels, height, width]),
      timestep: new ort.Tensor('float32', new Float32Array(batch).fill(500), [batch]),
    };
    if (classes > 0) feeds.class_labels = new ort.Tensor('int64', BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % classes)), [batch]);
    const run = () => session.run(feeds as Parameters<typeof session.run>[0]);
    await run(); // warm-up, as marble's rows
    const times: number[] = [];
    for (let i = 0; i < job.iterations; i++) {
      const t0 = performance.now();
      await run();
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    results.push({ batch, ms: times[Math.floor(times.length / 2)]!, minMs: times[0]!, maxMs: times.at(-1)! });
  }
  await session.release();
  console.log(JSON.stringify(results));
  process.exit(0); // onnxruntime-web's worker threads would keep the process alive
}
