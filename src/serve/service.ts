// The job service behind the HTTP API: in-process (LocalJobs: the models run
// here, ./runner.ts) or distributed (RedisJobs in ./redis.ts: BullMQ queues,
// `marble worker` processes run them). The API is the same for both.
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';

import type { LoadedModel } from './models.js';
import { JobEndedError, ModelRunner, QueueFullError } from './runner.js';
import type { RunnerOptions } from './runner.js';
import type { JobEvent, JobResult, JobSpec, JobView, ModelSummary } from './spec.js';

export { JobEndedError, QueueFullError };

export interface JobOutcome {
  model: string;
  outcome: 'completed' | 'failed' | 'cancelled';
  result?: JobResult;
}

export interface JobService {
  readonly mode: 'local' | 'redis';
  models(): ModelSummary[];
  /** Queues a job; throws a QueueFullError when its model's queue is full. `ephemeral`: forget it once it ends (a synchronous request). */
  submit(spec: JobSpec, options?: { ephemeral?: boolean }): Promise<string>;
  get(id: string): Promise<JobView | null>;
  /** 'cancelled', 'finished' (too late), or null (unknown) */
  cancel(id: string, reason?: string): Promise<'cancelled' | 'finished' | null>;
  /** Listens to a job's events; returns the unsubscribe function. Call get() after subscribing to learn the state so far. */
  subscribe(id: string, listener: (event: JobEvent) => void): () => void;
  /** The job's result, or a JobEndedError. */
  wait(id: string): Promise<JobResult>;
  /** jobs waiting, per model */
  queueDepth(): Record<string, number>;
  /** Every job's end (for metrics). */
  onOutcome(listener: (o: JobOutcome) => void): void;
  /** Stops taking jobs, cancels the queued ones, lets running ones finish within `deadlineMs`, cancels the rest. */
  drain(deadlineMs: number): Promise<void>;
  close(): Promise<void>;
}

export function notFinished(view: JobView): boolean {
  return view.state === 'queued' || view.state === 'running';
}

interface Record_ {
  view: JobView;
  ephemeral: boolean;
  done: Promise<JobResult>;
  finishedAt?: number;
}

export interface LocalJobsOptions extends Omit<RunnerOptions, 'onBatch'> {
  /** how long a finished job's record (and result) is kept (ms) */
  jobTtlMs?: number;
  /** most finished records kept */
  maxJobRecords?: number;
  onBatch?: RunnerOptions['onBatch'];
}

/** Jobs run in this process, one ModelRunner per model. */
export class LocalJobs implements JobService {
  readonly mode = 'local' as const;
  private readonly runners = new Map<string, ModelRunner>();
  private readonly loaded: LoadedModel[];
  private readonly records = new Map<string, Record_>();
  private readonly events = new EventEmitter();
  private readonly outcomes = new EventEmitter();
  private readonly ttl: number;
  private readonly maxRecords: number;
  private readonly sweep: NodeJS.Timeout;

  constructor(models: LoadedModel[], options: LocalJobsOptions) {
    this.loaded = models;
    for (const m of models) this.runners.set(m.summary.name, new ModelRunner(m.summary.name, m.pipeline, options));
    this.events.setMaxListeners(0);
    this.ttl = options.jobTtlMs ?? 10 * 60_000;
    this.maxRecords = options.maxJobRecords ?? 1000;
    this.sweep = setInterval(() => this.expire(), Math.min(60_000, this.ttl)).unref();
  }

  models(): ModelSummary[] {
    return this.loaded.map((m) => m.summary);
  }

  async submit(spec: JobSpec, options: { ephemeral?: boolean } = {}): Promise<string> {
    const runner = this.runners.get(spec.model);
    if (!runner) throw new JobEndedError('failed', 'unknown_model', `model ${spec.model} is not served here`);
    const id = randomUUID();
    const view: JobView = { id, model: spec.model, state: 'queued', progress: { step: 0, total: spec.steps }, createdAt: new Date().toISOString() };
    const emit = (event: JobEvent) => {
      switch (event.type) {
        case 'started':
          view.state = 'running';
          view.batch = event.batch;
          view.worker = event.worker;
          break;
        case 'step':
          view.progress = { step: event.step, total: event.total };
          break;
        case 'completed':
          view.state = 'completed';
          view.result = event.result;
          break;
        case 'failed':
          view.state = 'failed';
          view.error = event.error;
          break;
        case 'cancelled':
          view.state = 'cancelled';
          view.error = { code: 'cancelled', message: event.reason };
          break;
      }
      this.events.emit(id, event);
    };
    const record: Record_ = { view, ephemeral: options.ephemeral === true, done: null as unknown as Promise<JobResult> };
    this.records.set(id, record);
    try {
      record.done = runner.submit(id, spec, emit);
    } catch (e) {
      this.records.delete(id);
      throw e;
    }
    record.done.then(
      (result) => this.ended(id, record, 'completed', result),
      (e: JobEndedError) => this.ended(id, record, e.outcome ?? 'failed'),
    );
    return id;
  }

  private ended(id: string, record: Record_, outcome: JobOutcome['outcome'], result?: JobResult): void {
    record.finishedAt = Date.now();
    this.outcomes.emit('outcome', { model: record.view.model, outcome, result } satisfies JobOutcome);
    // Listeners have heard the end; a synchronous request's record goes once its waiter has it.
    if (record.ephemeral) setImmediate(() => this.records.delete(id));
    else this.expire();
  }

  private expire(): void {
    const now = Date.now();
    let finished = 0;
    for (const r of this.records.values()) if (r.finishedAt !== undefined) finished++;
    for (const [id, r] of this.records) {
      if (r.finishedAt === undefined) continue;
      if (now - r.finishedAt > this.ttl || finished > this.maxRecords) {
        this.records.delete(id);
        finished--;
      }
    }
  }

  async get(id: string): Promise<JobView | null> {
    const record = this.records.get(id);
    if (!record) return null;
    const view = { ...record.view };
    if (view.state === 'queued') view.position = this.runners.get(view.model)?.positionOf(id);
    return view;
  }

  async cancel(id: string, reason = 'cancelled by the client'): Promise<'cancelled' | 'finished' | null> {
    const record = this.records.get(id);
    if (!record) return null;
    if (!notFinished(record.view)) return 'finished';
    return this.runners.get(record.view.model)!.cancel(id, reason) ? 'cancelled' : 'finished';
  }

  subscribe(id: string, listener: (event: JobEvent) => void): () => void {
    this.events.on(id, listener);
    return () => this.events.off(id, listener);
  }

  wait(id: string): Promise<JobResult> {
    const record = this.records.get(id);
    if (!record) return Promise.reject(new JobEndedError('failed', 'not_found', `job ${id} is not known`));
    return record.done;
  }

  queueDepth(): Record<string, number> {
    return Object.fromEntries([...this.runners].map(([name, r]) => [name, r.queued]));
  }

  onOutcome(listener: (o: JobOutcome) => void): void {
    this.outcomes.on('outcome', listener);
  }

  async drain(deadlineMs: number): Promise<void> {
    for (const r of this.runners.values()) r.stopAccepting('the service is shutting down');
    const deadline = Date.now() + deadlineMs;
    await Promise.all([...this.runners.values()].map((r) => r.idle(Math.max(0, deadline - Date.now()))));
    for (const r of this.runners.values()) r.cancelRunning('the service shut down before the job finished');
    await Promise.all([...this.runners.values()].map((r) => r.idle(5000)));
  }

  async close(): Promise<void> {
    clearInterval(this.sweep);
    for (const m of this.loaded) m.pipeline.unet.dispose();
  }
}
