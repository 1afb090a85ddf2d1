// The wasm backend of the web entry (browsers, Deno, Bun, workerd), with no
// Node built-ins; also marble-diffusion/wasm on its own.
//
// createWasmBackend picks the build: marble-threads.wasm with a pool of Web
// Workers when threads > 1 and the runtime can share memory
// (SharedArrayBuffer, and in browsers a cross-origin-isolated page) and start
// workers, else the single-threaded marble.wasm, saying why in
// backend.describe().note. Long calls run on the caller's thread here: call
// marble from a Web Worker to keep a page responsive. (In Node, the package's
// main entry runs them on a worker_thread instead.)
import { MAX_THREADS } from '../core/backend/backend.js';
import type { Backend } from '../core/backend/backend.js';
import { WASM_THREADS_MEMORY, backendOver, exportsOf, guardedExports, instantiateWasmBackend } from '../core/backend/wasm_core.js';
import { wasmBuildFile } from '../core/backend/wasm_features.js';
import { startThreads } from '../core/backend/wasm_threads.js';
import type { SpawnThread, ThreadMessage } from '../core/backend/wasm_threads.js';
import { BackendError } from '../core/errors.js';
import type { WasmSource } from '../core/host.js';
import { packageUrl } from './package_url.js';

export type { Backend, EngineModel, ParamInfo, CapturedTensor, TensorKind, TrainStepArgs } from '../core/backend/backend.js';
export { instantiateWasmBackend, instantiateWasmBackendSync } from '../core/backend/wasm_core.js';
export * from '../core/errors.js';

export type { WasmSource };

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
  /** marble.wasm (default: fetched from this package's wasm/dist; marble-relaxed.wasm with relaxedSimd). */
  single?: WasmSource;
  /** marble-threads.wasm (default: fetched from this package's wasm/dist; marble-threads-relaxed.wasm likewise). */
  threaded?: WasmSource;
  /** The relaxed-SIMD builds where the runtime has relaxed SIMD (default false: not bit-identical across runtimes). */
  relaxedSimd?: boolean;
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

// Compiled once per URL and realm: a page that loads two models fetches each build once.
const compiledUrls = new Map<string, Promise<WebAssembly.Module>>();

async function compileUrl(url: string, file: string): Promise<WebAssembly.Module> {
  const response = await fetch(url);
  if (!response.ok) throw new BackendError(`cannot fetch ${file} from ${url}: HTTP ${response.status}`);
  if (typeof WebAssembly.compileStreaming === 'function' && response.headers.get('content-type') === 'application/wasm')
    return WebAssembly.compileStreaming(response);
  return WebAssembly.compile(await response.arrayBuffer());
}

async function compile(source: WasmSource, file: string): Promise<WebAssembly.Module> {
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof URL || typeof source === 'string') {
    const url = String(source);
    let module = compiledUrls.get(url);
    if (!module) {
      module = compileUrl(url, file);
      module.catch(() => compiledUrls.delete(url));
      compiledUrls.set(url, module);
    }
    return module;
  }
  return WebAssembly.compile(source);
}

/** Why this runtime cannot run the threaded build, or null when it can. */
export function wasmThreadsUnavailableReason(options: Pick<WasmBackendOptions, 'createWorker'> = {}): string | null {
  // Browsers hide SharedArrayBuffer on pages that are not isolated: say the cause.
  if (web.crossOriginIsolated === false)
    return 'the page is not cross-origin isolated (serve it with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)';
  if (typeof SharedArrayBuffer !== 'function') return 'this runtime has no SharedArrayBuffer';
  if (options.createWorker === undefined && typeof web.Worker !== 'function') return 'this runtime has no Worker to run the pool on';
  return null;
}

/** Whether this runtime can run the threaded build: shared memory, and workers to run the pool on. */
export function wasmThreadsSupported(options: Pick<WasmBackendOptions, 'createWorker'> = {}): boolean {
  return wasmThreadsUnavailableReason(options) === null;
}

export async function createWasmBackend(options: WasmBackendOptions = {}): Promise<Backend> {
  if (typeof WebAssembly !== 'object') throw new BackendError('this runtime has no WebAssembly');
  const threads = options.threads ?? web.navigator?.hardwareConcurrency ?? 1;
  if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS)
    throw new BackendError(`threads must be an integer from 1 to ${MAX_THREADS}, got ${threads}`);
  const relaxed = options.relaxedSimd ?? false;
  const dist = (file: string) => packageUrl(`wasm/dist/${file}`);

  const unavailable = threads === 1 ? null : wasmThreadsUnavailableReason(options);
  if (threads === 1 || unavailable) {
    try {
      const module = await compile(options.single ?? dist(wasmBuildFile('single', relaxed)), 'marble.wasm');
      return await instantiateWasmBackend(module, unavailable ? `single-threaded: ${unavailable}` : undefined);
    } catch (e) {
      throw e instanceof BackendError ? e : new BackendError(`cannot load marble.wasm: ${(e as Error).message}`);
    }
  }

  let module: WebAssembly.Module;
  let memory: WebAssembly.Memory;
  let instance: WebAssembly.Instance;
  try {
    module = await compile(options.threaded ?? dist(wasmBuildFile('threads', relaxed)), 'marble-threads.wasm');
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
