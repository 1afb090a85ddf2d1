// A Web Worker thread of the browser wasm backend (src/web/wasm.ts): the first
// message is its ThreadInit, then runThread (src/core/backend/wasm_threads.ts).
// No Node built-ins, no DOM types: only what every worker scope has.
import { runThread } from '../core/backend/wasm_threads.js';
import type { CallMessage, ThreadInit, ThreadMessage } from '../core/backend/wasm_threads.js';

interface WorkerScope {
  onmessage: ((event: { data: unknown }) => void) | null;
  postMessage(message: ThreadMessage): void;
  close(): void;
}
const scope = globalThis as unknown as WorkerScope;

scope.onmessage = (first) => {
  const serve = runThread(first.data as ThreadInit, (message) => scope.postMessage(message));
  if (!serve) {
    scope.close();
    return;
  }
  scope.onmessage = (event) => serve(event.data as CallMessage);
};
