// Classifier-free guidance in sample(): against diffusers' guided loop
// (tools/make_cfg_fixtures.py: the tiny unet/cfg fixture, whose config.json
// records its null class, and a torch generator) for DDPM, DDIM and every
// solver, on cpu (the device-resident loop: one doubled forward per step,
// the combination in the fused step kernel) and on wasm (forward + kernel
// over host arrays); guidance 1 is the unguided run bit for bit; per-sample
// seeds, preview and onStep work guided; bad scales and models without a
// null class are refused; marble serve takes guidanceScale.
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { loadUNet } from '../src/index.js';
import type { BackendName } from '../src/index.js';
import { InputError } from '../src/core/errors.js';
import { parseUNet2DConfig } from '../src/core/model/config.js';
import { kGuidanceConfigKey } from '../src/core/model/guidance.js';
import { tensorToFloat32 } from '../src/core/model/safetensors.js';
import { sample } from '../src/core/sampler.js';
import { runStepKernel } from '../src/core/schedulers/engine_step.js';
import { DDIMScheduler } from '../src/core/schedulers/ddim.js';
import { DDPMScheduler } from '../src/core/schedulers/ddpm.js';
import { solverFromConfig, type SolverName } from '../src/core/schedulers/solvers.js';
import { readSafetensorsFile } from '../src/node/safetensors_file.js';
import { decodePng } from '../src/core/image/png.js';
import { createServer } from '../src/serve/index.js';
import { toDiffusersConfig } from '../src/train/diffusers_config.js';
import { fixturePath, maxAbs, maxAbsDiff } from './helpers.js';

interface CfgCase {
  name: string;
  scheduler: 'ddpm' | 'ddim' | SolverName;
  overrides: Record<string, unknown>;
  steps: number;
  seed: number;
  guidance_scale: number;
  class_labels: number[];
  eta?: number;
}

const meta = JSON.parse(readFileSync(fixturePath('pipelines/cfg_samples.json'), 'utf8')) as {
  null_class_label: number;
  cases: CfgCase[];
  single_step: { guidance_scale: number; ddim: { steps: number; t: number }; euler: { steps: number; t: number } };
};
const references = await readSafetensorsFile(fixturePath('pipelines/cfg_samples.safetensors'));

function schedulerFor(c: Pick<CfgCase, 'scheduler' | 'overrides'>) {
  if (c.scheduler === 'ddpm') return new DDPMScheduler();
  if (c.scheduler === 'ddim') return new DDIMScheduler();
  return solverFromConfig(c.scheduler, c.overrides);
}

test('the cfg fixture records its null class where marble reads it', async () => {
  const unet = await loadUNet(fixturePath('unet/cfg'), { backend: 'cpu' });
  try {
    assert.deepEqual(unet.config.guidance, { nullClassLabel: meta.null_class_label, labelDropout: 0.1 });
    // and a saved config writes it back under the same private key
    const json = toDiffusersConfig(unet.config);
    assert.deepEqual(json[kGuidanceConfigKey], { label_dropout: 0.1, null_class_label: meta.null_class_label });
    assert.deepEqual(parseUNet2DConfig(json), unet.config);
  } finally {
    unet.dispose();
  }
});

// Guidance multiplies the model output's rounding differences from torch by
// up to |s| + |1 - s| (eps = (1 - s) eps_u + s eps_c): the pipeline
// tolerance (sampler.test.ts: 1e-4 of max(1, max |x|)) times that factor.
function guidedTolerance(expected: Float32Array, s: number): number {
  return 1e-4 * Math.max(1, maxAbs(expected)) * Math.max(1, Math.abs(s) + Math.abs(1 - s));
}

