// sample() with the solver schedulers (DPM-Solver++, UniPC, Euler, Euler
// ancestral, Heun) on the tiny UNet fixture: the loop is diffusers' pipeline
// loop (noise x init_noise_sigma, scale_model_input, step with the same
// generator) written out with the scheduler API on host arrays, bit for bit
// both on wasm (which samples that way) and on cpu (where sample() keeps the
// run on the device: mb_sample_solver_steps, the history in device memory);
// cpu and wasm agree, Heun calls the model twice per step, and an abort
// stops it. The torch-generator samples must match diffusers' loop
// (test/fixtures/pipelines/tiny_solver_samples.*, made by
// tools/make_solver_pipeline_fixtures.py with diffusers).
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { loadUNet } from '../src/index.js';
import type { BackendName, UNet2DModel } from '../src/index.js';
import { tensorToFloat32 } from '../src/core/model/safetensors.js';
import { readSafetensorsFile } from '../src/node/safetensors_file.js';
import { TorchGenerator } from '../src/core/rng/torch.js';
import { sample } from '../src/core/sampler.js';
import { parsePythonJson } from '../src/core/schedulers/config_json.js';
import { solverFromConfig, type SolverName, type SolverScheduler } from '../src/core/schedulers/solvers.js';
import { fixturePath, maxAbs, maxAbsDiff } from './helpers.js';

const CASES: { name: SolverName; config: Record<string, unknown>; steps: number }[] = [
  { name: 'dpm++', config: {}, steps: 8 },
  { name: 'dpm++', config: { algorithm_type: 'sde-dpmsolver++', use_karras_sigmas: true }, steps: 8 },
  { name: 'dpm++', config: { solver_order: 3, thresholding: true, sample_max_value: 1.5 }, steps: 8 },
  { name: 'unipc', config: { solver_order: 3 }, steps: 8 },
  { name: 'euler', config: {}, steps: 8 },
  { name: 'euler-a', config: {}, steps: 8 },
  { name: 'heun', config: { use_karras_sigmas: true }, steps: 5 },
];

/** The loop written out with the scheduler API, as diffusers' pipelines call it. */
async function manualLoop(unet: UNet2DModel, s: SolverScheduler, steps: number, batch: number, seed: bigint): Promise<Float32Array> {
  const shape: [number, number, number, number] = [batch, unet.config.inChannels, 16, 16];
  const g = new TorchGenerator(seed);
  s.useBackend(unet.backend);
  s.setTimesteps(steps);
  let x = g.randn(shape.reduce((a, b) => a * b));
  x = x.map((v) => v * s.initNoiseSigma);
  for (const t of s.timesteps) {
    const out = await unet.forward(s.scaleModelInput(x, t), shape, t);
    x = s.step(out, t, x, { generator: g, batchSize: batch }).prevSample;
  }
  return x;
}

test('sample() runs each solver as the pipeline loop does, the same on cpu and wasm', async () => {
  const units = await Promise.all((['cpu', 'wasm'] as BackendName[]).map((backend) => loadUNet(fixturePath('unet/tiny'), { backend })));
  try {
    for (const c of CASES) {
      const label = `${c.name} ${JSON.stringify(c.config)}`;
      const results: Float32Array[] = [];
      for (const unet of units) {
        let calls = 0;
        const r = await sample({
          unet,
          scheduler: solverFromConfig(c.name, c.config),
          numInferenceSteps: c.steps,
          batchSize: 2,
          seed: 7n,
          generator: 'torch',
          onStep: () => void calls++,
        });
        assert.equal(calls, c.name === 'heun' ? 2 * c.steps - 1 : c.steps, `${label}: model calls`);
        assert.ok(r.samples.every(Number.isFinite), `${label}: finite samples`);
        const manual = await manualLoop(unet, solverFromConfig(c.name, c.config), c.steps, 2, 7n);
        assert.deepEqual(r.samples, manual, `${label} on ${unet.backend.name}: sample() is the pipeline loop`);
        results.push(r.samples);
      }
      const diff = maxAbsDiff(results[0]!, results[1]!);
      assert.ok(diff <= 1e-4 * Math.max(1, maxAbs(results[0]!)), `${label}: cpu vs wasm differ by ${diff}`);
    }
  } finally {
    units.forEach((u) => u.dispose());
  }
});

