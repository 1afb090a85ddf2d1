// Same seed, same image, in every JavaScript runtime: the embedded model
// sampled (DDIM 10, batch 4, seed 0, philox) by the wasm build in Node,
// Deno, Bun, workerd and Chromium (a cross-origin-isolated page with 2
// threads, and a plain one that falls back to 1), from every source each
// runtime has (folder path, URL, map of bytes). Each runtime runs
// test/runtimes/probe.mjs and reports one JSON object; this harness compares
// them bit for bit with Node's wasm result, and Node's wasm result with its
// native cpu result within 1/255 of a pixel. Real binaries, all on loopback;
// a missing runtime fails under CI (with the command that installs it).
import './../src/node/host.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import * as marble from '../src/index.js';
import { packageRoot } from '../src/node/native.js';
import { CHROMIUM_ARGS, requireRuntime, run, scratchProject, startWorkerd } from './support/runtimes.js';
import { startStaticServer } from './support/static_server.js';
import type { StaticServer } from './support/static_server.js';

const root = packageRoot();
const runtimesDir = path.join(root, 'test', 'runtimes');

interface SourceReport {
  samples: string;
  loadMs: number;
  sampleMs: number;
}
interface Report {
  runtime: string;
  backend: { name: string; isa: string; threads: number; note?: string; memoryBytes?: number };
  sources: Record<string, SourceReport>;
  png: string;
  truncated: string;
  error?: string;
  bench?: { rows: string[]; skipped: string[] };
}

type Probe = (m: typeof marble, options: unknown) => Promise<Report>;
const { probe } = (await import(pathToFileURL(path.join(runtimesDir, 'probe.mjs')).href)) as { probe: Probe };

let server: StaticServer;
let reference: Report;
let project: string; // a scratch project with node_modules/marble-diffusion -> this package

const lastJsonLine = (text: string): Report => JSON.parse(text.trim().split('\n').pop()!) as Report;