for (const backend of ['cpu', 'wasm'] as BackendName[]) {
  test(`the fused step kernels combine cond and uncond as diffusers does (${backend})`, async () => {
    const unet = await loadUNet(fixturePath('unet/cfg'), { backend });
    try {
      const { guidance_scale: s, ddim: d, euler: e } = meta.single_step;
      const cond = tensorToFloat32(references, 'step.cond');
      const uncond = tensorToFloat32(references, 'step.uncond');
      const x = tensorToFloat32(references, 'step.sample');
      const both = new Float32Array(2 * cond.length);
      both.set(cond);
      both.set(uncond, cond.length);
      const n = x.length / 2;
      const layout = { batchSize: 2, sampleSize: n, modelOutputStride: n, guidanceScale: s };

      const ddim = new DDIMScheduler();
      ddim.setTimesteps(d.steps);
      const prev = new Float32Array(x.length);
      runStepKernel(unet.backend, ddim.stepCoefficients(d.t, { eta: 0 }), layout, both, x, null, prev, new Float32Array(x.length));
      const ddimExpected = tensorToFloat32(references, 'step.ddim');
      assert.ok(maxAbsDiff(prev, ddimExpected) <= 1e-6 * maxAbs(ddimExpected), `DDIM off by ${maxAbsDiff(prev, ddimExpected)}`);

      const euler = solverFromConfig('euler', {});
      euler.useBackend(unet.backend);
      euler.setTimesteps(e.steps);
      const xs = Float32Array.from(x, (v) => v * euler.initNoiseSigma);
      const out = euler.step(both, e.t, xs, { batchSize: 2, guidanceScale: s }).prevSample;
      const eulerExpected = tensorToFloat32(references, 'step.euler');
      assert.ok(maxAbsDiff(out, eulerExpected) <= 1e-6 * maxAbs(eulerExpected), `Euler off by ${maxAbsDiff(out, eulerExpected)}`);
    } finally {
      unet.dispose();
    }
  });

  test(`guided sampling reproduces diffusers' guided loop (every scheduler) on ${backend}`, async () => {
    const unet = await loadUNet(fixturePath('unet/cfg'), { backend });
    try {
      for (const c of meta.cases) {
        const result = await sample({
          unet,
          scheduler: schedulerFor(c),
          numInferenceSteps: c.steps,
          batchSize: c.class_labels.length,
          seed: BigInt(c.seed),
          generator: 'torch',
          classLabels: c.class_labels,
          guidanceScale: c.guidance_scale,
          ...(c.eta !== undefined ? { eta: c.eta } : {}),
        });
        const expected = tensorToFloat32(references, c.name);
        const diff = maxAbsDiff(result.samples, expected);
        const tolerance = guidedTolerance(expected, c.guidance_scale);
        assert.ok(diff <= tolerance, `${c.name} (${c.scheduler} ${JSON.stringify(c.overrides)}, s ${c.guidance_scale}): off by ${diff}`);
      }
    } finally {
      unet.dispose();
    }
  });
}

test('guidance changes the samples, and guidanceScale 1 is the unguided run bit for bit', async () => {
  for (const backend of ['cpu', 'wasm'] as BackendName[]) {
    const unet = await loadUNet(fixturePath('unet/cfg'), { backend });
    try {
      for (const scheduler of ['ddim', 'dpm++'] as const) {
        const base = { unet, numInferenceSteps: 6, batchSize: 2, seed: 3, classLabels: [0, 2] };
        const plain = await sample({ ...base, scheduler: schedulerFor({ scheduler, overrides: {} }) });
        const one = await sample({ ...base, scheduler: schedulerFor({ scheduler, overrides: {} }), guidanceScale: 1 });
        assert.deepEqual(one.samples, plain.samples, `${backend} ${scheduler}`);
        const guided = await sample({ ...base, scheduler: schedulerFor({ scheduler, overrides: {} }), guidanceScale: 4 });
        assert.ok(maxAbsDiff(guided.samples, plain.samples) > 1e-2, `${backend} ${scheduler}: guidance had no effect`);
      }
    } finally {
      unet.dispose();
    }
  }
});

