// Where a training step's time goes (`marble train --profile`,
// bench/train_profile.ts): the engine times its ops by family
// (native/engine/profile.cpp); the Trainer adds the wall time of its steps
// and the caller the time it waited for data, so the table also shows what
// JavaScript spent around the engine.
import { ConfigError } from '../core/errors.js';
import type { EngineModel } from '../core/backend/backend.js';

/** The engine's op families, in its order (profile.cpp's Family). */
export const PROFILE_FAMILIES = [
  'conv forward',
  'conv data gradient',
  'conv weight gradient',
  'GroupNorm(+SiLU) forward',
  'GroupNorm(+SiLU) backward',
  'attention forward',
  'attention backward',
  'elementwise, resampling, layout',
  'embeddings',
  'noise and loss',
  'optimizer (AdamW, EMA, grad norm)',
  'weight repacking',
  'memory (zero, copy)',
  'sampler step',
] as const;

export interface ProfileRow {
  family: string;
  /** Milliseconds per step. */
  ms: number;
  /** Share of the step's wall time. */
  share: number;
  /** Op calls per step. */
  calls: number;
}

export interface TrainProfile {
  steps: number;
  /** Wall time per step (Trainer.step, from call to result), ms. */
  stepMs: number;
  /** Per op family, then 'JavaScript and engine calls' (step time the ops do not account for) and 'data loading'. */
  rows: ProfileRow[];
}

/** Reads the engine's op timers; ConfigError on a backend without them (wasm). */
export class OpProfiler {
  constructor(private readonly engine: EngineModel) {
    if (!engine.profileStart || !engine.profileRead || !engine.profileStop)
      throw new ConfigError('op profiling needs a native backend (cpu or cuda); this model runs on one without op timers');
  }

  start(): void {
    this.engine.profileStart!();
  }

  stop(): void {
    this.engine.profileStop!();
  }

  /** Seconds and calls per family since start(). */
  read(): { seconds: number[]; calls: number[] } {
    const raw = this.engine.profileRead!();
    const seconds: number[] = [];
    const calls: number[] = [];
    PROFILE_FAMILIES.forEach((_, f) => {
      seconds.push(raw ? raw[2 * f]! : 0);
      calls.push(raw ? raw[2 * f + 1]! : 0);
    });
    return { seconds, calls };
  }
}

/** The table: families (those that ran), the rest of the step, data loading. */
export function profileTable(op: { seconds: number[]; calls: number[] }, steps: number, stepSeconds: number, dataSeconds: number): TrainProfile {
  const per = (s: number) => (s * 1000) / Math.max(steps, 1);
  const wall = stepSeconds + dataSeconds;
  const rows: ProfileRow[] = [];
  let opSeconds = 0;
  PROFILE_FAMILIES.forEach((family, f) => {
    const s = op.seconds[f]!;
    opSeconds += s;
    if (op.calls[f]! > 0) rows.push({ family, ms: per(s), share: wall > 0 ? s / wall : 0, calls: op.calls[f]! / Math.max(steps, 1) });
  });
  const rest = Math.max(0, stepSeconds - opSeconds);
  rows.push({ family: 'JavaScript and engine calls', ms: per(rest), share: wall > 0 ? rest / wall : 0, calls: 0 });
  rows.push({ family: 'data loading', ms: per(dataSeconds), share: wall > 0 ? dataSeconds / wall : 0, calls: 0 });
  return { steps, stepMs: per(stepSeconds), rows };
}

/** A fixed-width text table of a profile. */
export function formatProfile(p: TrainProfile): string {
  const width = Math.max(...p.rows.map((r) => r.family.length), 10);
  const lines = [`${'per step'.padEnd(width)}  ${'ms'.padStart(8)}  ${'share'.padStart(6)}  ${'calls'.padStart(6)}`];
  for (const r of p.rows)
    lines.push(`${r.family.padEnd(width)}  ${r.ms.toFixed(1).padStart(8)}  ${(r.share * 100).toFixed(1).padStart(5)}%  ${(r.calls ? r.calls.toFixed(0) : '').padStart(6)}`);
  lines.push(`${'step (wall)'.padEnd(width)}  ${p.stepMs.toFixed(1).padStart(8)}    over ${p.steps} steps`);
  return lines.join('\n');
}
