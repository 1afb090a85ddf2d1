// `marble bench` and benchmark(): options are checked before any work, a
// tiny model runs on cpu and wasm with a report of the documented shape, and
// the CLI writes the table, the JSON and the SVG chart. No timing asserted.
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { InputError, benchmark } from '../src/index.js';
import type { BenchmarkReport } from '../src/index.js';
import { backendList, integerList } from '../src/cli/bench.js';
import { fixturePath } from './helpers.js';

const TINY = fixturePath('unet/tiny');

test('benchmark options are checked before any work', async () => {
  const bad: [object, RegExp][] = [
    [{}, /give a model/],
    [{ model: TINY, arch: 'mnist' }, /not both/],
    [{ arch: 'imagenet' }, /unknown arch/],
    [{ model: TINY, backends: ['gpu'] }, /unknown backend/],
    [{ model: TINY, batches: [] }, /batches/],
    [{ model: TINY, batches: [0] }, /batches/],
    [{ model: TINY, batches: [1.5] }, /batches/],
    [{ model: TINY, steps: 0 }, /steps/],
    [{ model: TINY, iterations: -1 }, /iterations/],
    [{ model: TINY, scheduler: 'euler-x' }, /scheduler/],
  ];
  for (const [options, message] of bad) await assert.rejects(benchmark(options), (e) => e instanceof InputError && message.test(e.message), JSON.stringify(options));
  assert.deepEqual(integerList('1, 8,16'), [1, 8, 16]);
  assert.throws(() => integerList('1,x'));
  assert.throws(() => integerList('0'));
  assert.deepEqual(backendList('cpu,wasm-1'), ['cpu', 'wasm-1']);
  assert.throws(() => backendList('cpu,tpu'), /unknown backend tpu/);
});

test('a tiny model on cpu and wasm: every row, the ratios and the identity in the report', async () => {
  const report = await benchmark({ model: TINY, backends: ['cpu', 'wasm', 'wasm-1'], batches: [1, 2], steps: 2, iterations: 2, threads: 2 });
  assert.equal(report.schema, 'marble-bench/1');
  assert.equal(report.runtime, 'node');
  assert.ok(report.model.parameters > 0 && report.model.gflopPerImage > 0);
  assert.deepEqual(report.rows.map((r) => `${r.backend} ${r.batch}`), ['cpu 1', 'cpu 2', 'wasm 1', 'wasm 2', 'wasm-1 1', 'wasm-1 2']);
  for (const r of report.rows) {
    assert.ok(r.forward.minMs > 0 && r.forward.minMs <= r.forward.medianMs && r.forward.medianMs <= r.forward.maxMs, JSON.stringify(r.forward));
    assert.equal(r.forward.runs, 2);
    assert.ok(r.samplingMs > 0 && r.msPerImage > 0 && r.gflops > 0 && r.activationBytes > 0);
    assert.equal(r.identity.name, r.backend === 'cpu' ? 'cpu' : 'wasm');
    assert.equal(r.identity.threads, r.backend === 'wasm-1' ? 1 : 2);
  }
  assert.deepEqual(report.ratios.map((r) => r.batch), [1, 2]);
  assert.ok(report.ratios.every((r) => r.wasmOverCpu! > 0 && r.wasm1OverCpu! > 0));
});

test('marble bench prints the table and ratios, writes the JSON report and an SVG chart', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'marble-bench-'));
  try {
    const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const json = path.join(dir, 'bench.json');
    const chart = path.join(dir, 'bench.svg');
    const out = execFileSync(process.execPath, [cli, 'bench', '--model', TINY, '--backends', 'cpu,wasm', '--batch', '1', '--steps', '2', '--iterations', '1', '--json', json, '--chart', chart], { encoding: 'utf8' });
    assert.match(out, /backend\s+isa\s+threads\s+batch/);
    assert.match(out, /wasm \/ native cpu at batch 1: \d+\.\d+x the time/);
    // onnxruntime is an optional peer: its rows when installed, else a line saying how to get them.
    assert.match(out, /marble cpu \(\d+t\) \/ onnxruntime-node .* forward at batch 1|onnxruntime-node \/ onnxruntime-web are not installed/);
    const report = JSON.parse(await readFile(json, 'utf8')) as BenchmarkReport;
    assert.equal(report.rows.length, 2);
    const svg = await readFile(chart, 'utf8');
    assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.equal((svg.match(/<rect x=/g) ?? []).length, 2 + 2, 'a bar and a legend swatch per backend');
    assert.throws(() => execFileSync(process.execPath, [cli, 'bench', '--batch', '0'], { stdio: 'pipe' }), /integers from 1 to 4096/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
