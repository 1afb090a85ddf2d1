// Op profiling of the training step (Trainer.startProfile, `marble train
// --profile`): the timed op table runs the same ops (the losses of a profiled
// run equal an unprofiled one's, bit for bit), every op family the step uses
// is counted, the table adds up, and backends without op timers say so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ConfigError, DDPMScheduler, InputError, loadUNet } from '../src/index.js';
import { PROFILE_FAMILIES, Trainer, formatProfile } from '../src/train/index.js';
import type { TrainProfile } from '../src/train/index.js';
import { fileURLToPath } from 'node:url';

import { fixturePath } from './helpers.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const batch = Float32Array.from({ length: 4 * 3 * 16 * 16 }, (_, i) => 0.8 * Math.sin(i * 0.37));

async function trainer(backend: 'cpu' | 'wasm'): Promise<Trainer> {
  const unet = await loadUNet(fixturePath('unet/tiny'), { backend, threads: 1 });
  return new Trainer({ unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3 }, ema: { decay: 0.99 }, seed: 3 });
}

test('profiling times the real ops: same losses as an unprofiled run, every family the step uses counted', async () => {
  const plain = await trainer('cpu');
  const profiled = await trainer('cpu');
  try {
    const first = [(await plain.step(batch)).loss, (await profiled.step(batch)).loss];
    assert.equal(first[0], first[1]);
    profiled.startProfile();
    for (let i = 0; i < 3; i++) assert.equal((await profiled.step(batch)).loss, (await plain.step(batch)).loss);
    const p = profiled.profile(0.003);
    assert.equal(p.steps, 3);
    const row = (family: string) => p.rows.find((r) => r.family === family);
    // The tiny UNet has convolutions, GroupNorms and attention: each family
    // the training step runs is there, with calls in every step.
    for (const family of ['conv forward', 'conv data gradient', 'conv weight gradient', 'GroupNorm(+SiLU) forward', 'GroupNorm(+SiLU) backward', 'attention forward', 'attention backward', 'optimizer (AdamW, EMA, grad norm)']) {
      const r = row(family);
      assert.ok(r && r.calls > 0 && r.ms > 0, `${family}: ${JSON.stringify(r)}`);
      assert.equal(r.calls, Math.round(r.calls), `${family}: the same calls every step`);
    }
    assert.equal(row('sampler step'), undefined, 'no sampler step in training');
    // Op time, the rest of the step and the data loading make up the wall time.
    const opMs = p.rows.filter((r) => (PROFILE_FAMILIES as readonly string[]).includes(r.family)).reduce((s, r) => s + r.ms, 0);
    assert.ok(opMs <= p.stepMs * 1.001, `ops ${opMs} ms within the step's ${p.stepMs} ms`);
    assert.ok(Math.abs(row('data loading')!.ms - 1) < 1e-9, 'data loading: 3 ms over 3 steps');
    const shares = p.rows.reduce((s, r) => s + r.share, 0);
    assert.ok(Math.abs(shares - 1) < 1e-6, `shares add up to ${shares}`);
    assert.match(formatProfile(p), /conv forward\s+\d+\.\d\s+\d+\.\d%\s+\d+/);
    // Restarting zeroes the counters; stopping ends it.
    profiled.startProfile();
    assert.equal(profiled.profile().steps, 0);
    assert.ok(profiled.profile().rows.every((r) => r.ms === 0 || r.family === 'data loading'));
    profiled.stopProfile();
    assert.throws(() => profiled.profile(), InputError);
    assert.equal((await profiled.step(batch)).loss, (await plain.step(batch)).loss, 'the model ops are back');
  } finally {
    plain.unet.dispose();
    profiled.unet.dispose();
  }
});

test('profiling on wasm: a ConfigError that says why', async () => {
  const t = await trainer('wasm');
  try {
    assert.throws(() => t.startProfile(), (e: unknown) => e instanceof ConfigError && /native backend/.test((e as Error).message));
  } finally {
    t.unet.dispose();
  }
});

test('marble train --profile prints the table and writes profile.json', async () => {
  const out = await mkdtemp(join(tmpdir(), 'marble-profile-'));
  try {
    const run = spawnSync(
      process.execPath,
      [CLI, 'train', '--data', 'mnist', '--config', fixturePath('unet/mnist-variants/config.json'), '--steps', '3', '--batch', '2', '--out', out, '--profile', '--threads', '1', '--backend', 'cpu'],
      { encoding: 'utf8' },
    );
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stderr, /where a step's time went \(cpu, batch 2\)/);
    assert.match(run.stderr, /conv weight gradient\s+\d/);
    const saved = JSON.parse(await readFile(join(out, 'profile.json'), 'utf8')) as TrainProfile;
    assert.equal(saved.steps, 2, 'profiled from the second step of the run');
    assert.ok(saved.rows.some((r) => r.family === 'conv forward' && r.calls > 0));
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
