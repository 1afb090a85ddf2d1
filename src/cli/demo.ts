// `marble demo`: serves the web demo (examples/web) on 127.0.0.1 with the
// headers that make the page cross-origin isolated (so the threaded wasm
// build runs), and /api/native, which times the same sampling on the native
// addon so the page can show native against wasm.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';

import { loadPipeline } from '../core/pipeline.js';
import type { Pipeline, SchedulerName } from '../core/pipeline.js';

const SCHEDULERS: readonly SchedulerName[] = ['ddim', 'ddpm', 'dpm++', 'unipc', 'euler', 'euler-a', 'heun'];
import { sample } from '../core/sampler.js';
import { packageRoot } from '../node/native.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.map': 'application/json',
  '.safetensors': 'application/octet-stream',
};

/** What the page may fetch: the demo, the browser bundle, the wasm builds, the embedded model. */
const SERVED = ['examples/web', 'dist/browser', 'wasm/dist', 'models/mnist'];

const ISOLATION = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
};

function json(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json', ...ISOLATION }).end(JSON.stringify(body));
}

export interface DemoServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

export async function startDemoServer(options: { port?: number; host?: string } = {}): Promise<DemoServer> {
  const root = packageRoot();
  let native: Promise<Pipeline> | null = null;
  let nativeBusy = false;

  async function nativeTiming(response: ServerResponse, url: URL): Promise<void> {
    const steps = Number(url.searchParams.get('steps'));
    const batch = Number(url.searchParams.get('batch'));
    const scheduler = url.searchParams.get('scheduler');
    const guidance = Number(url.searchParams.get('guidance') ?? '1');
    if (!Number.isInteger(steps) || steps < 1 || steps > 1000 || !Number.isInteger(batch) || batch < 1 || batch > 16 || !SCHEDULERS.includes(scheduler as SchedulerName))
      return json(response, 400, { error: `steps 1-1000, batch 1-16, scheduler one of ${SCHEDULERS.join(', ')}` });
    if (!Number.isFinite(guidance) || guidance < 0 || guidance > 20) return json(response, 400, { error: 'guidance 0-20' });
    if (nativeBusy) return json(response, 429, { error: 'a native timing is running' });
    nativeBusy = true;
    try {
      native ??= loadPipeline(path.join(root, 'models', 'mnist'), { backend: 'auto' });
      const pipe = await native;
      const started = performance.now();
      await sample({ unet: pipe.unet, scheduler: pipe.scheduler(scheduler as SchedulerName), numInferenceSteps: steps, batchSize: batch, guidanceScale: guidance, classLabels: Array.from({ length: batch }, (_, i) => i % 10) });
      const ms = performance.now() - started;
      const b = pipe.unet.backend;
      json(response, 200, { backend: b.name, isa: b.isa(), threads: b.threads(), msPerStep: ms / steps });
    } catch (e) {
      json(response, 500, { error: (e as Error).message });
    } finally {
      nativeBusy = false;
    }
  }

  const server = createServer(async (request, response) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    if (request.method !== 'GET' && request.method !== 'HEAD') return json(response, 405, { error: 'GET only' });
    if (url.pathname === '/') {
      response.writeHead(302, { location: '/examples/web/index.html' }).end();
      return;
    }
    if (url.pathname === '/api/native') return nativeTiming(response, url);
    let relative: string;
    try {
      relative = path.posix.normalize(decodeURIComponent(url.pathname)).replace(/^\/+/, '');
    } catch {
      return json(response, 400, { error: 'bad path' });
    }
    if (!SERVED.some((dir) => relative.startsWith(`${dir}/`))) return json(response, 404, { error: 'not found' });
    const file = path.join(root, relative);
    try {
      const info = await stat(file);
      if (!info.isFile()) throw new Error('not a file');
      response.writeHead(200, {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
        'content-length': info.size,
        ...ISOLATION,
      });
      if (request.method === 'HEAD') response.end();
      else createReadStream(file).pipe(response);
    } catch {
      json(response, 404, { error: 'not found' });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 8080, options.host ?? '127.0.0.1', resolve);
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}/`,
    server,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (native) (await native.catch(() => null))?.dispose();
    },
  };
}

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port number from 0 to 65535');
  return n;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('serve the web demo (digits drawn in your browser with the wasm engine) on 127.0.0.1')
    .option('--port <n>', 'port (0: any free one)', port, 8080)
    .option('--host <address>', 'address to bind', '127.0.0.1')
    .action(async (flags: { port: number; host: string }) => {
      const demo = await startDemoServer(flags);
      console.log(`marble demo: open ${demo.url} (Ctrl-C stops it)`);
    });
}