test('philox solver sampling is reproducible; previews are x0', async () => {
  const unet = await loadUNet(fixturePath('unet/tiny'), { backend: 'cpu' });
  try {
    const run = (seed: number, on = unet) => sample({ unet: on, scheduler: solverFromConfig('euler-a', {}), numInferenceSteps: 6, batchSize: 2, seed });
    const a = await run(3);
    const b = await run(3);
    assert.deepEqual(a.samples, b.samples);
    assert.notDeepEqual((await run(4)).samples, a.samples);
    // Philox noise is the same on the device loop (cpu) and the host loop (wasm).
    const wasm = await loadUNet(fixturePath('unet/tiny'), { backend: 'wasm' });
    const w = await run(3, wasm);
    wasm.dispose();
    assert.ok(maxAbsDiff(w.samples, a.samples) <= 1e-4 * Math.max(1, maxAbs(a.samples)), 'philox: cpu vs wasm');
    let previews = 0;
    await sample({
      unet,
      scheduler: solverFromConfig('dpm++', {}),
      numInferenceSteps: 4,
      preview: true,
      onStep: (s) => void (previews += s.predOriginalSample ? 1 : 0),
    });
    assert.equal(previews, 4);
  } finally {
    unet.dispose();
  }
});

for (const backend of ['cpu', 'wasm'] as BackendName[])
test(`an abort stops a solver run within one step on ${backend}`, async () => {
  const unet = await loadUNet(fixturePath('unet/tiny'), { backend });
  const controller = new AbortController();
  let steps = 0;
  try {
    await assert.rejects(
      sample({
        unet,
        scheduler: solverFromConfig('unipc', {}),
        numInferenceSteps: 10,
        signal: controller.signal,
        onStep: ({ index }) => {
          steps++;
          if (index === 2) controller.abort();
        },
      }),
      { name: 'AbortError' },
    );
    assert.equal(steps, 3);
  } finally {
    unet.dispose();
  }
});

const META = fixturePath('pipelines/tiny_solver_samples.json');
const haveReference = existsSync(META);

test(
  "generator 'torch' reproduces diffusers' solver loops on the tiny UNet",
  { skip: haveReference ? false : 'no reference (run tools/make_solver_pipeline_fixtures.py with diffusers)' },
  async () => {
    const meta = parsePythonJson(readFileSync(META, 'utf8')) as {
      cases: { name: string; scheduler: SolverName; config: Record<string, unknown>; steps: number; seed: number; batch: number }[];
    };
    const refs = await readSafetensorsFile(fixturePath('pipelines/tiny_solver_samples.safetensors'));
    for (const backend of ['cpu', 'wasm'] as BackendName[]) {
      const unet = await loadUNet(fixturePath('unet/tiny'), { backend });
      try {
        for (const c of meta.cases) {
          const r = await sample({
            unet,
            scheduler: solverFromConfig(c.scheduler, c.config),
            numInferenceSteps: c.steps,
            batchSize: c.batch,
            seed: BigInt(c.seed),
            generator: 'torch',
          });
          const expected = tensorToFloat32(refs, c.name);
          const diff = maxAbsDiff(r.samples, expected);
          assert.ok(diff <= 1e-4 * Math.max(1, maxAbs(expected)), `${c.name} (${c.scheduler} ${JSON.stringify(c.config)}) on ${backend}: off by ${diff}`);
        }
      } finally {
        unet.dispose();
      }
    }
  },
);

test('marble sample --scheduler dpm++|unipc|euler|euler-a|heun [--karras]', () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const dir = mkdtempSync(path.join(tmpdir(), 'marble-solvers-'));
  try {
    for (const args of [['dpm++', '--karras'], ['unipc'], ['euler', '--karras'], ['euler-a'], ['heun']]) {
      const out = path.join(dir, `${args[0]}.png`);
      const child = spawnSync(process.execPath, [cli, 'sample', '--scheduler', ...args, '--steps', '2', '--batch', '2', '--backend', 'wasm', '--out', out], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      assert.equal(child.status, 0, `${args.join(' ')}: ${child.stderr}`);
      assert.match(child.stdout, new RegExp(`${args[0].replace('+', '\\+')} 2 steps`));
      assert.ok(existsSync(out));
    }
    for (const args of [['ddim', '--karras'], ['euler-a', '--karras']]) {
      const child = spawnSync(process.execPath, [cli, 'sample', '--scheduler', ...args, '--steps', '2', '--out', path.join(dir, 'x.png')], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(child.status, 1, child.stderr);
      assert.match(child.stderr, /--karras applies to --scheduler dpm\+\+, unipc, euler and heun/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
