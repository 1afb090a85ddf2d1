// Load benchmark for `marble serve` (not a test): N concurrent clients for T
// seconds against a `marble serve` child process on the embedded model, mixed
// batch 1-4, DDIM 10/15/20 steps, 10% malformed and 10% abandoned requests;
// once with dynamic batching and once without. Reports images/s, latency
// percentiles, 429s, 4xx/5xx, the server's resident memory after warm-up and
// at the end, and /healthz latency during the run; checks the pass criteria.
//
//   node dist/bench/serve.js [--clients 32] [--seconds 60] [--warmup 10] [--threads 2] [--out bench/results/serve.json]
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '60' },
    warmup: { type: 'string', default: '10' },
    threads: { type: 'string', default: String(os.cpus().length) },
    out: { type: 'string', default: '' },
    only: { type: 'string', default: '' },
  },
});
const CLIENTS = Number(values.clients);
const SECONDS = Number(values.seconds);
const WARMUP = Number(values.warmup);

interface Stats {
  batching: boolean;
  requests: number;
  ok: number;
  images: number;
  imagesPerSecond: number;
  latencyMs: { p50: number; p95: number; p99: number };
  status429: number;
  malformed: number;
  malformed4xx: number;
  abandoned: number;
  status5xx: number;
  otherErrors: number;
  healthzMs: { p50: number; p99: number; max: number; samples: number };
  rssMiB: { start: number; afterWarmup: number; end: number; growthPercent: number };
  crashed: boolean;
}

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
  return kb / 1024;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const MALFORMED: string[] = [
  '{"scheduler":"ddim","steps":10',
  '{"scheduler":"ddim","steps":"ten"}',
  '{"scheduler":"ddim","steps":10,"unknown":1}',
  '{"scheduler":"ddim","steps":100000}',
  '{"scheduler":"ddim","steps":10,"batch":1000}',
  '{"scheduler":"ddim","steps":10,"seed":-5}',
  '{"scheduler":"ddim","steps":10,"model":"../../etc"}',
  '[]',
];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function startServer(batching: boolean): Promise<{ pid: number; base: string; stop: () => Promise<number | null>; exited: () => boolean }> {
  const port = await freePort();
  const args = [CLI, 'serve', '--port', String(port), '--threads', values.threads!, '--backend', 'cpu', '--log-level', 'warn', '--queue-limit', '64'];
  if (!batching) args.push('--no-batching');
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  let exitCode: number | null | undefined;
  child.once('exit', (code) => (exitCode = code));
  const base = `http://127.0.0.1:${port}`;
  for (;;) {
    if (exitCode !== undefined) throw new Error(`the server exited (${exitCode})`);
    const up = await fetch(`${base}/readyz`).then((r) => r.ok, () => false);
    if (up) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    pid: child.pid!,
    base,
    exited: () => exitCode !== undefined,
    stop: () =>
      new Promise((resolve) => {
        if (exitCode !== undefined) return resolve(exitCode);
        child.once('exit', (code) => resolve(code));
        child.kill('SIGTERM');
      }),
  };
}

