// The wasm backend in Node: reads the committed wasm/dist/marble.wasm.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { BackendError } from '../errors.js';
import type { Backend } from './backend.js';
import { packageRoot } from './native.js';
import { instantiateWasmBackend, instantiateWasmBackendSync } from './wasm_core.js';

let compiled: Promise<WebAssembly.Module> | null = null;

export function wasmPath(): string {
  return path.join(packageRoot(), 'wasm', 'dist', 'marble.wasm');
}

export async function createWasmBackend(options: { threads?: number } = {}): Promise<Backend> {
  // The single-threaded build ignores `threads` until the threaded build lands.
  void options;
  if (typeof WebAssembly !== 'object') throw new BackendError('this runtime has no WebAssembly');
  compiled ??= readFile(wasmPath()).then((bytes) => WebAssembly.compile(bytes));
  try {
    return await instantiateWasmBackend(await compiled);
  } catch (e) {
    compiled = null;
    throw new BackendError(`cannot load ${wasmPath()}: ${(e as Error).message}`);
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
