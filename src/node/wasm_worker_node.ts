// A worker_threads thread of the Node wasm backend (src/node/wasm.ts):
// runs src/core/backend/wasm_threads.ts's runThread on the workerData it is given.
import { parentPort, workerData } from 'node:worker_threads';

import { runThread } from '../core/backend/wasm_threads.js';
import type { CallMessage, ThreadInit } from '../core/backend/wasm_threads.js';

const port = parentPort!;
const serve = runThread(workerData as ThreadInit, (message) => port.postMessage(message));
if (serve) port.on('message', (call: CallMessage) => serve(call));
else port.close?.(); // a pool thread returns only once the pool stopped (or failed); Deno's parentPort has no close
