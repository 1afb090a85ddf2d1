// npm run bench:train: a training step of marble's Trainer against PyTorch +
// diffusers' (bench/torch/train_step.py) on the same UNet2DModel config,
// batch and thread count, side by side in one run. PyTorch is not a
// dependency: it runs where `MARBLE_TORCH_PYTHON` (default `python3`) can
// import torch and diffusers, and is reported as skipped otherwise.
//
// The step, on both sides: draw noise and timesteps, add noise, forward,
// MSE, backward, AdamW (lr 1e-3, no weight decay), EMA (0.999, warm-up).
// Rounds alternate marble and PyTorch so a machine that gets busier midway
// weighs on both; each side's figure is its median step over all rounds.
// Each round starts with one untimed step on both sides (PyTorch's fresh
// process warms up; marble's first step after PyTorch's process measured
// 730-800 ms against 505-535 for the next ones, and 504-533 after a 5 s
// idle pause instead: the cost is what the other process left behind, not
// marble's own work).
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { createUNet } from '../src/index.js';
import { DDPMScheduler } from '../src/core/schedulers/ddpm.js';
import { Trainer } from '../src/train/trainer.js';
import { CIFAR10_CONFIG, MNIST_CLASS_CONFIG } from './models.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const threads = Number(process.env.BENCH_THREADS ?? 2);
const rounds = Number(process.env.BENCH_TRAIN_ROUNDS ?? 3);
const perRound = Number(process.env.BENCH_TRAIN_STEPS ?? 3);
const python = process.env.MARBLE_TORCH_PYTHON ?? 'python3';


interface Case {
  name: string;
  config: Record<string, unknown>;
  batch: number;
  size: number;
  channels: number;
}
const cases: Case[] = [
  { name: 'mnist-class 1.6M', config: MNIST_CLASS_CONFIG, batch: Number(process.env.BENCH_TRAIN_BATCH ?? 64), size: 28, channels: 1 },
  { name: 'cifar10-32', config: CIFAR10_CONFIG as Record<string, unknown>, batch: 16, size: 32, channels: 3 },
].filter((c) => (process.env.BENCH_TRAIN_CASES ?? 'mnist-class 1.6M,cifar10-32').split(',').some((n) => c.name.startsWith(n)));

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function torchRound(c: Case, iterations: number): { ms: number[]; version: string } | { skipped: string } {
  const spec = { threads, config: c.config, ema: true, batch: c.batch, size: c.size, warmup: 1, iterations };
  const run = spawnSync(python, [path.join(repo, 'bench', 'torch', 'train_step.py'), JSON.stringify(spec)], { encoding: 'utf8' });
  if (run.error) return { skipped: `${python}: ${run.error.message}` };
  if (run.status !== 0) return { skipped: (run.stderr.trim().split('\n').pop() ?? `exit ${run.status}`).slice(0, 160) };
  const out = JSON.parse(run.stdout.trim().split('\n').pop()!) as { step_ms: number[]; torch: string };
  return { ms: out.step_ms, version: out.torch };
}

const rows: Record<string, string | number>[] = [];
for (const c of cases) {
  const unet = await createUNet(c.config, { backend: 'cpu', threads, seed: 0 });
  const trainer = new Trainer({
    unet,
    noiseScheduler: new DDPMScheduler(),
    optimizer: { lr: 1e-3, weightDecay: 0 },
    ema: { decay: 0.999, useEmaWarmup: true },
  });
  const n = c.batch * c.channels * c.size * c.size;
  const batch = new Float32Array(n).map((_, i) => Math.sin(i * 0.37));
  const labels = c.config.num_class_embeds ? Array.from({ length: c.batch }, (_, i) => i % 10) : undefined;
  await trainer.step(batch, labels); // plans the arena
  const marbleMs: number[] = [];
  const torchMs: number[] = [];
  let torchInfo = '';
  for (let r = 0; r < rounds; r++) {
    if (r > 0) await trainer.step(batch, labels); // the round's warm-up step, as PyTorch's
    for (let i = 0; i < perRound; i++) {
      const t0 = performance.now();
      await trainer.step(batch, labels);
      marbleMs.push(performance.now() - t0);
    }
    if (torchInfo.startsWith('skipped')) continue;
    const t = torchRound(c, perRound);
    if ('skipped' in t) torchInfo = `skipped: ${t.skipped}`;
    else {
      torchMs.push(...t.ms);
      torchInfo = `torch ${t.version}`;
    }
  }
  unet.dispose();
  const m = median(marbleMs);
  const row: Record<string, string | number> = { model: c.name, batch: c.batch, threads, 'marble ms': Math.round(m) };
  if (torchMs.length) {
    const t = median(torchMs);
    row['pytorch ms'] = Math.round(t);
    row['marble / pytorch'] = +(m / t).toFixed(2);
  }
  row.reference = torchInfo;
  rows.push(row);
}
console.log(`training step (noise, forward, MSE, backward, AdamW, EMA), cpu, ${threads} threads, median of ${rounds}x${perRound}`);
console.table(rows);
const outDir = path.join(repo, 'bench', 'results');
mkdirSync(outDir, { recursive: true });
writeFileSync(path.join(outDir, 'train_vs_torch.json'), JSON.stringify({ date: new Date().toISOString(), threads, rows }, null, 2) + '\n');
