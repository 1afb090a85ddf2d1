// The cuda backend's discovery and its typed errors, on every machine: with
// no GPU (or no driver, or an addon built without nvcc) asking for cuda is a
// BackendError that carries the CUDA runtime's reason, 'auto' falls back to
// cpu, and `marble info` says why; with a GPU, cuda models report their
// device and set up training there. The GPU's numbers are in cuda.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { BackendError, DDPMScheduler, Trainer, createBackend, loadUNet } from '../src/index.js';
import { engineOf } from '../src/train/engine_access.js';
import { cudaDevices, cudaUnavailableReason, loadAddon } from '../src/node/native.js';
import { loadDevAddon } from './support/dev_addon.js';
import { SELF_TEST_FAMILIES, fixturePath } from './helpers.js';

const info = cudaDevices();
const reason = cudaUnavailableReason();

test('CUDA discovery answers with devices or a reason, never by failing to load', () => {
  assert.equal(typeof info.built, 'boolean');
  assert.ok(Number.isInteger(info.count) && info.count >= 0);
  assert.equal(info.devices.length, info.count);
  if (info.count === 0) {
    assert.ok(info.reason.length > 10, `a reason is given: ${JSON.stringify(info.reason)}`);
    assert.equal(reason, info.reason);
    if (!info.built) assert.match(info.reason, /built without the CUDA backend/);
  } else {
    assert.equal(reason, null);
    for (const d of info.devices) {
      assert.equal(d.error, undefined, `device ${d.index}: ${d.error}`);
      assert.match(d.computeCapability!, /^\d+\.\d+$/);
      assert.ok(d.totalBytes! > 0 && d.multiprocessors! > 0);
    }
  }
});

test("backend 'auto' picks cuda exactly when a device is usable", async () => {
  const backend = await createBackend('auto');
  assert.equal(backend.name, reason === null ? 'cuda' : 'cpu');
});

if (reason !== null) {
  test("backend 'cuda' without a device is a BackendError carrying the CUDA reason", async () => {
    await assert.rejects(createBackend('cuda'), (err: unknown) => {
      assert.ok(err instanceof BackendError, String(err));
      assert.equal((err as BackendError).code, 'ERR_MARBLE_BACKEND');
      assert.ok((err as Error).message.startsWith('no CUDA device: '), (err as Error).message);
      assert.ok((err as Error).message.includes(reason), (err as Error).message);
      return true;
    });
    await assert.rejects(loadUNet(fixturePath('unet/tiny'), { backend: 'cuda' }), BackendError);
  });
} else {
  test('a cuda model says so and sets up training on its device', async () => {
    const unet = await loadUNet(fixturePath('unet/tiny'), { backend: 'cuda' });
    try {
      assert.equal(unet.backend.name, 'cuda');
      assert.equal((engineOf(unet) as unknown as { device(): string }).device(), 'cuda');
      const trainer = new Trainer({ unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-4 }, seed: 0 });
      assert.equal(trainer.readAll('grad').length, engineOf(unet).paramTable().length);
    } finally {
      unet.dispose();
    }
  });
}

test('the CUDA op self-test (development addon) runs every case end to end (dry run: the CPU ops on both sides)', () => {
  // What a GPU run of test/cuda.test.ts will execute, minus the GPU: every
  // case allocates, copies, runs and compares; run twice, the CPU ops agree
  // to the bit (they are deterministic), so the comparison reports 0.
  const cases = loadDevAddon().cudaParity(0, 20261128, true);
  assert.ok(cases.length >= 70, `${cases.length} cases`);
  const families = new Set(cases.map((c) => c.op));
  for (const op of SELF_TEST_FAMILIES) assert.ok(families.has(op), `covers ${op}`);
  for (const c of cases) {
    assert.equal(c.status, 0, `${c.op}: ${c.name}: ${c.error}`);
    assert.ok(c.elements > 0 && c.maxRef > 0, `${c.op}: ${c.name}: compared ${c.elements} values, max ${c.maxRef}`);
    assert.equal(c.maxAbsErr, 0, `${c.op}: ${c.name}: two CPU runs differ by ${c.maxAbsErr}`);
  }
});

test('marble info names the CUDA devices, or why there are none', () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const out = execFileSync(process.execPath, [cli, 'info'], { encoding: 'utf8' });
  const line = out.split('\n').find((l) => l.startsWith('backend cuda'));
  assert.ok(line, out);
  if (reason === null) {
    assert.match(line, /available: \d+ device/);
    assert.match(out, /compute capability \d+\.\d+/);
  } else {
    assert.match(line, /unavailable: /);
    assert.ok(line.includes(info.built ? reason : 'built without CUDA'), line);
  }
});
