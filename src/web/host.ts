// The web adapter: registers the Host the core runs on (src/core/host.ts) in
// browsers, Web Workers, Deno, Bun and workerd. The wasm backend only (the
// native addon is Node's), files by fetch, and local files through Deno's or
// Bun's own APIs where those exist, with no Node built-in anywhere.
import { BackendError } from '../core/errors.js';
import { registerHost } from '../core/host.js';
import type { Host } from '../core/host.js';
import { createWasmBackend } from './wasm.js';

interface RuntimeGlobals {
  Deno?: { readFile(path: string, options?: { signal?: AbortSignal }): Promise<Uint8Array> };
  Bun?: { file(path: string): { exists(): Promise<boolean>; arrayBuffer(): Promise<ArrayBuffer> } };
  navigator?: { deviceMemory?: number };
}
const runtime = globalThis as unknown as RuntimeGlobals;

/** Local files where the runtime has them: Deno and Bun; not browsers or workerd. */
function localFileReader(): Host['readFile'] {
  const { Deno, Bun } = runtime;
  if (Deno) return (path, signal) => Deno.readFile(path, { signal });
  if (Bun)
    return async (path) => {
      const file = Bun.file(path);
      if (!(await file.exists())) throw Object.assign(new Error(`${path}: no such file`), { code: 'ENOENT' });
      return new Uint8Array(await file.arrayBuffer());
    };
  return undefined;
}

const readFile = localFileReader();

export const webHost: Host = {
  name: 'web',
  createBackend: async (name, options) => {
    if (name !== 'wasm' && name !== 'auto')
      throw new BackendError(`backend '${name}' needs marble's native addon, which only Node loads; this runtime has 'wasm' (or 'auto')`);
    return createWasmBackend({ threads: options.threads, ...options.wasm });
  },
  ...(readFile ? { readFile, fileUrlToPath: (url: URL) => decodeURIComponent(url.pathname) } : {}),
  // navigator.deviceMemory is a rounded hint (Chromium), where present.
  totalMemoryBytes: () => (runtime.navigator?.deviceMemory ? runtime.navigator.deviceMemory * 2 ** 30 : null),
  kernelBackend: () => null,
};

registerHost(webHost);
