// The machine's measured float32 peak, per ISA path and thread count: the
// denominators of the benchmarks' "% of peak". The kernel is
// native/cpu/peak.cpp (register-resident multiply-adds, no memory traffic),
// run through the addon's thread pool (cpu) and through marble.wasm (wasm;
// N threads = N worker_threads each running its own instance, started
// together, which is what N wasm threads can do at best).
//
// Two estimates per path, both lower bounds of the ceiling: wall-clock
// (flops / elapsed, which other load on a shared machine lowers) and CPU-time
// (flops / the CPU seconds the process got x threads: the rate while the
// threads actually run, which time-slicing does not lower). `gflops`, the
// peak the benchmarks divide by, is the higher of the two. `npm run bench`
// measures at its start and again at its end (--merge) and keeps the higher
// figures: bench/results/peak.json holds the best seen in the run.
//
// Run alone: node dist/bench/peak.js [--merge] (prints the table, writes bench/results/peak.json).
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

import { nativeAvailable } from '../src/node/native.js';
import { loadDevAddon } from '../test/support/dev_addon.js';
import { wasmPath } from '../src/node/wasm.js';
import { readResult, writeResult } from './results.js';

export interface PeakRow {
  /** 'cpu' (the addon) or 'wasm'. */
  backend: 'cpu' | 'wasm';
  /** The GEMM path this ceiling belongs to: avx512, avx2, generic (native SSE2), simd128 (wasm). */
  isa: string;
  threads: number;
  /** The peak: the higher of the two estimates below. */
  gflops: number;
  /** flops / wall-clock seconds, best of the repeats. */
  wallGflops: number;
  /** flops / process CPU seconds x threads, best of the repeats. */
  cpuTimeGflops: number;
}

interface Estimate {
  wall: number;
  cpuTime: number;
}

function timed(threads: number, run: () => number): Estimate {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const flops = run();
  const wallSeconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  return { wall: flops / wallSeconds / 1e9, cpuTime: cpuSeconds > 0 ? (flops / cpuSeconds / 1e9) * threads : 0 };
}

const better = (a: Estimate, b: Estimate): Estimate => ({ wall: Math.max(a.wall, b.wall), cpuTime: Math.max(a.cpuTime, b.cpuTime) });

const ISA_CODES: Record<string, number> = { generic: 0, avx2: 1, avx512: 2 };
/** Each measurement runs about this long; the best of `repeats` is kept (other load only slows a run down). */
const TARGET_SECONDS = Number(process.env.BENCH_PEAK_SECONDS ?? 0.25);
const REPEATS = Number(process.env.BENCH_PEAK_REPEATS ?? 3);

type PeakFn = (isa: number, tasks: number, iterations: number) => number;

/** GFLOP/s of `threads` threads: calibrates the iteration count, then the best of REPEATS runs. */
function measureNative(peak: PeakFn, isa: number, threads: number): Estimate {
  // Several tasks per thread so the pool's work queue balances a late-waking worker.
  const tasks = threads === 1 ? 1 : threads * 4;
  let iterations = 1e5;
  for (;;) {
    const t0 = performance.now();
    const flops = peak(isa, tasks, iterations);
    const seconds = (performance.now() - t0) / 1000;
    if (flops === 0) return { wall: 0, cpuTime: 0 };
    if (seconds > TARGET_SECONDS / 4) {
      iterations = Math.ceil((iterations * TARGET_SECONDS) / seconds);
      break;
    }
    iterations *= 4;
  }
  let best: Estimate = { wall: 0, cpuTime: 0 };
  for (let r = 0; r < REPEATS; r++) best = better(best, timed(threads, () => peak(isa, tasks, iterations)));
  return best;
}

interface WasmPeakExports {
  mb_peak_fma: PeakFn;
}

function wasmInstance(module: WebAssembly.Module): WasmPeakExports {
  return new WebAssembly.Instance(module, {}).exports as unknown as WasmPeakExports;
}

/** N workers, each with its own wasm instance, released together by an Atomics barrier. */
async function measureWasm(module: WebAssembly.Module, threads: number): Promise<Estimate> {
  const single = wasmInstance(module);
  let iterations = 1e5;
  for (;;) {
    const t0 = performance.now();
    single.mb_peak_fma(0, 1, iterations);
    const seconds = (performance.now() - t0) / 1000;
    if (seconds > TARGET_SECONDS / 4) {
      iterations = Math.ceil((iterations * TARGET_SECONDS) / seconds);
      break;
    }
    iterations *= 4;
  }
  let best: Estimate = { wall: 0, cpuTime: 0 };
  for (let r = 0; r < REPEATS; r++) {
    const gate = new Int32Array(new SharedArrayBuffer(8));
    const workers = Array.from({ length: threads }, () => new Worker(fileURLToPath(import.meta.url), { workerData: { module, gate, iterations } }));
    const ready = workers.map((w) => new Promise<void>((resolve) => w.once('message', () => resolve())));
    await Promise.all(ready);
    const results = workers.map((w) => new Promise<{ flops: number; end: number }>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    }));
    // the main thread idles in the event loop meanwhile: the process's CPU time is the workers'
    const cpu0 = process.cpuUsage();
    const start = performance.timeOrigin + performance.now();
    Atomics.store(gate, 0, 1);
    Atomics.notify(gate, 0);
    const done = await Promise.all(results);
    const cpu = process.cpuUsage(cpu0);
    const seconds = (Math.max(...done.map((d) => d.end)) - start) / 1000;
    const flops = done.reduce((n, d) => n + d.flops, 0);
    best = better(best, { wall: flops / seconds / 1e9, cpuTime: (flops / ((cpu.user + cpu.system) / 1e6) / 1e9) * threads });
    await Promise.all(workers.map((w) => w.terminate()));
  }
  return best;
}

