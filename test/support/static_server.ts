// A static file server on 127.0.0.1 for the runtime tests and the web demo's
// test: /coi/<path> serves <path> with the headers that make a page
// cross-origin isolated (SharedArrayBuffer, so the threaded wasm build),
// /plain/<path> without them. Only files under `root`; GET and HEAD only.
import { readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.css': 'text/css',
  '.map': 'application/json',
};

export interface StaticServer {
  /** http://127.0.0.1:PORT/ */
  url: string;
  port: number;
  /** A free loopback port for another server. */
  freePort(): Promise<number>;
  close(): Promise<void>;
}

export async function startStaticServer(root: string): Promise<StaticServer> {
  const server = createServer(async (request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    const [, mode, ...rest] = url.pathname.split('/');
    const file = path.resolve(root, decodeURIComponent(rest.join('/')));
    if ((mode !== 'coi' && mode !== 'plain') || !file.startsWith(root + path.sep) || !['GET', 'HEAD'].includes(request.method ?? '')) {
      response.writeHead(404).end();
      return;
    }
    try {
      const info = await stat(file);
      if (!info.isFile()) throw new Error('not a file');
      // Read whole before the headers go out: the length sent is the bytes
      // sent, and a failed read is a 404 rather than a response that stops.
      const body = request.method === 'HEAD' ? null : await readFile(file);
      const headers: Record<string, string | number> = {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
        'content-length': body ? body.length : info.size,
        'cache-control': 'no-store',
      };
      if (mode === 'coi') {
        headers['cross-origin-opener-policy'] = 'same-origin';
        headers['cross-origin-embedder-policy'] = 'require-corp';
        headers['cross-origin-resource-policy'] = 'same-origin';
      }
      response.writeHead(200, headers);
      response.end(body ?? undefined);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    port,
    freePort: () =>
      new Promise((resolve) => {
        const probe = createServer();
        probe.listen(0, '127.0.0.1', () => {
          const { port: free } = probe.address() as AddressInfo;
          probe.close(() => resolve(free));
        });
      }),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
