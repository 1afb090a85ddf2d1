// The training driver: schedules and EMA decay against hand-computed values,
// the per-sample scalars, diffusers config round trips, checkpoints (layout,
// atomicity under failure and under kill, resume), typed errors for bad
// input, and, end to end on the tiny fixture, overfitting a fixed batch and
// an exact resume.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ConfigError, DDIMScheduler, DDPMScheduler, InputError, TorchGenerator, loadPipeline, loadUNet, parseUNet2DConfig } from '../src/index.js';
import { parseSafetensors, serializeSafetensors, tensorToFloat32 } from '../src/core/model/safetensors.js';
import {
  CheckpointError,
  Trainer,
  TrainingError,
  addNoiseCoefficients,
  emaDecay,
  learningRate,
  lrFactor,
  minSnrLossWeights,
  resolveEmaOptions,
  resolveLrSchedule,
  schedulerToDiffusersConfig,
  toDiffusersConfig,
  torchRandint,
} from '../src/train/index.js';
import type { TrainerOptions } from '../src/train/index.js';
import { engineOf } from '../src/train/engine_access.js';
import { UNET_FIXTURES, fixturePath } from './helpers.js';

const close = (a: number, b: number, tol = 1e-12) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} vs ${b}`);

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'marble-train-'));
}

async function tinyTrainer(options: Partial<TrainerOptions> = {}): Promise<Trainer> {
  const unet = options.unet ?? (await loadUNet(fixturePath('unet/tiny'), { backend: 'cpu' }));
  return new Trainer({ unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3 }, seed: 7, ...options });
}

/** A fixed, smooth batch of tiny-model images ([B, 3, 16, 16]). */
function fixedBatch(batch: number): Float32Array {
  const x = new Float32Array(batch * 3 * 16 * 16);
  for (let i = 0; i < x.length; i++) x[i] = 0.8 * Math.sin(i * 0.37);
  return x;
}

// ---------------------------------------------------------------------------
// Schedules and scalars

test('lr schedules: diffusers get_scheduler values (LambdaLR after k updates)', () => {
  const constant = resolveLrSchedule({ kind: 'constant', warmupSteps: 10 });
  assert.equal(lrFactor(constant, 0), 0);
  assert.equal(lrFactor(constant, 5), 0.5);
  assert.equal(lrFactor(constant, 10), 1);
  assert.equal(lrFactor(constant, 10_000), 1);
  assert.equal(lrFactor(resolveLrSchedule({ kind: 'constant', warmupSteps: 0 }), 0), 1);

  const linear = resolveLrSchedule({ kind: 'linear', warmupSteps: 10, totalSteps: 110 });
  assert.equal(lrFactor(linear, 4), 0.4);
  assert.equal(lrFactor(linear, 10), 1);
  assert.equal(lrFactor(linear, 60), 0.5);
  assert.equal(lrFactor(linear, 110), 0);
  assert.equal(lrFactor(linear, 200), 0);

  const cosine = resolveLrSchedule({ kind: 'cosine', warmupSteps: 0, totalSteps: 100 });
  assert.equal(lrFactor(cosine, 0), 1);
  close(lrFactor(cosine, 25), 0.5 * (1 + Math.SQRT1_2));
  close(lrFactor(cosine, 50), 0.5);
  close(lrFactor(cosine, 100), 0);
  const warm = resolveLrSchedule({ kind: 'cosine', warmupSteps: 20, totalSteps: 120 });
  close(lrFactor(warm, 70), 0.5);

  // Optimizer step s (1-based) uses the factor after s - 1 updates: with warmup the first rate is 0.
  assert.equal(learningRate(1e-3, constant, 1), 0);
  close(learningRate(1e-3, constant, 6), 5e-4);
  assert.throws(() => resolveLrSchedule({ kind: 'cosine', warmupSteps: 0 }), InputError);
  assert.throws(() => resolveLrSchedule({ kind: 'step' as 'linear', warmupSteps: 0, totalSteps: 5 }), InputError);
  assert.throws(() => resolveLrSchedule({ kind: 'linear', warmupSteps: -1, totalSteps: 5 }), InputError);
});

test('ema decay: EMAModel.get_decay', () => {
  const plain = resolveEmaOptions({});
  assert.equal(emaDecay(plain, 1), 0); // the first update copies the weights
  close(emaDecay(plain, 2), 2 / 11);
  close(emaDecay(plain, 11), 11 / 20);
  assert.equal(emaDecay(plain, 1e9), 0.9999); // capped at decay

  const warm = resolveEmaOptions({ useEmaWarmup: true, invGamma: 1, power: 2 / 3, decay: 0.999 });
  close(emaDecay(warm, 2), 1 - 2 ** (-2 / 3));
  close(emaDecay(warm, 11), 1 - 11 ** (-2 / 3));
  assert.equal(emaDecay(warm, 1e9), 0.999);
  const warm34 = resolveEmaOptions({ useEmaWarmup: true, invGamma: 2, power: 0.75 });
  close(emaDecay(warm34, 5), 1 - (1 + 4 / 2) ** -0.75);

  const delayed = resolveEmaOptions({ updateAfterStep: 5 });
  assert.equal(emaDecay(delayed, 6), 0);
  close(emaDecay(delayed, 7), 2 / 11);

  const floor = resolveEmaOptions({ minDecay: 0.5 });
  assert.equal(emaDecay(floor, 1), 0); // step <= 0 returns 0 before the bounds
  assert.equal(emaDecay(floor, 2), 0.5);
  assert.throws(() => resolveEmaOptions({ decay: 1.5 }), InputError);
  assert.throws(() => resolveEmaOptions({ minDecay: 0.5, decay: 0.4 }), InputError);
});

test('torch.randint from the torch generator: random() % range, in torch order', () => {
  // torch.manual_seed(0); torch.randint(0, 10, (5,)) -> [4, 9, 3, 0, 3]
  assert.deepEqual(torchRandint(new TorchGenerator(0), 0, 10, 5), [4, 9, 3, 0, 3]);
  // It advances the generator like torch: a following randn starts after the 5 draws.
  const g = new TorchGenerator(0);
  torchRandint(g, 0, 10, 5);
  const h = new TorchGenerator(0);
  torchRandint(h, 0, 1000, 3);
  torchRandint(h, 0, 1000, 2);
  assert.deepEqual(g.randn(20), h.randn(20));
  assert.throws(() => torchRandint(g, 5, 5, 1), RangeError);
});

test('add_noise coefficients and min-SNR weights per sample, float32', () => {
  const s = new DDPMScheduler();
  const t = [0, 250, 999];
  const { sqrtAlphaProd, sqrtOneMinusAlphaProd } = addNoiseCoefficients(s.alphasCumprod, t);
  t.forEach((ti, b) => {
    const a = s.alphasCumprod[ti];
    assert.equal(sqrtAlphaProd[b], Math.fround(Math.sqrt(a)));
    assert.equal(sqrtOneMinusAlphaProd[b], Math.fround(Math.sqrt(Math.fround(1 - a))));
  });
  // The scheduler's own add_noise agrees with these coefficients.
  const x0 = Float32Array.from({ length: 6 }, (_, i) => i / 3 - 1);
  const noise = Float32Array.from({ length: 6 }, (_, i) => Math.cos(i));
  const expected = s.addNoise(x0, noise, [250, 999]);
  const c = addNoiseCoefficients(s.alphasCumprod, [250, 999]);
  for (let i = 0; i < 6; i++) {
    const b = i < 3 ? 0 : 1;
    assert.equal(Math.fround(Math.fround(c.sqrtAlphaProd[b] * x0[i]) + Math.fround(c.sqrtOneMinusAlphaProd[b] * noise[i])), expected[i]);
  }

  const gamma = 5;
  const snr = t.map((ti) => s.alphasCumprod[ti] / (1 - s.alphasCumprod[ti]));
  const rel = (a: number, b: number) => assert.ok(Math.abs(a - b) <= 1e-5 * Math.abs(b), `${a} vs ${b}`);
  const eps = minSnrLossWeights(s.alphasCumprod, t, gamma, 'epsilon');
  const v = minSnrLossWeights(s.alphasCumprod, t, gamma, 'v_prediction');
  const x = minSnrLossWeights(s.alphasCumprod, t, gamma, 'sample');
  snr.forEach((r, b) => {
    rel(eps[b], Math.min(r, gamma) / r);
    rel(v[b], Math.min(r, gamma) / (r + 1));
    rel(x[b], Math.min(r, gamma));
  });
  assert.equal(eps[0], Math.fround(5 / Math.fround(snr[0]))); // low noise: clipped to gamma
  assert.equal(x[0], 5);
  // Zero terminal SNR: the epsilon weight is its limit 1, not 0/0.
  const zero = new DDPMScheduler({ rescaleBetasZeroSnr: true });
  assert.equal(minSnrLossWeights(zero.alphasCumprod, [999], gamma, 'epsilon')[0], 1);
});

// ---------------------------------------------------------------------------
// Configs

test('toDiffusersConfig round-trips through parseUNet2DConfig, with diffusers\' keys', async () => {
  for (const name of UNET_FIXTURES) {
    const json = JSON.parse(await readFile(fixturePath(`unet/${name}/config.json`), 'utf8')) as Record<string, unknown>;
    const config = parseUNet2DConfig(json);
    const back = toDiffusersConfig(config);
    assert.deepEqual(parseUNet2DConfig(back), config, name);
    assert.deepEqual(Object.keys(back).sort(), Object.keys(json).sort(), `${name}: the same keys as diffusers writes`);
    for (const key of Object.keys(json)) if (key !== '_diffusers_version') assert.deepEqual(back[key], json[key], `${name}.${key}`);
    assert.deepEqual(parseUNet2DConfig(JSON.parse(JSON.stringify(back))), config);
  }
  const tuple = parseUNet2DConfig({ sample_size: [16, 24], block_out_channels: [32], down_block_types: ['DownBlock2D'], up_block_types: ['UpBlock2D'] });
  assert.deepEqual(parseUNet2DConfig(toDiffusersConfig(tuple)), tuple);
});

test('scheduler config round-trips through DDPMScheduler.fromConfig and feeds DDIM', () => {
  const s = new DDPMScheduler({ numTrainTimesteps: 500, betaSchedule: 'squaredcos_cap_v2', predictionType: 'v_prediction', clipSample: false, varianceType: 'fixed_large', timestepSpacing: 'trailing' });
  const json = schedulerToDiffusersConfig(s);
  assert.equal(json['_class_name'], 'DDPMScheduler');
  assert.equal(json['num_train_timesteps'], 500);
  assert.equal(json['trained_betas'], null);
  assert.deepEqual(DDPMScheduler.fromConfig(JSON.parse(JSON.stringify(json))).config, s.config);
  const ddim = DDIMScheduler.fromConfig(json);
  assert.deepEqual(ddim.alphasCumprod, s.alphasCumprod);
  assert.equal(ddim.config.predictionType, 'v_prediction');
});

// ---------------------------------------------------------------------------
// Bad input

test('bad input: batch shape, values, labels and options raise InputError naming the problem', async () => {
  const trainer = await tinyTrainer();
  try {
    const expectInput = (p: Promise<unknown>, pattern: RegExp) =>
      assert.rejects(p, (e: unknown) => {
        assert.ok(e instanceof InputError, `expected InputError, got ${String(e)}`);
        assert.match((e as Error).message, pattern);
        return true;
      });
    await expectInput(trainer.step(new Float32Array(2 * 1 * 16 * 16)), /in_channels = 3.*sample_size 16/);
    await expectInput(trainer.step(new Float32Array(3 * 15 * 15)), /not a whole number of 3x16x16 images/);
    await expectInput(trainer.step(new Float32Array(0)), /0 values/);
    const nan = fixedBatch(1);
    nan[17] = NaN;
    await expectInput(trainer.step(nan), /NaN at index 17/);
    await expectInput(trainer.step(fixedBatch(1), [3]), /not class-conditional/);
    await expectInput(trainer.step(Array.from(fixedBatch(1)) as unknown as Float32Array), /Float32Array/);
    assert.equal(trainer.globalStep, 0);

    const unet = trainer.unet;
    assert.throws(() => new Trainer({ unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: -1 } }), /optimizer\.lr/);
    assert.throws(() => new Trainer({ unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3, betas: [0.9, 1] } }), InputError);
    assert.throws(() => new Trainer({ unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3 }, gradClip: 0 }), /gradClip/);
    assert.throws(() => new Trainer({ unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3 }, seed: -1 }), /seed/);
    assert.throws(() => new Trainer({ unet, noiseScheduler: {} as DDPMScheduler, optimizer: { lr: 1e-3 } }), /DDPMScheduler/);
    const accumulating = new Trainer({ unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3 }, gradAccumulation: 2 });
    await expectInput(accumulating.step(fixedBatch(3)), /gradAccumulation = 2/);
  } finally {
    trainer.unet.dispose();
  }
  const classCond = await loadUNet(fixturePath('unet/class-cond'), { backend: 'cpu' });
  try {
    const t = new Trainer({ unet: classCond, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3 } });
    await assert.rejects(t.step(fixedBatch(2)), /class-conditional: pass class labels/);
    await assert.rejects(t.step(fixedBatch(2), [1, 10]), /class label 10 at index 1/);
    // Its learned time embedding has 1000 entries: a 2000-step scheduler would index past it.
    assert.throws(() => new Trainer({ unet: classCond, noiseScheduler: new DDPMScheduler({ numTrainTimesteps: 2000 }), optimizer: { lr: 1e-3 } }), ConfigError);
  } finally {
    classCond.dispose();
  }
});

// ---------------------------------------------------------------------------
// Checkpoints

async function listTree(dir: string): Promise<string[]> {
  return ((await readdir(dir, { recursive: true })) as string[]).sort();
}

test('save writes a diffusers DDPMPipeline folder plus trainer_state; resume restores every tensor', async () => {
  const dir = await tempDir();
  const trainer = await tinyTrainer({ ema: { decay: 0.99 } });
  try {
    // Distinct params, EMA and moments, so a mix-up would show.
    const shift = (kind: 'param' | 'ema' | 'exp_avg' | 'exp_avg_sq', by: number) =>
      trainer.writeAll(kind, trainer.readAll('param').map((t) => t.map((v) => Math.abs(v) + by)));
    shift('ema', 1);
    shift('exp_avg', 2);
    shift('exp_avg_sq', 3);
    const ckpt = join(dir, 'run', 'checkpoint');
    await trainer.save(ckpt, { userState: { loader: { epoch: 3, position: 5 } } });
    assert.deepEqual(await listTree(ckpt), [
      'model_index.json',
      'scheduler',
      'scheduler/scheduler_config.json',
      'trainer_state',
      'trainer_state/ema.safetensors',
      'trainer_state/exp_avg.safetensors',
      'trainer_state/exp_avg_sq.safetensors',
      'trainer_state/state.json',
      'trainer_state/unet.safetensors',
      'unet',
      'unet/config.json',
      'unet/diffusion_pytorch_model.safetensors',
    ]);
    assert.deepEqual(JSON.parse(await readFile(join(ckpt, 'model_index.json'), 'utf8')), {
      _class_name: 'DDPMPipeline',
      _diffusers_version: '0.40.0',
      scheduler: ['diffusers', 'DDPMScheduler'],
      unet: ['diffusers', 'UNet2DModel'],
    });
    // The pipeline's model is the EMA (what diffusers' training script saves), loadable as is.
    const pipeline = await loadPipeline(ckpt, { backend: 'cpu', keepWeights: true });
    const table = engineOf(pipeline.unet).paramTable();
    const ema = trainer.readAll('ema');
    table.forEach((_, i) => assert.deepEqual(engineOf(pipeline.unet).readTensor(i, 'param'), ema[i]));
    pipeline.unet.dispose();
    assert.equal(pipeline.schedulerConfig?.['_class_name'], 'DDPMScheduler');

    const resumed = await Trainer.resume(ckpt, { backend: 'cpu' });
    try {
      for (const kind of ['param', 'ema', 'exp_avg', 'exp_avg_sq'] as const)
        assert.deepEqual(resumed.readAll(kind), trainer.readAll(kind), kind);
      assert.deepEqual(resumed.settings, trainer.settings);
      assert.deepEqual(resumed.userState, { loader: { epoch: 3, position: 5 } });
      assert.equal(resumed.globalStep, 0);
    } finally {
      resumed.unet.dispose();
    }
  } finally {
    trainer.unet.dispose();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a save that fails midway leaves the previous checkpoint intact and no temporaries', async () => {
  const dir = await tempDir();
  const trainer = await tinyTrainer();
  try {
    const ckpt = join(dir, 'checkpoint');
    await trainer.save(ckpt, { userState: 'first' });
    const before = await readFile(join(ckpt, 'trainer_state', 'unet.safetensors'));
    trainer.writeAll('param', trainer.readAll('param').map((t) => t.map((v) => v + 1)));
    let written = 0;
    await assert.rejects(
      trainer.save(ckpt, {
        userState: 'second',
        onFile: (file) => {
          if (++written === 5) throw new Error(`disk full after ${file}`);
        },
      }),
      (e: unknown) => e instanceof CheckpointError && /disk full/.test((e as Error).message),
    );
    assert.deepEqual(await readdir(dir), ['checkpoint']);
    assert.deepEqual(await readFile(join(ckpt, 'trainer_state', 'unet.safetensors')), before);
    const resumed = await Trainer.resume(ckpt, { backend: 'cpu' });
    assert.equal(resumed.userState, 'first');
    resumed.unet.dispose();

    // An interrupted commit (killed between its two renames) leaves checkpoint.prev: resume uses it,
    // and the next save completes the swap.
    await rename(ckpt, `${ckpt}.prev`);
    const fallback = await Trainer.resume(ckpt, { backend: 'cpu' });
    assert.equal(fallback.userState, 'first');
    fallback.unet.dispose();
    await trainer.save(ckpt, { userState: 'third' });
    assert.deepEqual(await readdir(dir), ['checkpoint']);
    const third = await Trainer.resume(ckpt, { backend: 'cpu' });
    assert.equal(third.userState, 'third');
    third.unet.dispose();
  } finally {
    trainer.unet.dispose();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a process killed mid-save leaves the previous checkpoint loadable', async () => {
  const dir = await tempDir();
  try {
    const ckpt = join(dir, 'checkpoint');
    const trainUrl = new URL('../src/train/index.js', import.meta.url).href;
    const indexUrl = new URL('../src/index.js', import.meta.url).href;
    const script = `
      const { loadUNet, DDPMScheduler } = await import(${JSON.stringify(indexUrl)});
      const { Trainer } = await import(${JSON.stringify(trainUrl)});
      const unet = await loadUNet(${JSON.stringify(fixturePath('unet/tiny'))}, { backend: 'cpu' });
      const trainer = new Trainer({ unet, noiseScheduler: new DDPMScheduler(), optimizer: { lr: 1e-3 }, ema: {} });
      await trainer.save(${JSON.stringify(ckpt)}, { userState: 'good' });
      trainer.writeAll('param', trainer.readAll('param').map((t) => t.fill(0)));
      let n = 0;
      await trainer.save(${JSON.stringify(ckpt)}, { userState: 'torn', onFile: () => { if (++n === 6) process.kill(process.pid, 'SIGKILL'); } });
    `;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(child.signal, 'SIGKILL', child.stderr);
    const names = await readdir(dir);
    assert.ok(names.includes('checkpoint') && names.some((n) => n.startsWith('checkpoint.tmp-')), names.join(', '));
    const resumed = await Trainer.resume(ckpt, { backend: 'cpu' });
    try {
      assert.equal(resumed.userState, 'good');
      assert.ok(resumed.readAll('param').some((t) => t.some((v) => v !== 0)), 'the weights are the first save\'s');
      // The next save clears the dead process's temporary folder.
      await resumed.save(ckpt);
      assert.deepEqual(await readdir(dir), ['checkpoint']);
    } finally {
      resumed.unet.dispose();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('unwritable or foreign output folders raise CheckpointError', async () => {
  const dir = await tempDir();
  const trainer = await tinyTrainer();
  try {
    await writeFile(join(dir, 'a-file'), 'x');
    await assert.rejects(trainer.save(join(dir, 'a-file', 'checkpoint')), (e: unknown) => e instanceof CheckpointError && /ENOTDIR|EEXIST/.test((e as Error).message));
    await assert.rejects(trainer.save(join(dir, 'a-file')), (e: unknown) => e instanceof CheckpointError && /is a file/.test((e as Error).message));
    // A folder with other things in it is not replaced.
    await assert.rejects(trainer.save(dir), (e: unknown) => e instanceof CheckpointError && /not a marble checkpoint/.test((e as Error).message));
    assert.deepEqual(await readdir(dir), ['a-file']);
  } finally {
    trainer.unet.dispose();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a corrupt resume state raises CheckpointError naming the file', async () => {
  const dir = await tempDir();
  const trainer = await tinyTrainer({ ema: {} });
  const good = join(dir, 'good');
  await trainer.save(good);
  trainer.unet.dispose();
  let case_ = 0;
  /** A copy of the good checkpoint with one change, and the error resume must raise. */
  const expectCorrupt = async (edit: (ckpt: string) => Promise<void>, pattern: RegExp) => {
    const ckpt = join(dir, `case-${case_++}`);
    await cp(good, ckpt, { recursive: true });
    await edit(ckpt);
    await assert.rejects(Trainer.resume(ckpt, { backend: 'cpu' }), (e: unknown) => {
      assert.ok(e instanceof CheckpointError, `expected CheckpointError, got ${String(e)}`);
      assert.match((e as Error).message, pattern);
      return true;
    });
  };
  const statePath = (ckpt: string) => join(ckpt, 'trainer_state', 'state.json');
  const editState = (change: (s: Record<string, any>) => void) => async (ckpt: string) => {
    const state = JSON.parse(await readFile(statePath(ckpt), 'utf8'));
    change(state);
    await writeFile(statePath(ckpt), JSON.stringify(state));
  };
  try {
    await assert.rejects(Trainer.resume(join(dir, 'nothing-here')), (e: unknown) => e instanceof CheckpointError && /does not exist/.test((e as Error).message));
    await expectCorrupt((c) => writeFile(statePath(c), '{"format": "marble-trainer-state", '), /state\.json is not valid JSON/);
    await expectCorrupt((c) => rm(statePath(c)), /not a marble training checkpoint/);
    await expectCorrupt((c) => rm(join(c, 'trainer_state', 'exp_avg_sq.safetensors')), /exp_avg_sq\.safetensors/);
    await expectCorrupt((c) => writeFile(join(c, 'trainer_state', 'ema.safetensors'), 'garbage'), /ema\.safetensors/);
    await expectCorrupt(editState((s) => (s.version = 99)), /version 99/);
    await expectCorrupt(editState((s) => (s.progress.lossHistory = [1, 2])), /lossHistory has 2 entries for 0 steps/);
    await expectCorrupt(editState((s) => (s.progress.globalStep = -3)), /globalStep/);
    await expectCorrupt(editState((s) => (s.settings.optimizer.lr = 'fast')), /optimizer\.lr/);
    await expectCorrupt(editState((s) => (s.progress.generator.mt19937.state = [1, 2, 3])), /mt19937/);
    await expectCorrupt(editState((s) => (s.progress.generator = { seed: '1' })), /cannot resume from/);
    await expectCorrupt(editState((s) => (s.settings.seed = 12)), /settings\.seed/);
    await expectCorrupt(editState((s) => delete s.settings.lrSchedule), /lrSchedule/);
    await expectCorrupt(async (c) => {
      const file = join(c, 'trainer_state', 'exp_avg.safetensors');
      const parsed = parseSafetensors(await readFile(file));
      const tensors: Parameters<typeof serializeSafetensors>[0] = {};
      for (const [name, info] of parsed.tensors) tensors[name] = { dtype: 'F32', shape: info.shape, data: tensorToFloat32(parsed, name) };
      tensors['conv_in.weight'] = { dtype: 'F32', shape: [1, 2], data: new Float32Array(2) };
      delete tensors['conv_out.bias'];
      await writeFile(file, serializeSafetensors(tensors));
    }, /conv_in\.weight has shape \[1, 2\], expected \[32, 3, 3, 3\].*missing conv_out\.bias/);
    await expectCorrupt(async (c) => {
      const config = JSON.parse(await readFile(join(c, 'unet', 'config.json'), 'utf8'));
      config.block_out_channels = [32, 48];
      await writeFile(join(c, 'unet', 'config.json'), JSON.stringify(config));
    }, /does not match the model's parameters/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------
// Steps (the engine's training step)

test('a non-finite loss throws TrainingError and applies no update', async () => {
  const trainer = await tinyTrainer({ ema: {} });
  try {
    const params = trainer.readAll('param');
    params[0][0] = NaN; // conv_in.weight: poisons every output
    trainer.writeAll('param', params);
    await assert.rejects(trainer.step(fixedBatch(2)), (e: unknown) => {
      assert.ok(e instanceof TrainingError, String(e));
      assert.match((e as Error).message, /^step 1: .*NaN.*the update was skipped/);
      return true;
    });
    assert.equal(trainer.globalStep, 0);
    assert.deepEqual(trainer.lossHistory, []);
    assert.ok(trainer.readAll('exp_avg').every((t) => t.every((v) => v === 0)), 'no moment moved');
    const after = trainer.readAll('param');
    assert.ok(Number.isNaN(after[0][0]));
    assert.deepEqual(after.slice(1), params.slice(1), 'no weight moved');
  } finally {
    trainer.unet.dispose();
  }
});

test('gradient accumulation gives the whole batch\'s update; EMA follows get_decay; clipping scales the gradients', async () => {
  const batch = fixedBatch(4);
  const whole = await tinyTrainer({ ema: {} });
  const split = await tinyTrainer({ gradAccumulation: 2, ema: {} });
  try {
    const initial = whole.readAll('param');
    const a = await whole.step(batch);
    const b = await split.step(batch);
    close(b.loss, a.loss, 1e-5);
    close(b.gradNorm, a.gradNorm, 1e-4);
    // The accumulated gradients (sums over the micro-batches, halved by the
    // update) are the whole batch's, to float rounding of each tensor's scale.
    const ga = whole.readAll('grad');
    const gb = split.readAll('grad');
    ga.forEach((t, i) => {
      const scale = t.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      t.forEach((v, k) => assert.ok(Math.abs(v - gb[i][k] / 2) <= 1e-5 * scale, `gradient ${i}[${k}]: ${v} vs ${gb[i][k] / 2} (scale ${scale})`));
    });
    // And so is the update. AdamW's first step moves a weight by lr * g / (|g| + eps),
    // which turns rounding in gradients near eps (1e-9 here, a millionth of their
    // tensor's scale) into a visible difference: those elements are left out.
    const pa = whole.readAll('param');
    const pb = split.readAll('param');
    let maxDiff = 0;
    pa.forEach((t, i) => t.forEach((v, k) => {
      if (Math.abs(ga[i][k]) >= 1e-6) maxDiff = Math.max(maxDiff, Math.abs(v - pb[i][k]));
    }));
    assert.ok(maxDiff < 1e-5, `weights after one update differ by ${maxDiff}`);
    // EMAModel.step: ema -= (1 - decay) (ema - param), decay 0 after step 1 and 2/11 after step 2.
    const expectEma = (previous: Float32Array[], params: Float32Array[], decay: number, actual: Float32Array[]) => {
      const oneMinus = Math.fround(1 - decay);
      actual.forEach((t, i) =>
        t.forEach((v, k) => {
          const expected = Math.fround(previous[i][k] - Math.fround(oneMinus * Math.fround(previous[i][k] - params[i][k])));
          assert.ok(Math.abs(v - expected) <= 1e-6, `ema[${i}][${k}] ${v} vs ${expected}`);
        }),
      );
    };
    const ema1 = whole.readAll('ema');
    expectEma(initial, pa, 0, ema1);
    await whole.step(batch);
    expectEma(ema1, whole.readAll('param'), 2 / 11, whole.readAll('ema'));
    assert.notDeepEqual(initial, pa);
  } finally {
    whole.unet.dispose();
    split.unet.dispose();
  }
  // clip_grad_norm_: the gradients AdamW sees are scaled by clip / (norm + 1e-6); its first
  // moment after one update is (1 - beta1) * that gradient, so the moments scale the same way.
  const free = await tinyTrainer();
  const clipped = await tinyTrainer({ gradClip: 0.05 });
  try {
    const r = await free.step(batch);
    const c = await clipped.step(batch);
    assert.equal(c.loss, r.loss);
    assert.equal(c.gradNorm, r.gradNorm, 'gradNorm is reported before clipping');
    assert.ok(r.gradNorm > 0.05);
    const scale = 0.05 / (r.gradNorm + 1e-6);
    const mf = free.readAll('exp_avg');
    const mc = clipped.readAll('exp_avg');
    mf.forEach((t, i) => t.forEach((v, k) => assert.ok(Math.abs(mc[i][k] - v * scale) <= 1e-6 * Math.abs(v) + 1e-12, `exp_avg[${i}][${k}]`)));
  } finally {
    free.unet.dispose();
    clipped.unet.dispose();
  }
});

test('training the tiny model on a fixed batch: loss falls 10x in 200 steps, and a resume at 100 is exact', async () => {
  const dir = await tempDir();
  const batch = fixedBatch(2);
  const options: Partial<TrainerOptions> = {
    optimizer: { lr: 3e-3, weightDecay: 0 },
    lrSchedule: { kind: 'cosine', warmupSteps: 5, totalSteps: 200 },
    ema: { decay: 0.99 },
    gradClip: 1,
    seed: 11,
  };
  const trainer = await tinyTrainer(options);
  let resumed: Trainer | null = null;
  try {
    const losses: number[] = [];
    for (let s = 1; s <= 200; s++) {
      const r = await trainer.step(batch);
      assert.equal(r.step, s);
      assert.ok(Number.isFinite(r.loss) && Number.isFinite(r.gradNorm));
      losses.push(r.loss);
      if (s === 100) await trainer.save(join(dir, 'checkpoint'));
    }
    assert.deepEqual(trainer.lossHistory, losses);
    const mean = (xs: number[]) => xs.reduce((p, q) => p + q, 0) / xs.length;
    const first = mean(losses.slice(0, 10));
    const last = mean(losses.slice(-10));
    assert.ok(last * 10 <= first, `loss fell from ${first} to ${last} (${(first / last).toFixed(1)}x)`);

    resumed = await Trainer.resume(join(dir, 'checkpoint'), { backend: 'cpu' });
    assert.equal(resumed.globalStep, 100);
    assert.deepEqual(resumed.lossHistory, losses.slice(0, 100));
    for (let s = 101; s <= 200; s++) {
      const r = await resumed.step(batch);
      assert.equal(r.loss, losses[s - 1], `step ${s}: resumed loss ${r.loss} vs uninterrupted ${losses[s - 1]}`);
    }
    assert.deepEqual(resumed.readAll('param'), trainer.readAll('param'));
    assert.deepEqual(resumed.readAll('ema'), trainer.readAll('ema'));
  } finally {
    trainer.unet.dispose();
    resumed?.unet.dispose();
    await rm(dir, { recursive: true, force: true });
  }
});

test('marble train: a batch beyond memory is refused before the loader fills it, --dtype bfloat16 on cpu is one line; an image that breaks mid-run keeps the steps made', async () => {
  const cli = new URL('../src/cli/main.js', import.meta.url).pathname;
  const dir = await mkdtemp(join(tmpdir(), 'marble-train-cli-'));
  try {
    const big = spawnSync(process.execPath, [cli, 'train', '--data', 'mnist', '--out', join(dir, 'big'), '--batch', '1000000', '--steps', '2'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(big.status, 1, big.stderr);
    assert.match(big.stderr, /^marble: batch 1000000 at 32x32 needs over \d+ MB of activations, over the \d+ MB/m);
    // --dtype float16 / bfloat16 is mixed precision on cuda; the cpu says so in one line
    const half = spawnSync(process.execPath, [cli, 'train', '--data', 'mnist', '--out', join(dir, 'half'), '--backend', 'cpu', '--dtype', 'bfloat16', '--steps', '1'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(half.status, 1, half.stderr);
    assert.match(half.stderr, /^marble: dtype 'bfloat16': the cpu backend computes in float32 only/m);
    // 40 good 16x16 images and one that does not decode, met at some step past the first
    const images = join(dir, 'images');
    await mkdir(images);
    const pngjs = (await import('pngjs')).default;
    for (let i = 0; i < 40; i++) {
      const png = new pngjs.PNG({ width: 16, height: 16 });
      for (let p = 0; p < 16 * 16 * 4; p++) png.data[p] = (p * 7 + i * 13) & 255;
      await writeFile(join(images, `good-${String(i).padStart(2, '0')}.png`), pngjs.PNG.sync.write(png));
    }
    await writeFile(join(images, 'broken.png'), Buffer.from('\x89PNG\r\n\x1a\n not really'));
    const out = join(dir, 'run');
    const run = spawnSync(process.execPath, [cli, 'train', '--data', images, '--out', out, '--resolution', '16', '--batch', '2', '--steps', '100', '--save-every', '1000', '--threads', '1'], { encoding: 'utf8', timeout: 300_000 });
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /broken\.png/);
    const saved = /saved (.*) at step (\d+); fix the cause and continue with --resume/.exec(run.stderr);
    assert.ok(saved, run.stderr);
    const step = Number(saved[2]);
    assert.ok(step >= 1 && step < 100, `saved at step ${step}`);
    const state = JSON.parse(await readFile(join(out, 'checkpoint', 'trainer_state', 'state.json'), 'utf8')) as { progress: { globalStep: number } };
    assert.equal(state.progress.globalStep, step);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('marble train --stop-at: stops and saves there on the full schedule; --resume finishes it as one straight run does', async () => {
  const cli = new URL('../src/cli/main.js', import.meta.url).pathname;
  const dir = await mkdtemp(join(tmpdir(), 'marble-stop-at-'));
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 300_000 });
  const recipe = ['--data', 'mnist', '--resolution', '8', '--batch', '4', '--steps', '6', '--lr-schedule', 'linear', '--warmup', '0', '--backend', 'cpu', '--threads', '1'];
  const lrs = async (out: string) =>
    (await readFile(join(out, 'train_log.jsonl'), 'utf8')).trim().split('\n').map((l) => (JSON.parse(l) as { lr: number }).lr);
  try {
    const straight = join(dir, 'straight');
    assert.equal(run('train', ...recipe, '--out', straight).status, 0);
    const split = join(dir, 'split');
    const first = run('train', ...recipe, '--stop-at', '3', '--out', split);
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stdout, /stopped at step 3 of 6/);
    const partial = await lrs(split);
    assert.equal(partial.length, 3, 'three steps logged');
    assert.deepEqual(partial, (await lrs(straight)).slice(0, 3), 'the learning rates of the 6-step schedule, not a 3-step one');
    const again = run('train', ...recipe, '--stop-at', '3', '--out', split, '--resume');
    assert.match(again.stdout, /nothing to do/);
    // Without --steps, --resume keeps the run's own length (6), not the option's default.
    const rest = run('train', '--out', split, '--resume', '--backend', 'cpu', '--threads', '1');
    assert.equal(rest.status, 0, rest.stderr);
    assert.deepEqual(await lrs(split), await lrs(straight));
    const weights = (out: string) => readFile(join(out, 'checkpoint', 'unet', 'diffusion_pytorch_model.safetensors'));
    assert.ok((await weights(split)).equals(await weights(straight)), 'the same weights as the straight run');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
