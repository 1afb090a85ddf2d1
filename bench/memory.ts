// npm run bench (memory): peak memory of batch-1 DDIM sampling on the
// cifar10-32 architecture, per backend, against the speed issue's target of
// "weights + 64 MB". Each backend runs in a fresh child process (Linux:
// /proc/self/status), which reports:
//   baseline   resident memory before the model exists (Node + marble's modules)
//   loaded     after creating the model and a garbage collection
//   peak       the resident high-water mark during sampling (VmHWM, reset
//              through /proc/self/clear_refs once the model is loaded)
//   arena      the engine's activation arena for batch 1 at 32x32
// The model is created with keepWeights: false, as loadPipeline loads a
// sampling model: each unpacked weight is freed once its layer is packed.
// and the footprint = peak - baseline, which the target bounds.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { createUNet } from '../src/index.js';
import type { BackendName } from '../src/index.js';
import { nativeAvailable } from '../src/node/native.js';
import { sample } from '../src/core/sampler.js';
import { DDIMScheduler } from '../src/core/schedulers/ddim.js';
import { CIFAR10_CONFIG } from './models.js';
import { writeResult } from './results.js';

const MB = 2 ** 20;
const TARGET_OVERHEAD_MB = 64;

interface ChildReport {
  backend: BackendName;
  steps: number;
  weightsMB: number;
  arenaMB: number;
  baselineMB: number;
  loadedMB: number;
  peakMB: number;
}

/** A /proc/self/status field in MB (Linux only). */
function statusMB(field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  if (!match) throw new Error(`/proc/self/status has no ${field}`);
  return Number(match[1]) / 1024;
}

const round = (x: number) => Math.round(x * 10) / 10;

async function child(backend: BackendName, steps: number): Promise<ChildReport> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  gc();
  const baselineMB = statusMB('VmRSS');
  // What a sampling model holds (loadPipeline's default): the packed weights only,
  // each unpacked weight freed as soon as its layer is packed.
  const unet = await createUNet(CIFAR10_CONFIG, { backend, seed: 1, keepWeights: false });
  // The initial weights were made in JS (136 MB of Float32Arrays, garbage
  // now): V8 frees array buffers' memory on a background sweeper after a
  // collection, so give it a moment; otherwise the peak below would include
  // whatever part of that garbage happened to be still mapped.
  gc();
  await new Promise((resolve) => setTimeout(resolve, 250));
  gc();
  const loadedMB = statusMB('VmRSS');
  writeFileSync('/proc/self/clear_refs', '5'); // resets VmHWM to the current RSS
  await sample({ unet, scheduler: new DDIMScheduler({ clipSample: true }), numInferenceSteps: steps, batchSize: 1, seed: 0 });
  const peakMB = statusMB('VmHWM');
  const report = {
    backend,
    steps,
    weightsMB: round((unet.parameterCount * 4) / MB),
    arenaMB: round(unet.activationBytes(1, 32, 32) / MB),
    baselineMB: round(baselineMB),
    loadedMB: round(loadedMB),
    peakMB: round(peakMB),
  };
  unet.dispose();
  return report;
}

if (process.argv[2] === 'child') {
  console.log(JSON.stringify(await child(process.argv[3] as BackendName, Number(process.argv[4]))));
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.platform !== 'linux') {
    console.log('memory benchmark: needs Linux (/proc/self/status); skipped');
  } else {
    const steps = Number(process.env.BENCH_MEMORY_STEPS ?? 10);
    const backends: BackendName[] = nativeAvailable() ? ['cpu', 'wasm'] : ['wasm'];
    const rows = backends.map((backend) => {
      const out = execFileSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), 'child', backend, String(steps)], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const r = JSON.parse(out.trim().split('\n').pop()!) as ChildReport;
      const footprintMB = round(r.peakMB - r.baselineMB);
      const targetMB = round(r.weightsMB + TARGET_OVERHEAD_MB);
      // model-resident = what creating the model kept (raw f32 parameters, their packed copies, the
      // arena once planned); sampling adds peak - loaded on top
      return { ...r, modelResidentMB: round(r.loadedMB - r.baselineMB), samplingExtraMB: round(r.peakMB - r.loadedMB), footprintMB, targetMB, withinTarget: footprintMB <= targetMB };
    });
    console.log(`peak memory of batch-1 DDIM sampling (${steps} steps), cifar10-32 architecture; target: footprint <= weights + ${TARGET_OVERHEAD_MB} MB`);
    console.table(rows);
    writeResult('memory.json', { steps, targetOverheadMB: TARGET_OVERHEAD_MB, rows });
  }
}
