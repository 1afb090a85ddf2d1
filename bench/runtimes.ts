// DDIM-20 at batch 1 on the embedded model with the wasm build, in every
// runtime marble supports, on this machine, one after another in one run:
// Node, Deno, Bun (1 and 2 threads), Chromium (an isolated page with 2
// threads, a plain one with 1), and workerd (timed from outside: it freezes
// timers inside a request, so this is one HTTP GET /digit, warm, which is
// the same DDIM-20 batch-1 work plus the PNG). Node's native cpu backend for
// reference. Prints a Markdown table (and JSON with --json).
//   npm run build:ts && node dist/bench/runtimes.js
import '../src/node/host.js';
import { copyFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import * as marble from '../src/index.js';
import { packageRoot } from '../src/node/native.js';
import { CHROMIUM_ARGS, run, runtimeBinaries, scratchProject, startWorkerd } from '../test/support/runtimes.js';
import { startStaticServer } from '../test/support/static_server.js';

interface Row {
  runtime: string;
  threads: number;
  isa: string;
  medianMs: number;
  minMs: number;
  maxMs: number;
  note?: string;
}

const root = packageRoot();
const dir = path.join(root, 'bench', 'runtimes');
const rows: Row[] = [];
type Result = { backend: { threads: number; isa: string; note?: string }; medianMs: number; minMs: number; maxMs: number };
const add = (runtime: string, r: Result) => rows.push({ runtime, threads: r.backend.threads, isa: r.backend.isa, medianMs: r.medianMs, minMs: r.minMs, maxMs: r.maxMs, note: r.backend.note });

const { ddim20 } = (await import(pathToFileURL(path.join(dir, 'ddim20.mjs')).href)) as { ddim20: (m: unknown, o: { threads: number }) => Promise<Result> };

// Node's native addon, for scale.
{
  const pipe = await marble.loadPipeline(marble.embeddedModel(), { backend: 'cpu', threads: 2 });
  const once = () => marble.sample({ unet: pipe.unet, scheduler: pipe.scheduler('ddim'), numInferenceSteps: 20, seed: 0, classLabels: [3] });
  await once();
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await once();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  rows.push({ runtime: 'Node 20 (native cpu addon)', threads: 2, isa: pipe.unet.backend.isa(), medianMs: times[2]!, minMs: times[0]!, maxMs: times[4]! });
  pipe.dispose();
}

const project = await scratchProject('marble-bench-runtimes-');
for (const file of ['ddim20.mjs', 'cli.mjs']) await copyFile(path.join(dir, file), path.join(project, file));
const last = (text: string) => JSON.parse(text.trim().split('\n').pop()!) as Result;
for (const threads of [1, 2]) {
  add(`Node ${process.versions.node}`, last(await run(process.execPath, ['cli.mjs', String(threads)], { cwd: project })));
  const deno = await run(runtimeBinaries.deno, ['--version'], {}).then((v) => v.split(' ')[1]);
  add(`Deno ${deno}`, last(await run(runtimeBinaries.deno, ['run', '--allow-read', 'cli.mjs', String(threads)], { cwd: project, env: { DENO_NO_UPDATE_CHECK: '1' } })));
  const bun = (await run(runtimeBinaries.bun, ['--version'], {})).trim();
  add(`Bun ${bun}`, last(await run(runtimeBinaries.bun, ['cli.mjs', String(threads)], { cwd: project })));
}
await rm(project, { recursive: true, force: true });

const server = await startStaticServer(root);
const { chromium } = await import('playwright-core');
const browser = await chromium.launch({ executablePath: runtimeBinaries.chromium, args: CHROMIUM_ARGS });
for (const [mode, threads] of [['coi', 1], ['coi', 2], ['plain', 2]] as const) {
  const page = await browser.newPage();
  await page.goto(`${server.url}${mode}/bench/runtimes/browser.html?threads=${threads}`);
  add(`Chromium ${browser.version()}${mode === 'plain' ? ' (page not isolated)' : ''}`, (await page.evaluate('window.result')) as Result);
  await page.close();
}
await browser.close();
await server.close();

const worker = await startWorkerd(runtimeBinaries.workerd, path.join(root, 'examples', 'workerd', 'config.capnp'));
const get = async () => {
  const t0 = performance.now();
  const response = await fetch(`${worker.url}digit?class=3&seed=0`);
  await response.arrayBuffer();
  return performance.now() - t0;
};
await get();
const times: number[] = [];
for (let i = 0; i < 5; i++) times.push(await get());
times.sort((a, b) => a - b);
rows.push({ runtime: 'workerd (GET /digit, timed by the client)', threads: 1, isa: 'simd128', medianMs: times[2]!, minMs: times[0]!, maxMs: times[4]! });
worker.stop();

if (process.argv.includes('--json')) console.log(JSON.stringify(rows, null, 2));
console.log('| runtime | threads | wasm ISA | DDIM-20, batch 1: median ms (min-max) |');
console.log('|---|---|---|---|');
for (const r of rows)
  console.log(`| ${r.runtime} | ${r.threads}${r.note ? ' (see note)' : ''} | ${r.isa} | ${r.medianMs.toFixed(0)} (${r.minMs.toFixed(0)}-${r.maxMs.toFixed(0)}) |`);
