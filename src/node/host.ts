// The Node adapter: registers the Host the core runs on (src/core/host.ts):
// files through node:fs, backends from the native addon (cpu, cuda) or the
// wasm module on worker_threads (src/node/wasm.ts), the machine's memory
// from node:os. Imported for its effect by the Node entry (src/index.ts) and
// by the Node-only modules (train, eval, cli) that reach the core directly.
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

import { registerHost } from '../core/host.js';
import type { Host } from '../core/host.js';
import { createBackend, defaultKernelBackend } from './select.js';

export const nodeHost: Host = {
  name: 'node',
  createBackend: (name, options) => createBackend(name, options),
  readFile: async (path, signal) => {
    const bytes = await readFile(path, { signal });
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  },
  fileUrlToPath: (url) => fileURLToPath(url),
  totalMemoryBytes: () => os.totalmem(),
  kernelBackend: () => defaultKernelBackend(),
};

registerHost(nodeHost);