test('guided sampling with per-sample seeds, preview and onStep', async () => {
  const unet = await loadUNet(fixturePath('unet/cfg'), { backend: 'cpu' });
  try {
    for (const scheduler of ['ddpm', 'euler-a'] as const) {
      const make = () => schedulerFor({ scheduler, overrides: {} });
      const steps: number[] = [];
      const batch = await sample({
        unet,
        scheduler: make(),
        numInferenceSteps: 5,
        batchSize: 2,
        seeds: [11, 12],
        classLabels: [1, 3],
        guidanceScale: 3,
        preview: true,
        onStep: (info) => {
          steps.push(info.index);
          assert.equal(info.predOriginalSample?.length, 2 * 3 * 8 * 8, `${scheduler}: a preview of the batch's size`);
        },
      });
      assert.deepEqual(steps, [0, 1, 2, 3, 4], scheduler);
      // Sample 1 is the image its seed and label give at batch size 1, guided alike.
      const single = await sample({ unet, scheduler: make(), numInferenceSteps: 5, seeds: [12], classLabels: [3], guidanceScale: 3 });
      const diff = maxAbsDiff(batch.samples.subarray(3 * 8 * 8), single.samples);
      assert.ok(diff <= 1e-5 * Math.max(1, maxAbs(single.samples)), `${scheduler}: per-sample seed off by ${diff}`);
    }
  } finally {
    unet.dispose();
  }
});

test('bad guidance scales and models without a null class are refused', async () => {
  const cfg = await loadUNet(fixturePath('unet/cfg'), { backend: 'cpu' });
  const plain = await loadUNet(fixturePath('unet/class-cond'), { backend: 'cpu' });
  const uncond = await loadUNet(fixturePath('unet/tiny'), { backend: 'cpu' });
  try {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, -1, '2' as unknown as number]) {
      await assert.rejects(
        sample({ unet: cfg, scheduler: new DDIMScheduler(), numInferenceSteps: 2, classLabels: [0], guidanceScale: bad }),
        (e: unknown) => e instanceof InputError && /guidanceScale/.test(e.message),
        `guidanceScale ${String(bad)}`,
      );
    }
    for (const unet of [plain, uncond]) {
      await assert.rejects(
        sample({ unet, scheduler: new DDIMScheduler(), numInferenceSteps: 2, classLabels: unet === plain ? [0] : undefined, guidanceScale: 3 }),
        (e: unknown) => e instanceof InputError && /null class/.test(e.message),
      );
    }
    // without guidance a guidance-trained model samples as any class-conditional one
    const r = await sample({ unet: cfg, scheduler: new DDIMScheduler(), numInferenceSteps: 2, classLabels: [meta.null_class_label] });
    assert.ok(r.samples.every(Number.isFinite));
  } finally {
    cfg.dispose();
    plain.dispose();
    uncond.dispose();
  }
});

test('marble serve: guidanceScale on a guidance model gives the images sample() gives', async () => {
  const server = await createServer({ models: [{ name: 'cfg', path: fixturePath('unet/cfg') }], backend: 'cpu', threads: 1, port: 0, logger: false });
  const base = await server.listen();
  const unet = await loadUNet(fixturePath('unet/cfg'), { backend: 'cpu' });
  try {
    const models = (await (await fetch(`${base}/v1/models`)).json()) as { models: Record<string, unknown>[] };
    assert.equal(models.models[0]!['guidance'], true);
    assert.equal(models.models[0]!['classes'], 4, 'the null class is not a class to ask for');
    const body = { scheduler: 'ddim', steps: 3, batch: 2, seed: 5, classLabels: [1, 3], guidanceScale: 3, format: 'json' };
    const res = await fetch(`${base}/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(res.status, 200, await res.clone().text());
    const json = (await res.json()) as { images: { png: string }[] };
    const direct = await sample({ unet, scheduler: new DDIMScheduler(), numInferenceSteps: 3, batchSize: 2, seeds: [5, 6], classLabels: [1, 3], guidanceScale: 3 });
    const expected = direct.images();
    json.images.forEach((image, i) => {
      const png = decodePng(new Uint8Array(Buffer.from(image.png, 'base64')));
      assert.deepEqual(png.data, new Uint8Array(expected[i]!.data), `image ${i}`);
    });
    const unguided = await fetch(`${base}/v1/images`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, guidanceScale: 1 }) });
    const plain = (await unguided.json()) as { images: { png: string }[] };
    assert.notEqual(plain.images[0]!.png, json.images[0]!.png, 'guidance changed the image');
  } finally {
    unet.dispose();
    await server.close(1000);
  }
});
