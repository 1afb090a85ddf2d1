// Renders models/mnist-solvers.md from `marble eval --json` results of the
// fast solvers beside DDIM and DDPM (tools/eval_solvers.sh writes them):
//
//   node tools/solver_table.mjs runs/solver-eval models/mnist-eval-ddpm1000.json models/mnist-solvers-time.json > models/mnist-solvers.md
//
// Each JSON in the folder is one row; the DDPM row comes from the file given
// second (its 1000 steps are too long to rerun with every table); times per
// image from the third (tools/time_samplers.mjs: back to back in one process,
// which the eval's own timings, taken minutes apart on a shared machine, are not).
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

const [dir, ddpmFile, timeFile] = process.argv.slice(2);
const times = JSON.parse(readFileSync(timeFile, 'utf8'));
const rows = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .map((f) => ({ ...JSON.parse(readFileSync(path.join(dir, f), 'utf8')), measuredHere: true }));
if (ddpmFile) rows.push({ ...JSON.parse(readFileSync(ddpmFile, 'utf8')), measuredHere: false });
const order = { 'dpm++': 0, unipc: 1, ddim: 2, ddpm: 3 };
rows.sort((a, b) => (order[a.scheduler] ?? 9) - (order[b.scheduler] ?? 9) || a.steps - b.steps);
const f3 = (v) => v.toFixed(3);
const first = rows[0];
console.log(`Model \`${first.model}\`: ${first.samples} samples (classes cycling), seed ${first.seed}, cpu backend, the model's own scheduler config`);
console.log(`(\`models/mnist/scheduler\`: linear betas, epsilon, timestep_spacing leading, clip_sample) read by each scheduler's fromConfig, as diffusers' from_config does.`);
console.log(`Metrics as in mnist-steps.md: precision / recall (k = 3) against 1000 held-out digits, class accuracy by a 3-NN vote (${f3(first.heldOutClassAccuracy)} on held-out real digits),`);
console.log(`real-data baseline precision ${f3(first.realBaseline.precision)}, recall ${f3(first.realBaseline.recall)}. UNet calls = steps (model evaluations per image).`);
console.log(`Time: milliseconds per image, one batch of 100 per sampler run back to back (tools/time_samplers.mjs, cpu backend, 2 shared cores); DDPM 1000 is 20 x DDIM 50 (the same step cost).`);
console.log('');
console.log('| sampler | steps (UNet calls) | precision | recall | class accuracy | NN to train, mean | ms per image |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const name = r.scheduler === 'ddim' ? `ddim (eta ${r.eta ?? 0})` : r.scheduler;
  const ms = r.scheduler === 'ddpm' ? times['ddpm 1000 (20 x ddim 50)'] : times[`${r.scheduler} ${r.steps}`];
  console.log(`| ${name} | ${r.steps} | ${f3(r.precision)} | ${f3(r.recall)} | ${f3(r.classAccuracy)} | ${f3(r.nnToTrain.mean)} | ${ms === undefined ? '-' : ms.toFixed(1)} |`);
}
