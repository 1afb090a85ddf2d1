// onnxruntime rows for bench/forward.ts: the same cifar10-32 architecture and
// random weights as marble's rows, exported with marble's ONNX exporter, run
// in onnxruntime-node (CPU EP) and onnxruntime-web (wasm EP, 1 and N threads)
// when they are installed (`npm run bench:ort`). Each runtime and thread
// count runs in its own child process: onnxruntime-web fixes its thread count
// when its wasm first initialises, and separate processes keep the runtimes'
// thread pools from competing with each other or with marble's.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { createUNet } from '../src/index.js';
import { unetToOnnx } from '../src/onnx/export.js';
import { CIFAR10_CONFIG } from './models.js';
import { createOrtSession, loadOrt } from './onnxruntime.js';
import type { OrtRuntime } from './onnxruntime.js';

export interface OrtForwardRow {
  backend: string;
  isa: string;
  threads: number;
  batch: number;
  ms: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

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
 * Forward rows for every installed runtime: onnxruntime-node at `threads`,
 * onnxruntime-web at 1 and `threads`. Empty (with a note on stderr) when none is installed.
 */
export async function ortForwardRows(batches: readonly number[], threads: number, iterations: number): Promise<OrtForwardRow[]> {
  const runtimes = await installedRuntimes();
  if (runtimes.length === 0) {
    console.error('onnxruntime-node / onnxruntime-web are not installed: no onnxruntime rows (npm run bench:ort installs them)');
    return [];
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'marble-bench-onnx-'));
  const modelFile = path.join(dir, 'cifar10-32.onnx');
  try {
    const unet = await createUNet(CIFAR10_CONFIG, { backend: 'wasm', seed: 1 });
    writeFileSync(modelFile, unetToOnnx(unet));
    unet.dispose();
    const rows: OrtForwardRow[] = [];
    for (const { runtime, version } of runtimes) {
      const threadCounts = runtime === 'onnxruntime-web' ? [...new Set([1, threads])] : [threads];
      for (const n of threadCounts) {
        const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), runtime, String(n), batches.join(','), String(iterations), modelFile], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        const timings = JSON.parse(out.trim().split('\n').pop()!) as { batch: number; ms: number }[];
        for (const t of timings)
          rows.push({ backend: `${runtime} ${version}`, isa: runtime === 'onnxruntime-web' ? 'wasm' : 'mlas', threads: n, batch: t.batch, ms: t.ms });
      }
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// child: node ort_forward.js RUNTIME THREADS BATCHES ITERATIONS MODEL -> one JSON line of { batch, ms }
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [runtime, threadsArg, batchesArg, iterationsArg, modelFile] = process.argv.slice(2) as [OrtRuntime, string, string, string, string];
  const loaded = await loadOrt(runtime);
  if (!loaded) throw new Error(`${runtime} is not installed`);
  const { ort } = loaded;
  const session = await createOrtSession(runtime, ort, readFileSync(modelFile), Number(threadsArg));
  const results: { batch: number; ms: number }[] = [];
  for (const batch of batchesArg.split(',').map(Number)) {
    const sample = new Float32Array(batch * 3 * 32 * 32).map((_, i) => Math.sin(i));
    const feeds = {
      sample: new ort.Tensor('float32', sample, [batch, 3, 32, 32]),
      timestep: new ort.Tensor('float32', new Float32Array(batch).fill(500), [batch]),
    };
    await session.run(feeds); // warm-up, as tinybench's warmupIterations: 1 for marble's rows
    const times: number[] = [];
    for (let i = 0; i < Number(iterationsArg); i++) {
      const t0 = performance.now();
      await session.run(feeds);
      times.push(performance.now() - t0);
    }
    results.push({ batch, ms: Math.round(median(times) * 10) / 10 });
  }
  await session.release();
  console.log(JSON.stringify(results));
  process.exit(0); // onnxruntime-web's worker threads would keep the process alive
}
