// npm run bench: forward time of the cifar10-32 architecture (random weights)
// at batch 1 and 8 on each backend, with GFLOP/s. Results also go to
// bench/results/forward.json. Figures are machine-dependent: compare ratios
// measured in one run, not numbers across machines.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';

import { createUNet } from '../src/index.js';
import type { LoadOptions } from '../src/index.js';
import { nativeAvailable } from '../src/node/native.js';
import { wasmPath } from '../src/node/wasm.js';
import { createWasmBackend } from '../src/web/wasm.js';
import { CIFAR10_CONFIG, CIFAR10_GFLOP_PER_IMAGE } from './models.js';
// Also (issue #5): % of the measured peak (bench/peak.ts) for each row's ISA and
// thread count; onnxruntime-node / onnxruntime-web on the same model when
// installed (bench/ort_forward.ts); marble cpu and onnxruntime-node on one
// thread each, interleaved (bench/single_thread.ts).
import { ortForwardRows } from '../src/node/ort_forward.js';
import { peakPercent, resultPeaks } from './peak.js';
import { singleThreadRows } from './single_thread.js';

// --- wasm rows (issue #5 threads): `wasm-tN` is the Node wasm backend
// (marble-threads.wasm, forward on its engine worker) with N threads;
// `wasm-single` is marble.wasm on the main thread (runtimes without shared memory).
const wasmThreads = (process.env.BENCH_WASM_THREADS ?? '1,2').split(',').map(Number);
const wasmSingle = await createWasmBackend({ threads: 1, single: readFileSync(wasmPath()) });
const configs = new Map<string, LoadOptions>([
  ...(nativeAvailable() ? [['cpu', { backend: 'cpu' }] as const] : []),
  ['wasm-single', { backend: wasmSingle }],
  ...wasmThreads.map((threads) => [`wasm-t${threads}`, { backend: 'wasm', threads }] as const),
]);
const backends = [...configs.keys()];
// --- end of the wasm rows
const batches = (process.env.BENCH_BATCHES ?? '1,8').split(',').map(Number);
const bench = new Bench({ iterations: Number(process.env.BENCH_ITERATIONS ?? 5), warmupIterations: 1, time: 0 });
const rows: { backend: string; isa: string; threads: number; batch: number; ms: number; gflops: number; 'peak %'?: number | null }[] = [];
const gflopsAt = (batch: number, ms: number) => Math.round(((CIFAR10_GFLOP_PER_IMAGE * batch) / (ms / 1000)) * 10) / 10;

const models = new Map<string, Awaited<ReturnType<typeof createUNet>>>();
for (const backend of backends) models.set(backend, await createUNet(CIFAR10_CONFIG, { ...configs.get(backend), seed: 1 }));

for (const backend of backends) {
  const unet = models.get(backend)!;
  for (const batch of batches) {
    const sample = new Float32Array(batch * 3 * 32 * 32).map((_, i) => Math.sin(i));
    bench.add(`${backend} b${batch}`, async () => {
      await unet.forward(sample, [batch, 3, 32, 32], 500);
    });
  }
}
await bench.run();

for (const task of bench.tasks) {
  const [backend, b] = task.name.split(' ') as [string, string];
  const batch = Number(b.slice(1));
  const result = task.result as { latency?: { min: number; p50?: number; mean: number } } | undefined;
  const ms = result?.latency?.p50 ?? result?.latency?.mean ?? NaN;
  const unet = models.get(backend)!;
  rows.push({
    backend,
    isa: unet.backend.isa(),
    threads: unet.backend.threads(),
    batch,
    ms: Math.round(ms * 10) / 10,
    gflops: gflopsAt(batch, ms),
  });
}
for (const unet of models.values()) unet.dispose();
{
  // The same architecture and random weights, exported and run in onnxruntime (when installed).
  const exported = await createUNet(CIFAR10_CONFIG, { backend: 'wasm', threads: 1, seed: 1 });
  for (const row of await ortForwardRows(exported, { height: 32, width: 32 }, batches, os.cpus().length, Number(process.env.BENCH_ITERATIONS ?? 5)))
    rows.push({ backend: row.backend, isa: row.isa, threads: row.threads, batch: row.batch, ms: Math.round(row.ms * 10) / 10, gflops: gflopsAt(row.batch, row.ms) });
  exported.dispose();
}
for (const row of await singleThreadRows(batches, Number(process.env.BENCH_ITERATIONS ?? 5)))
  rows.push({ ...row, gflops: gflopsAt(row.batch, row.ms) });
const peaks = await resultPeaks();
for (const row of rows) row['peak %'] = peakPercent(row, peaks);
console.log(`forward, google/ddpm-cifar10-32 architecture, random weights (${os.cpus()[0]?.model}, ${os.cpus().length} cores)`);
console.table(rows);
const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.resolve(here, '..', '..', 'bench', 'results');
mkdirSync(outDir, { recursive: true });
writeFileSync(path.join(outDir, 'forward.json'), JSON.stringify({ date: new Date().toISOString(), cpu: os.cpus()[0]?.model, rows }, null, 2) + '\n');
