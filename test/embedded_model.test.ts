// The embedded default model (models/mnist): loads on cpu and wasm, a
// fixed-seed sample is the same on both to 1e-4, and its pixels look like
// digits (mostly ink or background), not noise; and the whole sampling loop
// with it gives what diffusers gives (test/fixtures/embedded, made by
// tools/make_embedded_sample_fixture.py with diffusers and torch).
import '../src/node/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir as tmpdirPath } from 'node:os';

import { packageRoot } from '../src/node/native.js';
import { EMBEDDED_MODEL } from '../src/cli/embedded_model.js';
import { loadPipeline } from '../src/core/pipeline.js';
import { sample } from '../src/core/sampler.js';
import { tensorToFloat32 } from '../src/core/model/safetensors.js';
import { readSafetensorsFile } from '../src/node/safetensors_file.js';
import { fixturePath, maxAbs, maxAbsDiff } from './helpers.js';

const dir = path.join(packageRoot(), EMBEDDED_MODEL);
const present = existsSync(path.join(dir, 'unet', 'config.json'));

test('the embedded model samples the same digits on cpu and wasm, and they are not noise', { skip: present ? false : 'models/mnist is not trained yet' }, async () => {
  const results = [];
  for (const backend of ['cpu', 'wasm'] as const) {
    const pipe = await loadPipeline(dir, { backend });
    results.push(
      await sample({
        unet: pipe.unet,
        scheduler: pipe.scheduler('ddim'),
        numInferenceSteps: 20,
        batchSize: 4,
        seed: 7,
        classLabels: [0, 3, 7, 9],
      }),
    );
    pipe.unet.dispose();
  }
  const [cpu, wasm] = results;
  const diff = maxAbsDiff(cpu!.samples, wasm!.samples);
  assert.ok(diff <= 1e-4, `cpu and wasm samples differ by ${diff}`);
  // Digits are ink on a background: most pixels near 0 or 1 (in [0, 1]), few in between.
  const pixels = cpu!.samples.map((v) => Math.min(1, Math.max(0, v / 2 + 0.5)));
  const extreme = pixels.filter((p) => p < 0.15 || p > 0.85).length / pixels.length;
  assert.ok(extreme > 0.8, `only ${(extreme * 100).toFixed(1)}% of pixels are near 0 or 1`);
  const ink = pixels.filter((p) => p > 0.5).length / pixels.length;
  assert.ok(ink > 0.03 && ink < 0.5, `ink covers ${(ink * 100).toFixed(1)}% of the image`);
});

test('the embedded model samples what diffusers samples with it (DDIM eta 0 and 1, clipped model output, DDPM, guidance; torch generator)', { skip: present ? false : 'models/mnist is not trained yet' }, async () => {
  const meta = JSON.parse(readFileSync(fixturePath('embedded/mnist_samples.json'), 'utf8')) as {
    weights_sha256: string;
    seed: number;
    class_labels: number[];
    runs: Record<string, { scheduler: 'ddim' | 'ddpm'; steps: number; eta: number | null; use_clipped_model_output: boolean; guidance_scale?: number }>;
  };
  const weights = readFileSync(path.join(dir, 'unet', 'diffusion_pytorch_model.safetensors'));
  assert.equal(
    createHash('sha256').update(weights).digest('hex'),
    meta.weights_sha256,
    'models/mnist changed since the fixture was made: run tools/make_embedded_sample_fixture.py again',
  );
  const references = await readSafetensorsFile(fixturePath('embedded/mnist_samples.safetensors'));
  const pipe = await loadPipeline(dir, { backend: 'cpu' });
  try {
    for (const [name, run] of Object.entries(meta.runs)) {
      const result = await sample({
        unet: pipe.unet,
        scheduler: pipe.scheduler(run.scheduler),
        numInferenceSteps: run.steps,
        batchSize: meta.class_labels.length,
        seed: meta.seed,
        generator: 'torch',
        eta: run.eta ?? undefined,
        useClippedModelOutput: run.use_clipped_model_output,
        guidanceScale: run.guidance_scale ?? 1,
        classLabels: meta.class_labels,
      });
      const expected = tensorToFloat32(references, name);
      const diff = maxAbsDiff(result.samples, expected);
      assert.ok(diff <= 1e-4 * Math.max(1, maxAbs(expected)), `${name}: marble and diffusers differ by ${diff}`);
    }
  } finally {
    pipe.unet.dispose();
  }
});

test('marble sample --batch beyond memory is one line and exit 1, not a V8 heap abort', { skip: present ? false : 'models/mnist is not trained yet' }, () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  for (const batch of ['1000000000', '100000']) {
    const child = spawnSync(process.execPath, [cli, 'sample', '--batch', batch, '--steps', '1', '--backend', 'cpu', '--out', '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(child.status, 1, `--batch ${batch}: exit ${child.status} ${child.signal ?? ''}\n${child.stderr.slice(0, 500)}`);
    assert.match(child.stderr, /^marble: .*(reasonable|over the limit)/);
    assert.equal(child.stderr.trim().split('\n').length, 1, child.stderr.slice(0, 500));
  }
});

test('marble sample checks --out before sampling: a missing folder or a folder as the file is one line, exit 1', () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  for (const [out, message] of [['/nonexistent-marble-dir/x.png', /the folder \/nonexistent-marble-dir does not exist/], [tmpdirPath(), /is a folder/]] as const) {
    const t0 = Date.now();
    const child = spawnSync(process.execPath, [cli, 'sample', '--steps', '1000', '--out', out], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(child.status, 1, child.stderr);
    assert.match(child.stderr, message);
    assert.equal(child.stderr.trim().split('\n').length, 1, child.stderr);
    assert.ok(Date.now() - t0 < 20_000, 'it did not sample 1000 steps first');
  }
});
