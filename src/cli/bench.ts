// `marble bench`: native against wasm sampling on this machine (the core's
// benchmark(), src/core/bench/benchmark.ts), as a table with the ratios a
// user asks for, JSON (--json) and an SVG bar chart (--chart).
import { writeFile } from 'node:fs/promises';

import cliProgress from 'cli-progress';
import { InvalidArgumentError, Option } from 'commander';
import type { Command } from 'commander';

import { ARCHS } from '../core/bench/archs.js';
import type { ArchName } from '../core/bench/archs.js';
import { BENCH_BACKENDS, benchmark } from '../core/bench/benchmark.js';
import type { BenchBackend, BenchmarkReport } from '../core/bench/benchmark.js';
import { createUNet, loadUNet } from '../core/model/unet.js';
import { defaultThreads } from '../node/wasm.js';
import { ortForwardRows } from '../node/ort_forward.js';
import type { OrtForwardRow } from '../node/ort_forward.js';
import { benchChartSvg } from './bench_chart.js';
import { resolveSampleModel } from './embedded_model.js';

export interface BenchFlags {
  model?: string;
  arch?: ArchName;
  backends?: BenchBackend[];
  batch: number[];
  steps: number;
  scheduler: 'ddim' | 'ddpm';
  threads?: number;
  iterations: number;
  json?: string;
  chart?: string;
  onnxruntime: boolean;
}

/** The report with onnxruntime's rows on the same model, when onnxruntime-node / -web are installed. */
export type CliBenchReport = BenchmarkReport & { onnxruntime: OrtForwardRow[] };

/** onnxruntime's forward rows on the very model (and weights) marble ran, each runtime in a process of its own. */
async function onnxruntimeRows(flags: BenchFlags, model: string | undefined, report: BenchmarkReport): Promise<OrtForwardRow[]> {
  const load = { backend: 'wasm' as const, threads: 1 };
  const unet = flags.arch ? await createUNet(ARCHS[flags.arch], { ...load, seed: 1 }) : await loadUNet(model!, load);
  try {
    const size = { height: report.model.height, width: report.model.width };
    return await ortForwardRows(unet, size, report.rows.length ? [...new Set(report.rows.map((r) => r.batch))] : flags.batch, flags.threads ?? defaultThreads(), flags.iterations);
  } finally {
    unet.dispose();
  }
}

export function integerList(value: string): number[] {
  const list = value.split(',').map((v) => Number(v.trim()));
  if (list.length === 0 || !list.every((n) => Number.isInteger(n) && n >= 1 && n <= 4096))
    throw new InvalidArgumentError('a comma-separated list of integers from 1 to 4096');
  return list;
}

export function backendList(value: string): BenchBackend[] {
  const list = value.split(',').map((v) => v.trim()) as BenchBackend[];
  const unknown = list.filter((b) => !BENCH_BACKENDS.includes(b));
  if (list.length === 0 || unknown.length) throw new InvalidArgumentError(`unknown backend ${unknown.join(', ')} (${BENCH_BACKENDS.join(', ')})`);
  return list;
}

function positive(max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`an integer from 1 to ${max}`);
    return n;
  };
}

const ms = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