function samplesOf(base64: string): Float32Array {
  const bytes = Buffer.from(base64, 'base64');
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** Every source of a runtime's report is Node's wasm samples, bit for bit, and so is its PNG. */
function assertSameAsNode(report: Report, sources: string[]): void {
  assert.equal(report.error, undefined, report.error);
  assert.deepEqual(Object.keys(report.sources).sort(), [...sources].sort(), `${report.runtime}: sources sampled`);
  const expected = reference.sources.files!.samples;
  for (const [kind, source] of Object.entries(report.sources))
    assert.ok(source.samples === expected, `${report.runtime} from ${kind}: samples differ from Node's wasm samples`);
  assert.equal(report.png, reference.png, `${report.runtime}: PNG bytes`);
  assert.equal(report.truncated, 'SafetensorsError', `${report.runtime}: a truncated safetensors file`);
  assert.equal(report.backend.isa, 'simd128', `${report.runtime}: the default build is plain SIMD128`);
  if (report.runtime !== 'workerd' && !report.runtime.startsWith('node')) {
    // benchmark() runs here too: wasm with its threads and with 1; no native addon outside Node.
    assert.deepEqual(report.bench?.skipped, ['cpu'], `${report.runtime}: benchmark skipped`);
    assert.equal(report.bench?.rows.length, 2, `${report.runtime}: benchmark rows ${report.bench?.rows}`);
  }
}

before(async () => {
  server = await startStaticServer(root);
  reference = await probe(marble, {
    runtime: 'node',
    threads: 1,
    sources: { path: marble.embeddedModel(), files: await modelFiles() },
  });
  project = await scratchProject('marble-runtimes-');
  for (const file of ['cli_probe.mjs', 'probe.mjs']) await copyFile(path.join(runtimesDir, file), path.join(project, file));
});

after(async () => {
  await server?.close();
  if (project) await rm(project, { recursive: true, force: true });
});

async function modelFiles(): Promise<Record<string, Uint8Array>> {
  const files: Record<string, Uint8Array> = {};
  for (const name of ['model_index.json', 'unet/config.json', 'unet/diffusion_pytorch_model.safetensors', 'scheduler/scheduler_config.json']) {
    const { readFile } = await import('node:fs/promises');
    files[name] = new Uint8Array(await readFile(path.join(root, 'models', 'mnist', name)));
  }
  return files;
}

test('Node: wasm with 1 and 2 threads, from a path, a URL and bytes, gives the same bits; native cpu is within 1/255 of a pixel', async () => {
  assertSameAsNode(reference, ['path', 'files']);
  const threaded = await probe(marble, {
    runtime: 'node-2-threads',
    threads: 2,
    sources: { url: `${server.url}plain/models/mnist/`, files: await modelFiles() },
  });
  assertSameAsNode(threaded, ['url', 'files']);
  assert.equal(threaded.backend.threads, 2);

  const pipe = await marble.loadPipeline(marble.embeddedModel(), { backend: 'cpu', threads: 2 });
  try {
    const cpu = await marble.sample({
      unet: pipe.unet,
      scheduler: pipe.scheduler('ddim'),
      numInferenceSteps: 10,
      batchSize: 4,
      seed: 0,
      generator: 'philox',
      classLabels: [0, 1, 2, 3],
    });
    const wasm = samplesOf(reference.sources.files!.samples);
    let worst = 0;
    // One pixel step is 1/255 of [0, 1], i.e. 2/255 in model space [-1, 1].
    for (let i = 0; i < wasm.length; i++) worst = Math.max(worst, Math.abs(Math.max(-1, Math.min(1, cpu.samples[i]!)) - Math.max(-1, Math.min(1, wasm[i]!))));
    assert.ok(worst <= 2 / 255, `native cpu vs wasm: ${worst} in model space, over 1/255 of a pixel`);
  } finally {
    pipe.dispose();
  }
});

test('Deno (the deno npm package): same bits from a path, a URL and bytes, 2 threads', async (t) => {
  const deno = requireRuntime(t, 'deno');
  if (!deno) return;
  const out = await run(deno, ['run', '--allow-read', `--allow-net=127.0.0.1:${server.port}`, 'cli_probe.mjs', 'deno', '2', `${server.url}plain/`], {
    cwd: project,
    env: { DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' },
  });
  const report = lastJsonLine(out);
  assertSameAsNode(report, ['path', 'url', 'files']);
  assert.equal(report.backend.threads, 2, 'Deno has workers and shared memory');
});

test('Bun (the bun npm package): same bits from a path, a URL and bytes, 2 threads', async (t) => {
  const bun = requireRuntime(t, 'bun');
  if (!bun) return;
  const report = lastJsonLine(await run(bun, ['cli_probe.mjs', 'bun', '2', `${server.url}plain/`], { cwd: project }));
  assertSameAsNode(report, ['path', 'url', 'files']);
  assert.equal(report.backend.threads, 2, 'Bun has workers and shared memory');
});

test('workerd: same bits from data modules and a precompiled wasm module; single-threaded, saying why; within 128 MB', async (t) => {
  const workerd = requireRuntime(t, 'workerd');
  if (!workerd) return;
  const worker = await startWorkerd(workerd, path.join(runtimesDir, 'workerd.capnp'));
  try {
    const response = await fetch(`${worker.url}probe?threads=2`);
    const log = worker.log();
    assert.equal(response.status, 200, `${await response.clone().text()}\n${log}`);
    const report = (await response.json()) as Report;
    assertSameAsNode(report, ['files']);
    assert.equal(report.backend.threads, 1);
    assert.match(report.backend.note ?? '', /single-threaded: .*(SharedArrayBuffer|Worker)/, 'describe() says why');
    assert.ok(report.backend.memoryBytes! < 128 * 2 ** 20, `wasm memory ${report.backend.memoryBytes} bytes`);
  } finally {
    worker.stop();
  }
});

test('Chromium: a cross-origin-isolated page runs 2 threads, a plain page 1 (saying why); both the same bits, sampling in a Web Worker', async (t) => {
  const executablePath = requireRuntime(t, 'chromium');
  if (!executablePath) return;
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
  try {
    for (const [prefix, threads] of [['coi', 2], ['plain', 1]] as const) {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${server.url}${prefix}/test/runtimes/browser.html?threads=2`);
      const report = (await page.evaluate('window.probeResult')) as Report;
      assert.deepEqual(errors, []);
      assertSameAsNode(report, ['url', 'relative', 'files']);
      assert.equal(report.backend.threads, threads, `${prefix}: threads`);
      if (prefix === 'plain') assert.match(report.backend.note ?? '', /not cross-origin isolated/);
      await page.close();
    }
  } finally {
    await browser.close();
  }
});

test('the runtime-neutral core and the web entry import no Node built-in and touch no Node global', async () => {
  const { readdir, readFile } = await import('node:fs/promises');
  const offenders: string[] = [];
  for (const dir of ['core', 'web']) {
    const base = path.join(root, 'dist', 'src', dir);
    for (const entry of await readdir(base, { recursive: true })) {
      if (!entry.endsWith('.js')) continue;
      // Comments may say "process." or "Buffer"; code may not.
      const text = (await readFile(path.join(base, entry), 'utf8')).replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:])\/\/.*$/gm, '$1');
      for (const [pattern, what] of [
        [/from\s+['"](node:|fs|path|os|worker_threads|crypto|url)['"]/, 'a Node built-in import'],
        [/import\(\s*['"]node:/, 'a dynamic Node built-in import'],
        [/\bprocess\.|\bBuffer\b|\brequire\(/, 'process, Buffer or require'],
        [/from\s+['"]\.\.\/(node|cli|train|data|eval|onnx)\//, 'an import of a Node-only module'],
      ] as const)
        if (pattern.test(text)) offenders.push(`${dir}/${entry}: ${what}`);
    }
  }
  assert.deepEqual(offenders, []);
  // tools/build_browser.mjs bundles the web entry for platform 'browser': a Node built-in would have failed it.
  assert.ok(existsSync(path.join(root, 'dist', 'browser', 'marble.js')), 'dist/browser/marble.js is built');
  assert.ok(fileURLToPath(import.meta.url));
});
