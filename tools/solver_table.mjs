// Renders models/mnist-solvers.md from `marble eval --json` results of the
// fast solvers beside DDIM and DDPM (tools/eval_solvers.sh writes them):
//
//   node tools/solver_table.mjs runs/solver-eval models/mnist-eval-ddpm1000.json > models/mnist-solvers.md
//
// Each JSON in the folder is one row; the DDPM row comes from the file given
// second (its 1000 steps are too long to rerun with every table).
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

const [dir, ddpmFile] = process.argv.slice(2);
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
console.log(`Time: sampling seconds per image (1000 images in batches of 100, 2 shared cores); rows marked * were timed in another session (load differs).`);
console.log('');
console.log('| sampler | steps | precision | recall | class accuracy | NN to train, mean | ms per image |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const name = r.scheduler === 'ddim' ? `ddim (eta ${r.eta ?? 0})` : r.scheduler;
  const ms = ((1000 * r.seconds) / r.samples).toFixed(1);
  console.log(`| ${name} | ${r.steps} | ${f3(r.precision)} | ${f3(r.recall)} | ${f3(r.classAccuracy)} | ${f3(r.nnToTrain.mean)} | ${ms}${r.measuredHere ? '' : ' *'} |`);
}
