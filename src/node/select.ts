// Picks a backend: 'auto' means cuda when the addon has it and a device is
// usable, else the native addon's cpu kernels when it is built and loads,
// otherwise the wasm module (which needs nothing but the committed .wasm).
import { BackendError } from '../core/errors.js';
import { checkThreads } from '../core/backend/backend.js';
import type { Backend, BackendName } from '../core/backend/backend.js';
import { createCudaBackend, createNativeBackend, cudaUnavailableReason, nativeAvailable } from './native.js';
import { createWasmBackend, wasmBackendSync } from './wasm.js';
import type { BackendOptions } from '../core/host.js';

export async function createBackend(
  name: 'auto' | BackendName,
  options: BackendOptions = {},
): Promise<Backend> {
  checkThreads(options.threads);
  switch (name) {
    case 'cpu':
      return createNativeBackend(options);
    case 'wasm':
      return createWasmBackend(options);
    case 'cuda':
      return createCudaBackend(options);
    case 'auto':
      if (!nativeAvailable()) return createWasmBackend(options);
      return cudaUnavailableReason() === null ? createCudaBackend(options) : createNativeBackend(options);
    default:
      throw new BackendError(`unknown backend ${JSON.stringify(name)} (auto, cpu, wasm, cuda)`);
  }
}

/**
 * The backend for synchronous engine calls made outside a model (scheduler
 * steps, add_noise): the native addon when built, else wasm.
 */
export function defaultKernelBackend(): Backend {
  return nativeAvailable() ? createNativeBackend() : wasmBackendSync();
}
