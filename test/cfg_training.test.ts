// Training for classifier-free guidance: the label dropout stream (its rate,
// and that it is a function of the seed and the update alone), the Trainer
// training the null class only when the model records a dropout, a saved
// pipeline that records it and samples guided after loading, and the CLI's
// --cfg-dropout / --guidance end to end.
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { DDIMScheduler, DDPMScheduler, loadPipeline } from '../src/index.js';
import { createUNet } from '../src/core/model/unet.js';
import { kGuidanceConfigKey } from '../src/core/model/guidance.js';
import { sample } from '../src/core/sampler.js';
import { defaultUNetConfig } from '../src/train/default_config.js';
import { labelDropoutMask } from '../src/train/label_dropout.js';
import { Trainer } from '../src/train/trainer.js';
import { fixturePath } from './helpers.js';

test('label dropout drops about p of the labels, the same ones for the same seed and update', () => {
  let dropped = 0;
  const steps = 1000;
  const batch = 16;
  for (let step = 1; step <= steps; step++) dropped += labelDropoutMask(7n, step, batch, 0.1).filter(Boolean).length;
  const rate = dropped / (steps * batch);
  // 16,000 draws: the standard deviation of the rate is 0.0024; 0.01 is over 4 of them.
  assert.ok(Math.abs(rate - 0.1) < 0.01, `dropped ${rate}`);
  assert.deepEqual(labelDropoutMask(7n, 42, batch, 0.1), labelDropoutMask(7n, 42, batch, 0.1));
  const masks = (seed: bigint) => Array.from({ length: 50 }, (_, s) => labelDropoutMask(seed, s + 1, batch, 0.5)).flat();
  assert.notDeepEqual(masks(7n), masks(8n), 'another seed drops other labels');
  assert.ok(labelDropoutMask(7n, 1, batch, 0).every((d) => !d), 'p = 0 drops nothing');
});

/** A small default UNet on 8x8 gray images with 3 classes, with or without the null class record. */
async function smallModel(cfgDropout: number | null) {
  const config = defaultUNetConfig({ sampleSize: 8, channels: 1, numClasses: cfgDropout === null ? 4 : 3, cfgDropout });
  return createUNet(config, { backend: 'cpu', seed: 5 });
}

/** Row `row` of class_embedding.weight before and after `steps` updates on labels 0..2. */
async function nullRowChange(cfgDropout: number | null, dir?: string): Promise<number> {
  const unet = await smallModel(cfgDropout);
  const trainer = new Trainer({ unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3, weightDecay: 0 }, seed: 3 });
  try {
    const index = unet.parameters().findIndex((p) => p.name === 'class_embedding.weight');
    const dim = unet.parameters()[index]!.shape[1]!;
    const row = (w: Float32Array[]) => w[index]!.slice(3 * dim, 4 * dim);
    const before = row(trainer.readAll('param'));
    const batch = new Float32Array(4 * 64).map((_, i) => Math.sin(i * 0.3));
    for (let s = 0; s < 4; s++) await trainer.step(batch, [0, 1, 2, 0]);
    const after = row(trainer.readAll('param'));
    if (dir) await trainer.save(dir);
    return Math.max(...after.map((v, i) => Math.abs(v - before[i]!)));
  } finally {
    unet.dispose();
  }
}

test('the Trainer trains the null class only where the model records a label dropout; the saved pipeline samples guided', async () => {
  // Seed 3, 4 updates of 4 labels at p = 0.5: some labels are dropped (else the check below proves nothing).
  const drops = [1, 2, 3, 4].flatMap((s) => labelDropoutMask(3n, s, 4, 0.5)).filter(Boolean).length;
  assert.ok(drops > 0);
  assert.equal(await nullRowChange(null), 0, 'label 3 never seen, no weight decay: its row stays');
  const dir = await mkdtemp(join(tmpdir(), 'marble-cfg-train-'));
  try {
    assert.ok((await nullRowChange(0.5, dir)) > 0, 'the dropped labels train the null row');
    const config = JSON.parse(await readFile(join(dir, 'unet', 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config['num_class_embeds'], 4);
    assert.deepEqual(config[kGuidanceConfigKey], { label_dropout: 0.5, null_class_label: 3 });
    const pipeline = await loadPipeline(dir, { backend: 'cpu' });
    try {
      assert.deepEqual(pipeline.unet.config.guidance, { nullClassLabel: 3, labelDropout: 0.5 });
      const r = await sample({ unet: pipeline.unet, scheduler: new DDIMScheduler(), numInferenceSteps: 3, batchSize: 2, classLabels: [0, 2], guidanceScale: 3 });
      assert.ok(r.samples.every(Number.isFinite));
    } finally {
      pipeline.unet.dispose();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('marble train --cfg-dropout then marble sample --guidance; bad --guidance values and models without a null class refused', async () => {
  const cli = new URL('../src/cli/main.js', import.meta.url).pathname;
  const dir = await mkdtemp(join(tmpdir(), 'marble-cfg-cli-'));
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 300_000 });
  try {
    const out = join(dir, 'run');
    const train = run('train', '--data', 'mnist', '--cfg-dropout', '0.1', '--resolution', '8', '--batch', '4', '--steps', '2', '--out', out, '--backend', 'cpu', '--threads', '1');
    assert.equal(train.status, 0, train.stderr);
    const config = JSON.parse(await readFile(join(out, 'checkpoint', 'unet', 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config['num_class_embeds'], 11);
    assert.deepEqual(config[kGuidanceConfigKey], { label_dropout: 0.1, null_class_label: 10 });

    const png = join(dir, 'guided.png');
    const guided = run('sample', '--model', join(out, 'checkpoint'), '--guidance', '3', '--steps', '2', '--batch', '2', '--backend', 'cpu', '--out', png);
    assert.equal(guided.status, 0, guided.stderr);
    assert.match(guided.stdout, /guidance 3/);
    assert.ok((await readFile(png)).length > 0);

    for (const bad of ['-1', 'abc', 'Infinity', 'NaN']) {
      const r = run('sample', '--model', join(out, 'checkpoint'), '--guidance', bad, '--steps', '1', '--out', png);
      assert.equal(r.status, 1, `--guidance ${bad}`);
      assert.match(r.stderr, /--guidance must be a number >= 0/);
    }
    const plain = run('sample', '--model', fixturePath('unet/class-cond'), '--guidance', '3', '--steps', '1', '--backend', 'cpu', '--out', png);
    assert.equal(plain.status, 1);
    assert.match(plain.stderr, /null class/);
    const badDropout = run('train', '--data', 'mnist', '--cfg-dropout', '1', '--steps', '1', '--out', join(dir, 'bad'));
    assert.equal(badDropout.status, 1);
    assert.match(badDropout.stderr, /--cfg-dropout/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
