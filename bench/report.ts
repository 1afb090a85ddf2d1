// npm run bench (last step): bench/results/README.md, the markdown tables of
// this run's results (peak, forward, DDIM sampling, onnxruntime, memory,
// training), from the JSON files the other steps wrote. The README's Speed
// section pastes its headline table from here.
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { CIFAR10_GFLOP_PER_IMAGE } from './models.js';
import { peakPercent } from './peak.js';
import type { PeakRow } from './peak.js';
import { RESULTS_DIR, readResult } from './results.js';

interface Stamped<R> {
  date: string;
  cpu?: string;
  cores?: number;
  rows: R[];
}
interface ForwardRow {
  backend: string;
  isa: string;
  threads: number;
  batch: number;
  ms: number;
  gflops: number;
  'peak %'?: number | null;
}
interface DdimRow {
  backend: string;
  isa: string;
  threads: number;
  batch: number;
  steps: number;
  seconds: number;
}

function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

const threadsWord = (n: number) => `${n} thread${n === 1 ? '' : 's'}`;

function label(row: { backend: string; isa: string; threads: number }): string {
  if (row.backend.startsWith('cpu') || row.backend.startsWith('wasm')) return `marble ${row.backend} (${row.isa}, ${threadsWord(row.threads)})`;
  return `${row.backend} (${row.isa === 'wasm' ? 'wasm, ' : ''}${threadsWord(row.threads)})`;
}

/** Rows grouped by label, one column per batch. */
function byBatch<R extends { backend: string; isa: string; threads: number; batch: number }>(rows: R[], cell: (r: R) => string): { batches: number[]; lines: (string | number)[][] } {
  const batches = [...new Set(rows.map((r) => r.batch))].sort((a, b) => a - b);
  const labels = [...new Set(rows.map(label))];
  const lines = labels.map((l) => [l, ...batches.map((b) => {
    const r = rows.find((x) => label(x) === l && x.batch === b);
    return r ? cell(r) : '';
  })]);
  return { batches, lines };
}

const sections: string[] = ['# Benchmark results', '', 'Written by `npm run bench` (bench/report.ts) from the JSON files beside this one. Machine-dependent: compare ratios within one run.', ''];

const peak = readResult<Stamped<PeakRow>>('peak.json');
const forward = readResult<Stamped<ForwardRow>>('forward.json');
const ddim = readResult<Stamped<DdimRow> & { steps: number }>('ddim50.json');

if (forward) {
  sections.push(`## Forward and DDIM sampling, google/ddpm-cifar10-32 architecture (random weights)`, '');
  sections.push(`${forward.cpu ?? 'unknown CPU'}${forward.cores ? `, ${forward.cores} cores` : ''}; forward ${forward.date.slice(0, 10)}. Forward: median ms (GFLOP/s, % of the best peak measured in the run for the same ISA and threads, table below). GFLOP/s counts the model's 11.8 GFLOP per image as a direct convolution does them; marble runs the 3x3 convs of the two finest levels (about 80% of those flops) by Winograd F(2x2, 3x3) with 2.25x fewer multiplies, so a row can exceed 100% of the measured peak (wasm's peak is the plain multiply-add rate of SIMD128).`, '');
  const percent = (r: ForwardRow) => (peak ? peakPercent(r, peak.rows) : null);
  const fw = byBatch(forward.rows, (r) => `${r.ms} ms (${Math.round(r.gflops)} GFLOP/s${percent(r) != null ? `, ${Math.round(percent(r)!)}% of peak` : ''})`);
  const lines = fw.lines.map((l) => [`${l[0]} forward`, ...l.slice(1)]);
  if (ddim) {
    // 50 forwards per sample; the fused step kernel's few flops per pixel are not counted
    const dd = byBatch(ddim.rows, (r) => `${r.seconds} s (${Math.round((CIFAR10_GFLOP_PER_IMAGE * r.batch * r.steps) / r.seconds)} GFLOP/s)`);
    for (const l of dd.lines) lines.push([`${l[0]} DDIM ${ddim.steps} steps`, ...fw.batches.map((b) => l[1 + dd.batches.indexOf(b)] ?? '')]);
  }
  sections.push(table(['', ...fw.batches.map((b) => `batch ${b}`)], lines), '');
}

