// The README's per-runtime snippets (examples/snippets, examples/workerd),
// run verbatim in their real runtimes: each must produce the digits Node's
// wasm backend produces for the same call, byte for byte, and the README
// must quote each file as it is.
import './../src/node/host.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile, rm } from 'node:fs/promises';
import path from 'node:path';

import { embeddedModel, loadPipeline, sample } from '../src/index.js';
import type { SampleResult } from '../src/index.js';
import { packageRoot } from '../src/node/native.js';
import { CHROMIUM_ARGS, requireRuntime, run, scratchProject, startWorkerd } from './support/runtimes.js';
import { startStaticServer } from './support/static_server.js';

const root = packageRoot();
const snippets = path.join(root, 'examples', 'snippets');
let project: string;
let expectedPng: Uint8Array;
let expected: SampleResult;

async function wasmDigits(classLabels: number[], seed: number): Promise<SampleResult> {
  const pipe = await loadPipeline(embeddedModel(), { backend: 'wasm', threads: 1 });
  try {
    return await sample({ unet: pipe.unet, scheduler: pipe.scheduler('ddim'), numInferenceSteps: 20, batchSize: classLabels.length, seed, classLabels });
  } finally {
    pipe.dispose();
  }
}

before(async () => {
  expected = await wasmDigits([0, 1, 2, 3], 0);
  expectedPng = expected.png();
  project = await scratchProject('marble-snippets-');
  for (const file of ['node.mjs', 'deno.js', 'browser.html']) await copyFile(path.join(snippets, file), path.join(project, file));
});

after(async () => {
  if (project) await rm(project, { recursive: true, force: true });
});

async function digitsPng(): Promise<Uint8Array> {
  const png = new Uint8Array(await readFile(path.join(project, 'digits.png')));
  await rm(path.join(project, 'digits.png'));
  return png;
}

test('the README quotes every snippet file verbatim', async () => {
  const readme = await readFile(path.join(root, 'README.md'), 'utf8');
  for (const file of ['examples/snippets/node.mjs', 'examples/snippets/deno.js', 'examples/snippets/browser.html', 'examples/workerd/worker.js']) {
    const text = (await readFile(path.join(root, file), 'utf8')).trimEnd();
    assert.ok(readme.includes(text), `README.md does not quote ${file} as it is`);
  }
});

test('Node: examples/snippets/node.mjs writes the digits', async () => {
  await run(process.execPath, ['node.mjs'], { cwd: project });
  assert.deepEqual(await digitsPng(), expectedPng);
});

test('Bun: examples/snippets/node.mjs writes the same digits', async (t) => {
  const bun = requireRuntime(t, 'bun');
  if (!bun) return;
  await run(bun, ['node.mjs'], { cwd: project });
  assert.deepEqual(await digitsPng(), expectedPng);
});

test('Deno: examples/snippets/deno.js writes the same digits', async (t) => {
  const deno = requireRuntime(t, 'deno');
  if (!deno) return;
  await run(deno, ['run', '--allow-read', '--allow-write=digits.png', 'deno.js'], { cwd: project, env: { DENO_NO_UPDATE_CHECK: '1' } });
  assert.deepEqual(await digitsPng(), expectedPng);
});

test('Chromium: examples/snippets/browser.html draws the same digits from a static server, no bundler', async (t) => {
  const executablePath = requireRuntime(t, 'chromium');
  if (!executablePath) return;
  const server = await startStaticServer(project);
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage();
    await page.goto(`${server.url}plain/browser.html`);
    await page.waitForSelector('body[data-done="true"]', { timeout: 60_000 });
    const pixels = (await page.evaluate(`Array.from(document.getElementById('digits').getContext('2d').getImageData(0, 0, 120, 30).data)`)) as number[];
    expected.images().forEach((image, i) => {
      for (let y = 0; y < 28; y++)
        for (let x = 0; x < 28; x++)
          for (let c = 0; c < 4; c++)
            if (pixels[(y * 120 + i * 30 + x) * 4 + c] !== image.data[(y * 28 + x) * 4 + c])
              assert.fail(`digit ${i}: pixel (${x}, ${y}) channel ${c} differs`);
    });
  } finally {
    await browser.close();
    await server.close();
  }
});

test('workerd: examples/workerd answers GET /digit?class=7&seed=1 with the PNG Node draws', async (t) => {
  const workerd = requireRuntime(t, 'workerd');
  if (!workerd) return;
  const worker = await startWorkerd(workerd, path.join(root, 'examples', 'workerd', 'config.capnp'));
  try {
    const response = await fetch(`${worker.url}digit?class=7&seed=1`);
    assert.equal(response.status, 200, worker.log());
    assert.equal(response.headers.get('content-type'), 'image/png');
    const png = new Uint8Array(await response.arrayBuffer());
    assert.deepEqual(png, (await wasmDigits([7], 1)).png());
    // Cloudflare's isolate limit is 128 MB: the engine's linear memory is a fraction of it.
    const memory = Number(response.headers.get('x-wasm-memory-bytes'));
    assert.ok(memory > 0 && memory <= 32 * 2 ** 20, `wasm memory ${memory} bytes`);
    const bad = await fetch(`${worker.url}digit?class=12`);
    assert.equal(bad.status, 400, 'a class outside 0-9 is a 400 with the InputError');
  } finally {
    worker.stop();
  }
});
