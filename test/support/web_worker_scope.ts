// A worker_threads script for wasm_threads.test: gives the thread the Web
// Worker scope that src/web/wasm_worker_web.ts expects (onmessage,
// postMessage, close), so that marble-diffusion/wasm's Web Worker pool runs
// in Node. The static import runs first and installs onmessage.
import { parentPort } from 'node:worker_threads';

import '../../src/web/wasm_worker_web.js';

interface Scope {
  onmessage: ((event: { data: unknown }) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
}
const scope = globalThis as unknown as Scope;
const port = parentPort!;
scope.postMessage = (message) => port.postMessage(message);
scope.close = () => port.close();
port.on('message', (data: unknown) => scope.onmessage?.({ data }));
