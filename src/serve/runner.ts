// One model's engine: a bounded queue of jobs and dynamic batching. Jobs with
// the same batch key (scheduler, steps, eta, generator, size) that wait
// together run as one engine batch of up to maxBatch images; each image has
// its own seed (sample({ seeds })), so a job's images do not depend on what
// it was batched with. One engine run at a time per model.
import { randomUUID } from 'node:crypto';
import os from 'node:os';

import { DDIMScheduler, imagesToGridPng, sample, samplesToImages } from '../index.js';
import type { Pipeline } from '../index.js';
import { batchKey } from './spec.js';
import type { BatchInfo, JobError, JobEvent, JobResult, JobSpec } from './spec.js';

export const WORKER_ID = `${process.pid}@${os.hostname()}`;

/** Why a job ended without a result. */
export class JobEndedError extends Error {
  readonly outcome: 'failed' | 'cancelled';
  readonly code: string;
  constructor(outcome: 'failed' | 'cancelled', code: string, message: string) {
    super(message);
    this.name = 'JobEndedError';
    this.outcome = outcome;
    this.code = code;
  }
}

export class QueueFullError extends Error {
  readonly retryAfterSeconds: number;
  constructor(message: string, retryAfterSeconds: number) {
    super(message);
    this.name = 'QueueFullError';
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

export interface RunnerOptions {
  /** most images in one engine batch */
  maxBatch: number;
  /** most jobs waiting (not running); a full queue refuses more */
  queueLimit: number;
  /** false: every job runs alone */
  batching: boolean;
  /** how long the first job of an idle engine waits for company (ms) */
  batchWindowMs: number;
  /** after each engine batch (metrics) */
  onBatch?: (info: { model: string; images: number; jobs: number; seconds: number; failed: boolean }) => void;
}

interface Task {
  id: string;
  spec: JobSpec;
  emit: (event: JobEvent) => void;
  resolve: (result: JobResult) => void;
  reject: (error: JobEndedError) => void;
  done: boolean;
  /** run alone (its batch did not fit in memory) */
  solo?: boolean;
  /** set while it runs */
  run?: { controller: AbortController; tasks: Task[] };
}

export function jobError(e: unknown): JobError {
  const err = e as { code?: unknown; message?: unknown };
  return { code: typeof err?.code === 'string' ? err.code : 'ERR_INTERNAL', message: String(err?.message ?? e) };
}

export class ModelRunner {
  readonly name: string;
  private readonly pipeline: Pipeline;
  private readonly options: RunnerOptions;
  private queue: Task[] = [];
  private running: Task[] = [];
  private busy = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  /** exponential average of an engine batch's seconds, for Retry-After */
  private averageSeconds = 1;

  constructor(name: string, pipeline: Pipeline, options: RunnerOptions) {
    this.name = name;
    this.pipeline = pipeline;
    this.options = options;
  }

  get queued(): number {
    return this.queue.length;
  }
  get active(): number {
    return this.running.length;
  }
  positionOf(id: string): number | undefined {
    const i = this.queue.findIndex((t) => t.id === id);
    return i < 0 ? undefined : i + 1;
  }

  /**
   * Queues a job; resolves to its result, rejects with a JobEndedError
   * (failed, cancelled). Throws a QueueFullError at once when the queue is full.
   */
  submit(id: string, spec: JobSpec, emit: (event: JobEvent) => void): Promise<JobResult> {
    if (this.closed) throw new JobEndedError('cancelled', 'shutting_down', 'the service is shutting down');
    if (this.queue.length >= this.options.queueLimit) {
      const batches = Math.ceil((this.queue.length + 1) / Math.max(1, this.options.batching ? this.options.maxBatch : 1));
      throw new QueueFullError(`model ${this.name}: the queue is full (${this.options.queueLimit} jobs waiting)`, Math.max(1, Math.ceil(batches * this.averageSeconds)));
    }
    return new Promise<JobResult>((resolve, reject) => {
      const task: Task = { id, spec, emit, resolve, reject, done: false };
      this.queue.push(task);
      emit({ type: 'queued', position: this.queue.length });
      queueMicrotask(() => this.pump());
    });
  }

  /** Cancels a queued or running job; false when it is not here (finished, unknown). */
  cancel(id: string, reason = 'cancelled', code = 'cancelled'): boolean {
    const i = this.queue.findIndex((t) => t.id === id);
    if (i >= 0) {
      const [task] = this.queue.splice(i, 1);
      this.finish(task!, new JobEndedError('cancelled', code, reason));
      this.announcePositions(i);
      return true;
    }
    const task = this.running.find((t) => t.id === id && !t.done);
    if (!task) return false;
    this.finish(task, new JobEndedError('cancelled', code, reason));
    // The engine stops at the next step once no job of the batch wants its images.
    if (task.run!.tasks.every((t) => t.done)) task.run!.controller.abort(new JobEndedError('cancelled', code, reason));
    return true;
  }

  /** Refuses new jobs and cancels the queued ones (running ones go on). */
  stopAccepting(reason: string, code = 'shutting_down'): void {
    this.closed = true;
    for (const task of this.queue.splice(0)) this.finish(task, new JobEndedError('cancelled', code, reason));
  }

  /** Cancels whatever runs. */
  cancelRunning(reason: string, code = 'cancelled'): void {
    for (const task of this.running.slice()) this.cancel(task.id, reason, code);
  }

  /** Resolves when no batch runs (or after `ms`). */
  idle(ms: number): Promise<void> {
    if (!this.busy) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private finish(task: Task, outcome: JobResult | JobEndedError): void {
    if (task.done) return;
    task.done = true;
    if (outcome instanceof JobEndedError) {
      task.emit(outcome.outcome === 'cancelled' ? { type: 'cancelled', reason: outcome.message } : { type: 'failed', error: { code: outcome.code, message: outcome.message } });
      task.reject(outcome);
    } else {
      task.emit({ type: 'completed', result: outcome });
      task.resolve(outcome);
    }
  }

  private announcePositions(from = 0): void {
    for (let i = from; i < this.queue.length; i++) this.queue[i]!.emit({ type: 'queued', position: i + 1 });
  }

  private take(): Task[] {
    const head = this.queue.shift()!;
    const group = [head];
    if (this.options.batching && !head.solo) {
      const key = batchKey(head.spec);
      let images = head.spec.seeds.length;
      for (let i = 0; i < this.queue.length && images < this.options.maxBatch; ) {
        const t = this.queue[i]!;
        if (!t.solo && batchKey(t.spec) === key && images + t.spec.seeds.length <= this.options.maxBatch) {
          group.push(t);
          images += t.spec.seeds.length;
          this.queue.splice(i, 1);
        } else i++;
      }
    }
    if (group.length > 0) this.announcePositions();
    return group;
  }

  private async pump(): Promise<void> {
    if (this.busy || this.queue.length === 0) return;
    this.busy = true;
    try {
      while (this.queue.length > 0) {
        if (this.options.batching && this.options.batchWindowMs > 0 && this.queue.length < this.options.maxBatch)
          await new Promise((r) => setTimeout(r, this.options.batchWindowMs));
        if (this.queue.length === 0) break;
        await this.runBatch(this.take());
      }
    } finally {
      this.busy = false;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async runBatch(tasks: Task[]): Promise<void> {
    const spec = tasks[0]!.spec;
    const controller = new AbortController();
    const run = { controller, tasks };
    const images = tasks.reduce((n, t) => n + t.spec.seeds.length, 0);
    const batch: BatchInfo = { id: randomUUID(), images, jobs: tasks.length };
    for (const t of tasks) {
      t.run = run;
      t.emit({ type: 'started', batch, worker: WORKER_ID });
    }
    this.running = tasks;
    const seeds = tasks.flatMap((t) => t.spec.seeds.map((s) => BigInt(s)));
    const labels = spec.classLabels ? tasks.flatMap((t) => t.spec.classLabels!) : undefined;
    const preview = tasks.some((t) => t.spec.preview);
    const per = this.pipeline.unet.config.inChannels * spec.height * spec.width;
    const started = performance.now();
    let failed = false;
    try {
      const scheduler = this.pipeline.scheduler(spec.scheduler);
      const result = await sample({
        unet: this.pipeline.unet,
        scheduler,
        numInferenceSteps: spec.steps,
        batchSize: images,
        seeds,
        classLabels: labels,
        guidanceScale: spec.guidanceScale,
        eta: scheduler instanceof DDIMScheduler ? spec.eta : undefined,
        generator: spec.generator,
        height: spec.height,
        width: spec.width,
        signal: controller.signal,
        preview,
        onStep: ({ index, total, predOriginalSample }) => {
          let offset = 0;
          for (const t of tasks) {
            const n = t.spec.seeds.length;
            if (!t.done) {
              let previewPng: string | undefined;
              if (t.spec.preview && predOriginalSample) {
                const x0 = predOriginalSample.subarray(offset * per, (offset + n) * per);
                previewPng = Buffer.from(imagesToGridPng(samplesToImages(x0, [n, per / (spec.height * spec.width), spec.height, spec.width]))).toString('base64');
              }
              t.emit({ type: 'step', step: index + 1, total, ...(previewPng ? { preview: previewPng } : {}) });
            }
            offset += n;
          }
        },
      });
      const seconds = (performance.now() - started) / 1000;
      this.averageSeconds = 0.8 * this.averageSeconds + 0.2 * seconds;
      let offset = 0;
      for (const t of tasks) {
        const n = t.spec.seeds.length;
        const shape = [n, result.shape[1], spec.height, spec.width] as const;
        if (!t.done) {
          const imgs = samplesToImages(result.samples.subarray(offset * per, (offset + n) * per), shape);
          this.finish(t, {
            images: imgs.map((img, i) => ({
              seed: t.spec.seeds[i]!,
              classLabel: t.spec.classLabels ? t.spec.classLabels[i]! : null,
              png: Buffer.from(imagesToGridPng([img], { gap: 0 })).toString('base64'),
            })),
            grid: Buffer.from(imagesToGridPng(imgs)).toString('base64'),
            width: spec.width,
            height: spec.height,
            batch,
            samplingSeconds: seconds,
            worker: WORKER_ID,
          });
        }
        offset += n;
      }
    } catch (e) {
      const live = tasks.filter((t) => !t.done);
      if ((e as { code?: string }).code === 'ERR_MARBLE_MEMORY' && live.length > 1) {
        // Together they do not fit: each runs alone, first in line.
        for (const t of live) t.solo = true;
        this.queue.unshift(...live);
        this.announcePositions();
        return;
      }
      failed = !(e instanceof JobEndedError);
      const ended = e instanceof JobEndedError ? e : new JobEndedError('failed', jobError(e).code, jobError(e).message);
      for (const t of tasks) this.finish(t, ended);
    } finally {
      this.running = [];
      this.options.onBatch?.({ model: this.name, images, jobs: tasks.length, seconds: (performance.now() - started) / 1000, failed });
    }
  }
}
