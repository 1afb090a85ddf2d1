// What the runtime-neutral core asks of the JavaScript runtime it runs in.
//
// The core (everything under src/core) imports no `node:` module and touches
// no `process`, `Buffer` or `require`: the package's entry for a runtime
// (src/index.ts for Node, src/web/index.ts for browsers, Deno, Bun and
// workerd) registers a Host on import, and the core reaches backends, local
// files and the machine's memory size through it.
import { BackendError } from './errors.js';
import type { Backend, BackendName } from './backend/backend.js';

/** Where a .wasm comes from: its bytes, a compiled module, or a URL to fetch. */
export type WasmSource = BufferSource | WebAssembly.Module | URL | string;

export interface WasmOptions {
  /** marble.wasm, the single-threaded build (default: the one beside the package's code). */
  single?: WasmSource;
  /** marble-threads.wasm (default: beside the package's code). */
  threaded?: WasmSource;
  /**
   * Run the relaxed-SIMD builds where the runtime validates them (default
   * false). Faster GEMMs on some engines, but relaxed_madd may or may not
   * fuse per engine and CPU, so samples are no longer bit-identical across
   * runtimes.
   */
  relaxedSimd?: boolean;
}

export interface BackendOptions {
  /** Threads for the cpu and wasm backends (default: the runtime's cores). */
  threads?: number;
  /** Which wasm builds the wasm backend runs. */
  wasm?: WasmOptions;
}

export interface Host {
  /** 'node' or 'web': which entry registered it. */
  readonly name: string;
  /** Starts a backend by name ('auto': the fastest this runtime has). */
  createBackend(name: 'auto' | BackendName, options: BackendOptions): Promise<Backend>;
  /**
   * Reads a local file whole (Node, Deno, Bun); absent where the runtime has
   * no file system (browsers, workerd). Rejects with an error whose `code` is
   * 'ENOENT' when the file does not exist.
   */
  readFile?(path: string, signal?: AbortSignal): Promise<Uint8Array>;
  /** Turns a file: URL into a local path (only where readFile exists). */
  fileUrlToPath?(url: URL): string;
  /** The machine's memory in bytes, or null where the runtime does not say. */
  totalMemoryBytes(): number | null;
  /**
   * A backend for synchronous kernel calls made outside a model (a
   * scheduler's step() used on its own, as diffusers' is); null where
   * the runtime cannot make one synchronously.
   */
  kernelBackend(): Backend | null;
}

let current: Host | null = null;

/** Called by the package's entry modules; the last registration wins. */
export function registerHost(host: Host): void {
  current = host;
}

export function host(): Host {
  if (!current)
    throw new BackendError(
      "marble's runtime adapter is not loaded: import from 'marble-diffusion' (or 'marble-diffusion/web'), not from a file inside the package",
    );
  return current;
}

/**
 * The backend a scheduler's step() uses when it was not given one (sample()
 * always gives the UNet's): the runtime's synchronous kernel backend, or a
 * BackendError saying to call useBackend where the runtime has none.
 */
export function defaultStepBackend(): Backend {
  const backend = host().kernelBackend();
  if (!backend) throw new BackendError('step() needs a backend in this runtime: call scheduler.useBackend(unet.backend) first');
  return backend;
}