async function run(batching: boolean): Promise<Stats> {
  const server = await startServer(batching);
  const { base, pid } = server;
  const rssStart = rssMiB(pid);
  let measuring = false;
  const latencies: number[] = [];
  const healthz: number[] = [];
  const s = { requests: 0, ok: 0, images: 0, status429: 0, malformed: 0, malformed4xx: 0, abandoned: 0, status5xx: 0, otherErrors: 0 };
  let stop = false;
  const count = (key: keyof typeof s, n = 1) => {
    if (measuring) s[key] += n;
  };

  const client = async (index: number) => {
    let i = 0;
    while (!stop) {
      i++;
      const r = Math.random();
      count('requests');
      if (r < 0.1) {
        count('malformed');
        const res = await fetch(`${base}/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: MALFORMED[(index + i) % MALFORMED.length] });
        await res.arrayBuffer();
        if (res.status >= 400 && res.status < 500) count('malformed4xx');
        if (res.status >= 500) count('status5xx');
        continue;
      }
      const batch = 1 + Math.floor(Math.random() * 4);
      const steps = [10, 15, 20][Math.floor(Math.random() * 3)]!;
      const body = JSON.stringify({ scheduler: 'ddim', steps, batch, seed: Math.floor(Math.random() * 1e9), format: 'png' });
      if (r < 0.2) {
        // abandoned: the client gives up after 50-500 ms
        count('abandoned');
        const controller = new AbortController();
        const timer = setTimeout(() => controller.abort(), 50 + Math.random() * 450);
        try {
          const res = await fetch(`${base}/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: controller.signal });
          await res.arrayBuffer();
          if (res.status >= 500) count('status5xx');
        } catch {
          // aborted, as intended
        } finally {
          clearTimeout(timer);
        }
        continue;
      }
      const t0 = performance.now();
      try {
        const res = await fetch(`${base}/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        await res.arrayBuffer();
        if (res.status === 200) {
          count('ok');
          count('images', batch);
          if (measuring) latencies.push(performance.now() - t0);
        } else if (res.status === 429) {
          count('status429');
          await new Promise((r2) => setTimeout(r2, 1000 * Number(res.headers.get('retry-after') ?? 1)));
        } else if (res.status >= 500) count('status5xx');
        else count('otherErrors');
      } catch {
        count('otherErrors');
      }
    }
  };

  const prober = async () => {
    while (!stop) {
      const t0 = performance.now();
      try {
        const res = await fetch(`${base}/healthz`);
        await res.arrayBuffer();
        if (measuring) healthz.push(performance.now() - t0);
      } catch {
        if (measuring) healthz.push(Infinity);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  const loops = [...Array.from({ length: CLIENTS }, (_, i) => client(i)), prober()];
  await new Promise((r) => setTimeout(r, WARMUP * 1000));
  const rssAfterWarmup = rssMiB(pid);
  measuring = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  measuring = false;
  const elapsed = (performance.now() - t0) / 1000;
  const rssEnd = rssMiB(pid);
  stop = true;
  await Promise.all(loops);
  const crashed = server.exited();
  const code = await server.stop();
  latencies.sort((a, b) => a - b);
  healthz.sort((a, b) => a - b);
  return {
    batching,
    ...s,
    imagesPerSecond: s.images / elapsed,
    latencyMs: { p50: percentile(latencies, 50), p95: percentile(latencies, 95), p99: percentile(latencies, 99) },
    healthzMs: { p50: percentile(healthz, 50), p99: percentile(healthz, 99), max: healthz.at(-1) ?? NaN, samples: healthz.length },
    rssMiB: { start: rssStart, afterWarmup: rssAfterWarmup, end: rssEnd, growthPercent: (100 * (rssEnd - rssAfterWarmup)) / rssAfterWarmup },
    crashed: crashed || code !== 0,
  };
}

const results: Stats[] = [];
for (const batching of [true, false]) {
  if (values.only === 'on' && !batching) continue;
  if (values.only === 'off' && batching) continue;
  console.error(`batching ${batching ? 'on' : 'off'}: ${CLIENTS} clients, ${WARMUP} s warm-up + ${SECONDS} s ...`);
  results.push(await run(batching));
  console.log(JSON.stringify(results.at(-1)));
}

const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : String(n));
console.log('\n| batching | images/s | p50 ms | p95 ms | p99 ms | 429s | 5xx | malformed -> 4xx | abandoned | /healthz p99 ms | RSS after warm-up -> end MiB |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
for (const r of results)
  console.log(
    `| ${r.batching ? 'on' : 'off'} | ${f(r.imagesPerSecond, 2)} | ${f(r.latencyMs.p50, 0)} | ${f(r.latencyMs.p95, 0)} | ${f(r.latencyMs.p99, 0)} | ${r.status429} | ${r.status5xx} | ${r.malformed4xx}/${r.malformed} | ${r.abandoned} | ${f(r.healthzMs.p99)} | ${f(r.rssMiB.afterWarmup, 0)} -> ${f(r.rssMiB.end, 0)} (${r.rssMiB.growthPercent >= 0 ? '+' : ''}${f(r.rssMiB.growthPercent)}%) |`,
  );

const checks: [string, boolean][] = [];
for (const r of results) {
  const tag = `batching ${r.batching ? 'on' : 'off'}`;
  checks.push([`${tag}: zero 5xx`, r.status5xx === 0]);
  checks.push([`${tag}: no crash, exit 0 on SIGTERM`, !r.crashed]);
  checks.push([`${tag}: every malformed request a 4xx`, r.malformed4xx === r.malformed]);
  checks.push([`${tag}: RSS growth after warm-up < 10%`, r.rssMiB.growthPercent < 10]);
  checks.push([`${tag}: /healthz p99 < 50 ms`, r.healthzMs.p99 < 50]);
}
const on = results.find((r) => r.batching);
const off = results.find((r) => !r.batching);
if (on && off) checks.push(['batching on gives more images/s than off', on.imagesPerSecond > off.imagesPerSecond]);
console.log('');
for (const [name, ok] of checks) console.log(`${ok ? 'PASS' : 'FAIL'}  ${name}`);
if (values.out)
  writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), cpu: os.cpus()[0]?.model, cores: os.cpus().length, clients: CLIENTS, seconds: SECONDS, warmup: WARMUP, threads: Number(values.threads), results, checks }, null, 2) + '\n');
process.exitCode = checks.every(([, ok]) => ok) ? 0 : 1;