/** The table a terminal shows. */
export function formatReport(report: BenchmarkReport & { onnxruntime?: OrtForwardRow[] }): string {
  const lines = [
    `marble bench: ${report.model.name} (${(report.model.parameters / 1e6).toFixed(1)}M parameters, ${report.model.gflopPerImage.toFixed(2)} GFLOP per image at ${report.model.height}x${report.model.width}), ${report.scheduler} ${report.steps} steps, ${report.runtime}`,
    '',
  ];
  const header = ['backend', 'isa', 'threads', 'batch', 'forward ms median (min-max)', `sampling ${report.steps} steps ms`, 'ms / image', 'GFLOP/s', 'activations MB'];
  const body = report.rows.map((r) => [
    r.backend,
    r.identity.isa,
    String(r.identity.threads),
    String(r.batch),
    `${ms(r.forward.medianMs)} (${ms(r.forward.minMs)}-${ms(r.forward.maxMs)})`,
    ms(r.samplingMs),
    ms(r.msPerImage),
    r.gflops.toFixed(1),
    (r.activationBytes / 2 ** 20).toFixed(1),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const fmt = (row: string[]) => row.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  lines.push(fmt(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(fmt), '');
  if (report.onnxruntime?.length) {
    lines.push('onnxruntime on the same model and weights (marble export --onnx), each in a process of its own:');
    for (const o of report.onnxruntime)
      lines.push(`  ${o.backend} (${o.isa}, ${o.threads} threads) batch ${o.batch}: forward ${ms(o.ms)} ms (${ms(o.minMs)}-${ms(o.maxMs)})`);
    lines.push('');
  }
  for (const { batch, wasmOverCpu, wasm1OverCpu } of report.ratios) {
    if (wasmOverCpu !== null) lines.push(`wasm / native cpu at batch ${batch}: ${wasmOverCpu.toFixed(2)}x the time`);
    if (wasm1OverCpu !== null) lines.push(`wasm (1 thread) / native cpu at batch ${batch}: ${wasm1OverCpu.toFixed(2)}x the time`);
  }
  for (const o of report.onnxruntime ?? []) {
    const ours = report.rows.filter((r) => r.batch === o.batch && (o.isa === 'wasm' ? r.backend.startsWith('wasm') && r.identity.threads === o.threads : r.backend === 'cpu'));
    for (const r of ours)
      lines.push(`marble ${r.backend} (${r.identity.threads}t) / ${o.backend} (${o.threads}t) forward at batch ${o.batch}: ${(r.forward.medianMs / o.ms).toFixed(2)}x the time (${ms(r.forward.medianMs)} vs ${ms(o.ms)} ms)`);
  }
  for (const r of report.rows) if (r.identity.note) lines.push(`${r.backend}: ${r.identity.note}`);
  for (const s of report.skipped) lines.push(`${s.backend}: skipped (${s.reason})`);
  return lines.join('\n');
}

export function registerBenchCommand(program: Command): void {
  program
    .command('bench')
    .description('native against wasm on this machine: forward, sampling, time per image, GFLOP/s (the embedded model by default)')
    .option('--model <dir>', 'a diffusers pipeline or UNet2DModel folder (default: the embedded MNIST model)')
    .addOption(new Option('--arch <name>', 'random weights of a known architecture instead of a model').choices(Object.keys(ARCHS)))
    .option('--backends <list>', `comma-separated, from ${BENCH_BACKENDS.join(', ')} (default: every one present)`, backendList)
    .option('--batch <list>', 'batch sizes', integerList, [1, 8])
    .option('--steps <n>', 'steps of the sampling run', positive(1000), 20)
    .addOption(new Option('--scheduler <name>', 'sampler of the sampling run').choices(['ddim', 'ddpm']).default('ddim'))
    .option('--threads <n>', 'threads of the cpu and wasm backends (default: the machine\'s cores)', positive(256))
    .option('--iterations <n>', 'timed forwards per backend and batch, after a warm-up', positive(10000), 10)
    .option('--json <file>', 'also write the report as JSON')
    .option('--chart <file.svg>', 'also write an SVG bar chart of the time per image')
    .option('--no-onnxruntime', 'skip the onnxruntime rows (run when onnxruntime-node / onnxruntime-web are installed)')
    .action(async (flags: BenchFlags) => {
      const bar = process.stderr.isTTY ? new cliProgress.SingleBar({ format: 'bench [{bar}] {value}/{total} {task}', hideCursor: true }, cliProgress.Presets.shades_classic) : null;
      let started = false;
      const model = flags.arch ? undefined : resolveSampleModel(flags.model);
      const measured = await benchmark({
        ...(flags.arch ? { arch: flags.arch } : { model }),
        backends: flags.backends,
        batches: flags.batch,
        steps: flags.steps,
        scheduler: flags.scheduler,
        threads: flags.threads,
        iterations: flags.iterations,
        onProgress: ({ task, done, total }) => {
          if (!bar) return;
          if (!started) bar.start(total, done, { task });
          started = true;
          bar.update(done, { task });
        },
      });
      bar?.stop();
      const report: CliBenchReport = { ...measured, onnxruntime: flags.onnxruntime ? await onnxruntimeRows(flags, model, measured) : [] };
      console.log(formatReport(report));
      if (flags.onnxruntime && report.onnxruntime.length === 0)
        console.log('onnxruntime-node / onnxruntime-web are not installed: no onnxruntime rows (npm install onnxruntime-node onnxruntime-web adds them)');
      if (flags.json) await writeFile(flags.json, `${JSON.stringify(report, null, 2)}\n`);
      if (flags.chart) await writeFile(flags.chart, benchChartSvg(report));
    });
}