const round1 = (x: number) => Math.round(x * 10) / 10;

function peakRow(backend: 'cpu' | 'wasm', isa: string, threads: number, e: Estimate): PeakRow {
  return { backend, isa, threads, gflops: round1(Math.max(e.wall, e.cpuTime)), wallGflops: round1(e.wall), cpuTimeGflops: round1(e.cpuTime) };
}

/** Peak GFLOP/s for every ISA path this machine has, at 1 thread and at `threads` (default: the cores). */
export async function measurePeaks(threads = os.cpus().length): Promise<PeakRow[]> {
  const rows: PeakRow[] = [];
  const counts = [...new Set([1, threads])];
  if (nativeAvailable()) {
    // peakFma is in the development addon (scripts/dev_addons.mjs), not the product one.
    const addon = loadDevAddon() as unknown as { peakFma?: PeakFn; setThreads(n: number): number; threads(): number };
    if (addon.peakFma) {
      const before = addon.threads();
      for (const [isa, code] of Object.entries(ISA_CODES))
        for (const n of counts) {
          addon.setThreads(n);
          const estimate = measureNative(addon.peakFma, code, n);
          if (estimate.wall > 0) rows.push(peakRow('cpu', isa, n, estimate));
        }
      addon.setThreads(before);
    }
  }
  const module = new WebAssembly.Module(readFileSync(wasmPath()));
  if (WebAssembly.Module.exports(module).some((e) => e.name === 'mb_peak_fma'))
    for (const n of counts) rows.push(peakRow('wasm', 'simd128', n, await measureWasm(module, n)));
  return rows;
}

/** The peak a measured row should be compared with: same backend and ISA, same thread count (null if not measured). */
export function peakFor(peaks: readonly PeakRow[], backend: 'cpu' | 'wasm', isa: string, threads: number): number | null {
  const wasmIsa = backend === 'wasm' ? 'simd128' : isa;
  return peaks.find((p) => p.backend === backend && p.isa === wasmIsa && p.threads === threads)?.gflops ?? null;
}

/** The peaks measured earlier in this `npm run bench` (bench/results/peak.json, under an hour old), else measured now. */
export async function resultPeaks(): Promise<PeakRow[]> {
  const saved = readResult<{ date: string; rows: PeakRow[] }>('peak.json');
  if (saved && Date.now() - Date.parse(saved.date) < 3600_000) return saved.rows;
  return measurePeaks();
}

/**
 * A benchmark row's GFLOP/s as a percentage of the peak it can reach: the
 * same backend, ISA and thread count; onnxruntime-node against the widest
 * native ISA (its MLAS kernels pick it at run time), onnxruntime-web against wasm.
 */
export function peakPercent(row: { backend: string; isa: string; threads: number; gflops: number }, peaks: readonly PeakRow[]): number | null {
  let peak: number | null;
  // marble's rows are named cpu..., wasm... (e.g. wasm-t2); onnxruntime-web's isa is 'wasm'
  if (row.backend.startsWith('cpu')) peak = peakFor(peaks, 'cpu', row.isa, row.threads);
  else if (row.backend.startsWith('wasm') || row.isa === 'wasm' || row.isa === 'simd128') peak = peakFor(peaks, 'wasm', 'simd128', row.threads);
  else peak = Math.max(0, ...peaks.filter((p) => p.backend === 'cpu' && p.threads === row.threads).map((p) => p.gflops)) || null;
  return peak ? Math.round((row.gflops / peak) * 1000) / 10 : null;
}

if (!isMainThread) {
  // a wasm peak worker: instantiate, say ready, wait for the gate, run, report the end time
  const { module, gate, iterations } = workerData as { module: WebAssembly.Module; gate: Int32Array; iterations: number };
  const instance = wasmInstance(module);
  parentPort!.postMessage('ready');
  Atomics.wait(gate, 0, 0);
  const flops = instance.mb_peak_fma(0, 1, iterations);
  parentPort!.postMessage({ flops, end: performance.timeOrigin + performance.now() });
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const rows = await measurePeaks();
  const earlier = process.argv.includes('--merge') ? (readResult<{ rows: PeakRow[] }>('peak.json')?.rows ?? []) : [];
  for (const row of rows) {
    const before = earlier.find((p) => p.backend === row.backend && p.isa === row.isa && p.threads === row.threads);
    if (!before) continue;
    row.wallGflops = Math.max(row.wallGflops, before.wallGflops ?? 0);
    row.cpuTimeGflops = Math.max(row.cpuTimeGflops, before.cpuTimeGflops ?? 0);
    row.gflops = Math.max(row.gflops, before.gflops, row.wallGflops, row.cpuTimeGflops);
  }
  console.log(`peak float32 throughput (native/cpu/peak.cpp), ${os.cpus()[0]?.model}, ${os.cpus().length} cores${earlier.length ? ', best of this run' : ''}`);
  console.table(rows);
  writeResult('peak.json', { rows });
}
