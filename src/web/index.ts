// marble-diffusion for browsers, Web Workers, Deno, Bun and Cloudflare
// workerd: the shared API (src/core/api.ts) on the web adapter (the wasm
// backend, fetch, Web Workers). The package's `exports` conditions pick this
// entry for every runtime but Node; the browser bundle (dist/browser/marble.js)
// is this module with its few dependencies inlined.
import './host.js';

import { packageUrl } from './package_url.js';

export * from '../core/api.js';
export { createWasmBackend, wasmThreadsSupported, wasmThreadsUnavailableReason } from './wasm.js';
export type { WasmBackendOptions, WorkerLike } from './wasm.js';

/**
 * The embedded MNIST model (a diffusers pipeline folder in the package), as
 * the URL of its folder: `loadPipeline(embeddedModel())`. Deno and Bun read
 * it from disk; a page fetches it from wherever the package is served.
 */
export function embeddedModel(): URL {
  return packageUrl('models/mnist/');
}
