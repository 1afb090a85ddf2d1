// The wasm backend in Node.
//
// Node always has SharedArrayBuffer, so loadUNet's wasm backend is the
// threaded build (wasm/dist/marble-threads.wasm) on a shared memory, with
// three kinds of instance on it:
//   - one on this (the main) thread, for the light synchronous calls
//     (parameter table, weights in and out, scheduler steps, AdamW, noise);
//   - one on an engine worker_thread, which runs the long calls (forward,
//     training step), so the event loop stays free while they run;
//   - `threads - 1` pool workers, which the engine's parallel regions use.
// `threads: 1` is the single-threaded path (no pool workers: every region runs
// serially on its caller); the engine worker still keeps the event loop free.
//
// Why not message passing to a worker that owns everything: the Backend
// interface is synchronous apart from forward and trainStep, and a shared
// memory lets those sync calls stay plain function calls on the same model,
// with no copy of the weights or of the results through postMessage.
//
// wasm/dist/marble.wasm (single-threaded, no shared memory) serves the
// synchronous wasmBackendSync() below, and runtimes without SharedArrayBuffer
// through src/web/wasm.ts.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

import { BackendError } from '../core/errors.js';
import type { WasmOptions, WasmSource } from '../core/host.js';
import { MAX_THREADS, checkThreads } from '../core/backend/backend.js';
import type { Backend } from '../core/backend/backend.js';
import { packageRoot } from './native.js';
import { WASM_THREADS_MEMORY, backendOver, exportsOf, guardedExports, instantiateWasmBackend, instantiateWasmBackendSync } from '../core/backend/wasm_core.js';
import { wasmBuildFile } from '../core/backend/wasm_features.js';
import { startThreads } from '../core/backend/wasm_threads.js';
import type { SpawnThread } from '../core/backend/wasm_threads.js';

// Compiled once per file and process.
const compiled = new Map<string, Promise<WebAssembly.Module>>();

function compileFile(file: string): Promise<WebAssembly.Module> {
  let module = compiled.get(file);
  if (!module) {
    module = readFile(file).then((bytes) => WebAssembly.compile(bytes));
    module.catch(() => compiled.delete(file));
    compiled.set(file, module);
  }
  return module;
}

// Relaxed SIMD only when asked for (options.wasm.relaxedSimd, or
// MARBLE_WASM_RELAXED=1): the plain builds give the same bits everywhere.
const wantRelaxed = (wasm: WasmOptions | undefined) => wasm?.relaxedSimd ?? process.env.MARBLE_WASM_RELAXED === '1';

/** The single-threaded build this runtime runs. */
export function wasmPath(wasm?: WasmOptions): string {
  return path.join(packageRoot(), 'wasm', 'dist', wasmBuildFile('single', wantRelaxed(wasm)));
}

/** The threaded build this runtime runs. */
export function wasmThreadsPath(wasm?: WasmOptions): string {
  return path.join(packageRoot(), 'wasm', 'dist', wasmBuildFile('threads', wantRelaxed(wasm)));
}

async function moduleOf(source: WasmSource | undefined, file: string): Promise<WebAssembly.Module> {
  if (source === undefined) return compileFile(file);
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof URL || typeof source === 'string') {
    const url = new URL(String(source), pathToFileURL(`${process.cwd()}/`));
    return url.protocol === 'file:' ? compileFile(fileURLToPath(url)) : WebAssembly.compile(await (await fetch(url)).arrayBuffer());
  }
  return WebAssembly.compile(source);
}

/** Default pool size: the cores Node may use. */
export function defaultThreads(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

const WORKER_SCRIPT = new URL('./wasm_worker_node.js', import.meta.url);

/** worker_threads for wasm_threads.ts: unref'd, so they never keep the process alive by themselves. */
export const spawnNodeThread: SpawnThread = (init, events) => {
  // execArgv: [] — the worker runs only compiled JS and wasm, and some of the
  // parent's flags (--input-type, say) would stop a worker from starting.
  const worker = new Worker(WORKER_SCRIPT, { workerData: init, execArgv: [] });
  let terminated = false;
  worker.on('message', events.message);
  worker.on('error', events.error);
  worker.on('exit', (code) => {
    if (!terminated) events.error(new Error(`the worker thread exited (code ${code})`));
  });
  worker.unref();
  return {
    post: (message) => worker.postMessage(message),
    terminate: () => {
      terminated = true;
      void worker.terminate();
    },
    ref: () => worker.ref(),
    unref: () => worker.unref(),
  };
};

export async function createWasmBackend(options: { threads?: number; wasm?: WasmOptions } = {}): Promise<Backend> {
  if (typeof WebAssembly !== 'object') throw new BackendError('this runtime has no WebAssembly');
  checkThreads(options.threads);
  const threads = Math.min(options.threads ?? defaultThreads(), MAX_THREADS);
  if (typeof SharedArrayBuffer === 'undefined') {
    // Node started with shared memory disabled: the single-threaded build, on this thread.
    const file = wasmPath(options.wasm);
    try {
      const note = threads > 1 ? 'SharedArrayBuffer is disabled in this process: the single-threaded build' : undefined;
      return await instantiateWasmBackend(await moduleOf(options.wasm?.single, file), note);
    } catch (e) {
      throw new BackendError(`cannot load ${file}: ${(e as Error).message}`);
    }
  }
  const file = wasmThreadsPath(options.wasm);
  let module: WebAssembly.Module;
  let memory: WebAssembly.Memory;
  let instance: WebAssembly.Instance;
  try {
    module = await moduleOf(options.wasm?.threaded, file);
    memory = new WebAssembly.Memory(WASM_THREADS_MEMORY);
    instance = new WebAssembly.Instance(module, { env: { memory } });
  } catch (e) {
    throw new BackendError(`cannot load ${file}: ${(e as Error).message}`);
  }
  const ex = guardedExports(exportsOf(instance, memory));
  try {
    const started = await startThreads({
      module,
      memory,
      ex,
      poolWorkers: threads - 1,
      engineThread: true,
      callerMayWait: true, // every Node thread may block, the main one included
      spawn: spawnNodeThread,
    });
    return backendOver(ex, { threads, longCall: started.longCall, dispose: started.dispose });
  } catch (e) {
    throw new BackendError(`cannot start the wasm worker threads: ${(e as Error).message}`);
  }
}

let syncBackend: Backend | null = null;

/** A wasm backend instantiated synchronously (Node allows it), for synchronous APIs such as scheduler.step(). */
export function wasmBackendSync(): Backend {
  if (!syncBackend) {
    try {
      syncBackend = instantiateWasmBackendSync(new WebAssembly.Module(readFileSync(wasmPath())));
    } catch (e) {
      throw new BackendError(`cannot load ${wasmPath()}: ${(e as Error).message}`);
    }
  }
  return syncBackend;
}
