// npm run bench (issue #23): small models, small batches. unet.forward on the
// embedded MNIST model (models/mnist, 1.8M parameters) and the smallest
// diffusers fixture (test/fixtures/unet/tiny), batch 1 and 8, on cpu and wasm
// with 1 and 2 threads (wasm-single: marble.wasm on the calling thread), plus
// sample() DDIM-20 of one image on marble's backends, and
// onnxruntime-node / -web on the exported graph when installed (npm run
// bench:ort) — each on a quiet machine and with one core busy: the benchmark
// starts `node -e "for(;;){}"` itself (as another process, a second request or
// a browser tab would) and kills it afterwards. Median ms of BENCH_ITERATIONS
// (30) per round, median of BENCH_ROUNDS (3) rounds. Each configuration runs
// in a process of its own (bench/small_child.ts).
//
// BENCH_BASELINE=/path/to/another/checkout (built, with this file's dist/bench
// copied in) adds that tree's rows next to this one's, run by run interleaved,
// so "before" and "after" share the same machine load.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const env = (name: string, fallback: string) => process.env[name] ?? fallback;
const iterations = env('BENCH_ITERATIONS', '30');
const models = env('BENCH_MODELS', 'mnist,tiny');
const batches = env('BENCH_BATCHES', '1,8');
const backends = env('BENCH_BACKENDS', 'cpu:1,cpu:2,wasm:1,wasm:2,wasm-single:1,ort-node:1,ort-node:2,ort-web:1,ort-web:2').split(',');
const loads = env('BENCH_LOADS', 'quiet,busy').split(',');
// Rounds: every configuration runs once per round, in turn, and a row shows
// the median of its rounds' medians, so that a burst of load from elsewhere
// hits one round of each configuration rather than all of one.
const rounds = Number(env('BENCH_ROUNDS', '3'));
const roots: [string, string][] = [['now', here]];
if (process.env.BENCH_BASELINE) roots.unshift(['before', path.resolve(process.env.BENCH_BASELINE)]);

interface Result { model: string; batch: number; what: string; ms: number; isa: string; version?: string; skipped?: string }

function child(root: string, backend: string, threads: string): Result[] {
  const r = spawnSync(process.execPath, [path.join(root, 'dist', 'bench', 'small_child.js'), backend, threads, models, batches, iterations], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  if (r.status !== 0) throw new Error(`${backend} t${threads} (${root}) failed: ${r.stderr}`);
  return r.stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Result);
}

// key: `${model} b${batch} ${label} t${threads}` -> { [root/load]: ms }
const table = new Map<string, Record<string, number | string>>();
const rowOf = (key: string) => table.get(key) ?? (table.set(key, {}), table.get(key)!);
const samples = new Map<string, number[]>(); // `${key}\t${column}` -> one median per round
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const load of loads) {
  const busy = load === 'busy' ? spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }) : null;
  try {
    if (busy) await new Promise((r) => setTimeout(r, 200)); // let it take its core
    for (let round = 0; round < rounds; round++) {
      for (const spec of backends) {
        const [backend, threads] = spec.split(':') as [string, string];
        for (const [label, root] of roots) {
          if (label !== 'now' && backend.startsWith('ort')) continue; // onnxruntime does not change with marble
          for (const r of child(root, backend, threads)) {
            if (r.skipped) continue;
            const name = backend.startsWith('ort') ? `${backend === 'ort-node' ? 'onnxruntime-node' : 'onnxruntime-web'} ${r.version}` : `marble ${backend}`;
            const key = `${r.model}\t${r.batch}\t${r.what ?? 'forward'}\t${name}\t${threads}`;
            const column = roots.length > 1 ? `${label} ${load}` : load;
            const all = samples.get(`${key}\t${column}`) ?? [];
            all.push(r.ms);
            samples.set(`${key}\t${column}`, all);
            rowOf(key)[column] = Math.round(median(all) * 100) / 100;
          }
        }
      }
    }
  } finally {
    busy?.kill();
  }
}

const rows = [...table].map(([key, cols]) => {
  const [model, batch, what, backend, threads] = key.split('\t') as [string, string, string, string, string];
  return { model, batch: Number(batch), what, backend, threads: Number(threads), ...cols };
});
// The criterion: with a core busy, the default thread count (2) vs 1 thread, same backend.
for (const row of rows as Record<string, unknown>[]) {
  if (row.threads !== 2) continue;
  const one = rows.find((o) => o.model === row.model && o.batch === row.batch && o.what === row.what && o.backend === row.backend && o.threads === 1) as Record<string, unknown> | undefined;
  for (const [label] of roots) {
    const col = roots.length > 1 ? `${label} busy` : 'busy';
    if (one && typeof row[col] === 'number' && typeof one[col] === 'number')
      row[`${roots.length > 1 ? label + ' ' : ''}busy t2/t1`] = Math.round(((row[col] as number) / (one[col] as number)) * 100) / 100;
  }
}
rows.sort((a, b) => a.model.localeCompare(b.model) || a.what.localeCompare(b.what) || a.batch - b.batch);
console.log(`forward and sample(), small models, median ms (of ${rounds} rounds' medians of ${iterations}) (${os.cpus()[0]?.model}, ${os.cpus().length} cores)`);
console.table(rows);
const outDir = path.join(here, 'bench', 'results');
mkdirSync(outDir, { recursive: true });
writeFileSync(path.join(outDir, 'small.json'), JSON.stringify({ date: new Date().toISOString(), cpu: os.cpus()[0]?.model, iterations: Number(iterations), rounds, rows }, null, 2) + '\n');
