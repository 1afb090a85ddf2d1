// marble-diffusion/wasm: the wasm backend for any JavaScript runtime
// (browsers, Deno, workerd, Node), with no Node built-ins.
//
// createWasmBackend picks the build: marble-threads.wasm with a pool of Web
// Workers when threads > 1 and the runtime can share memory
// (SharedArrayBuffer, and in browsers a cross-origin-isolated page), else the
// single-threaded marble.wasm. Long calls run on the caller's thread here:
// call marble from a Web Worker to keep a page responsive. (In Node, the
// package's main entry runs them on a worker_thread instead.)
import type { Backend } from '../core/backend/backend.js';
import { WASM_THREADS_MEMORY, backendOver, exportsOf, guardedExports, instantiateWasmBackend } from '../core/backend/wasm_core.js';
import { wasmBuildFile } from '../core/backend/wasm_features.js';
import { startThreads } from '../core/backend/wasm_threads.js';
import type { SpawnThread, ThreadMessage } from '../core/backend/wasm_threads.js';
import { BackendError } from '../core/errors.js';

export type { Backend, EngineModel, ParamInfo, CapturedTensor, TensorKind, TrainStepArgs } from '../core/backend/backend.js';
export { instantiateWasmBackend, instantiateWasmBackendSync } from '../core/backend/wasm_core.js';
export * from '../core/errors.js';

/** Where a .wasm comes from: its bytes, a compiled module, or a URL to fetch. */
export type WasmSource = BufferSource | WebAssembly.Module | URL | string;

/** The part of a Web Worker the pool uses. */
export interface WorkerLike {
  postMessage(message: unknown): void;
  terminate(): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: { message?: string }) => void) | null;
}

export interface WasmBackendOptions {
  /** Pool size (default: navigator.hardwareConcurrency, else 1); 1 means the single-threaded build. */
  threads?: number;
  /** marble.wasm (default: fetched from this package's wasm/dist; marble-relaxed.wasm where the runtime has relaxed SIMD). */
  single?: WasmSource;
  /** marble-threads.wasm (default: fetched from this package's wasm/dist; marble-threads-relaxed.wasm likewise). */
  threaded?: WasmSource;
  /** Makes one pool worker running dist/src/web/wasm_worker_web.js (default: a module Web Worker on it). */
  createWorker?: () => WorkerLike;
}

interface WebGlobals {
  crossOriginIsolated?: boolean;
  navigator?: { hardwareConcurrency?: number };
  window?: unknown;
  Worker?: new (url: URL, options: { type: 'module' }) => WorkerLike;
}
const web = globalThis as unknown as WebGlobals;

async function compile(source: WasmSource, file: string): Promise<WebAssembly.Module> {
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof URL || typeof source === 'string') {
    const response = await fetch(source);
    if (!response.ok) throw new BackendError(`cannot fetch ${file} from ${String(source)}: HTTP ${response.status}`);
    return WebAssembly.compile(await response.arrayBuffer());
  }
  return WebAssembly.compile(source);
}

/** Whether this runtime can run the threaded build: shared memory, and workers to run the pool on. */
export function wasmThreadsSupported(options: Pick<WasmBackendOptions, 'createWorker'> = {}): boolean {
  if (typeof SharedArrayBuffer !== 'function') return false;
  if (web.crossOriginIsolated === false) return false; // a browser page without COOP/COEP
  return options.createWorker !== undefined || typeof web.Worker === 'function';
}

export async function createWasmBackend(options: WasmBackendOptions = {}): Promise<Backend> {
  if (typeof WebAssembly !== 'object') throw new BackendError('this runtime has no WebAssembly');
  const threads = options.threads ?? web.navigator?.hardwareConcurrency ?? 1;
  if (!Number.isInteger(threads) || threads < 1) throw new BackendError(`threads must be a positive integer, got ${threads}`);
  const dist = (file: string) => new URL(`../../../wasm/dist/${file}`, import.meta.url);

  if (threads === 1 || !wasmThreadsSupported(options)) {
    try {
      return await instantiateWasmBackend(await compile(options.single ?? dist(wasmBuildFile('single')), 'marble.wasm'));
    } catch (e) {
      throw e instanceof BackendError ? e : new BackendError(`cannot load marble.wasm: ${(e as Error).message}`);
    }
  }

  let module: WebAssembly.Module;
  let memory: WebAssembly.Memory;
  let instance: WebAssembly.Instance;
  try {
    module = await compile(options.threaded ?? dist(wasmBuildFile('threads')), 'marble-threads.wasm');
    memory = new WebAssembly.Memory(WASM_THREADS_MEMORY);
    instance = await WebAssembly.instantiate(module, { env: { memory } });
  } catch (e) {
    throw e instanceof BackendError ? e : new BackendError(`cannot load marble-threads.wasm: ${(e as Error).message}`);
  }
  const createWorker =
    options.createWorker ?? (() => new web.Worker!(new URL('./wasm_worker_web.js', import.meta.url), { type: 'module' }));
  const spawn: SpawnThread = (init, events) => {
    const worker = createWorker();
    worker.onmessage = (event) => events.message(event.data as ThreadMessage);
    worker.onerror = (event) => events.error(new Error(event.message ?? 'worker error'));
    worker.postMessage(init);
    return { post: (message) => worker.postMessage(message), terminate: () => worker.terminate() };
  };
  const ex = guardedExports(exportsOf(instance, memory));
  try {
    const started = await startThreads({
      module,
      memory,
      ex,
      poolWorkers: threads - 1,
      engineThread: false,
      // memory.atomic.wait32 traps on a browser's main thread: the caller spins there.
      callerMayWait: typeof web.window === 'undefined',
      spawn,
    });
    return backendOver(ex, { threads, dispose: started.dispose });
  } catch (e) {
    throw new BackendError(`cannot start the wasm pool workers: ${(e as Error).message}`);
  }
}
