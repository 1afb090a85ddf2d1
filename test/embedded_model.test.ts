// The embedded default model (models/mnist): loads on cpu and wasm, a
// fixed-seed sample is the same on both to 1e-4, and its pixels look like
// digits (mostly ink or background), not noise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { packageRoot } from '../src/backend/native.js';
import { EMBEDDED_MODEL } from '../src/cli/embedded_model.js';
import { loadPipeline } from '../src/pipeline.js';
import { sample } from '../src/sampler.js';
import { maxAbsDiff } from './helpers.js';

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