if (peak) {
  sections.push('## Measured peak float32 throughput (bench/peak.ts, native/cpu/peak.cpp)', '');
  sections.push('GFLOP/s. Wall-clock: flops / elapsed time (other load lowers it); CPU-time: flops / CPU seconds received x threads (the rate while running). The peak is the higher; best of the measurements at the start and the end of the run.', '');
  sections.push(
    table(
      ['path', 'threads', 'peak', 'wall-clock', 'CPU-time'],
      peak.rows.map((r) => [`${r.backend} ${r.isa}`, r.threads, r.gflops, r.wallGflops ?? '', r.cpuTimeGflops ?? '']),
    ),
    '',
  );
}

const memory = readResult<Stamped<Record<string, number | string | boolean>> & { steps: number; targetOverheadMB: number }>('memory.json');
if (memory) {
  sections.push(`## Peak memory, batch-1 DDIM sampling (bench/memory.ts, ${memory.steps} steps)`, '');
  sections.push(`footprint = resident high-water mark during sampling - resident memory before the model existed; target: weights + ${memory.targetOverheadMB} MB.`, '');
  sections.push(
    table(
      ['backend', 'weights (f32)', 'arena', 'model resident after load', 'sampling adds', 'footprint', 'target', 'met'],
      memory.rows.map((r) => [r.backend as string, `${r.weightsMB} MB`, `${r.arenaMB} MB`, `${r.modelResidentMB} MB`, `${r.samplingExtraMB} MB`, `${r.footprintMB} MB`, `${r.targetMB} MB`, r.withinTarget ? 'yes' : 'no']),
    ),
    '',
  );
}

const sampleStep = readResult<{ steps: number; rounds: number; rows: Record<string, string | number>[] }>('sample.json');
if (sampleStep) {
  sections.push(`## DDIM step vs bare forward, batch 1 (bench/sample.ts, ${sampleStep.steps}-step runs, median of ${sampleStep.rounds})`, '');
  const keys = Object.keys(sampleStep.rows[0] ?? {});
  sections.push(table(keys, sampleStep.rows.map((r) => keys.map((k) => r[k] ?? ''))), '');
}

const train = readResult<{ batch: number; iterations: number; rows: Record<string, string | number>[] }>('train.json');
if (train) {
  sections.push(`## Training step vs forward, batch ${train.batch} (bench/train.ts, median of ${train.iterations})`, '');
  const keys = [...new Set(train.rows.flatMap((r) => Object.keys(r)))];
  sections.push(table(keys, train.rows.map((r) => keys.map((k) => r[k] ?? ''))), '');
}

// issue #23: small models, quiet and with one core busy (bench/small.ts)
const small = readResult<{ date: string; cpu?: string; iterations: number; rounds?: number; rows: Record<string, string | number>[] }>('small.json');
if (small) {
  sections.push(`## Small models: forward, quiet and with one core busy (bench/small.ts)`, '');
  sections.push(`${small.cpu ?? 'unknown CPU'}, ${small.date.slice(0, 10)}. Median ms (of ${small.rounds ?? 1} rounds' medians of ${small.iterations}); "busy": \`node -e "for(;;){}"\` running beside it; "busy t2/t1": 2 threads against 1 on the busy machine.`, '');
  const keys = [...new Set(small.rows.flatMap((r) => Object.keys(r)))];
  sections.push(table(keys, small.rows.map((r) => keys.map((k) => r[k] ?? ''))), '');
}

writeFileSync(path.join(RESULTS_DIR, 'README.md'), sections.join('\n'));
console.log(`wrote ${path.join(RESULTS_DIR, 'README.md')}`);
